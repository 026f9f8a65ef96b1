"""Read-only queries behind the artifacts and `ledger status`.

Every query takes the session of one read transaction (`snapshot`), so that everything read
for one export or one status comes from the same committed state of the ledger, and never
blocks a worker (SQLite WAL readers see the last committed state while a writer works).
Results stream in `row_id` order, never whole in memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Select, String, case, func, select, type_coerce
from sqlalchemy.orm import Session

from ledger.database import Ledger
from ledger.models import Row, StepRecord
from ledger.records import (
    TERMINAL_ROW_STATUSES,
    RowStatus,
    StepName,
    StepStatus,
    entity_of_step,
    iso,
)

STREAM_CHUNK = 2000
# A success row's steps in results.csv: those that ran (`skipped` ones did nothing).
RESULT_STEP_STATUSES = (StepStatus.CREATED, StepStatus.UPDATED, StepStatus.UNCHANGED)
_STEP_ORDER = case({name: index for index, name in enumerate(StepName)}, value=StepRecord.step)


@contextmanager
def snapshot(ledger: Ledger) -> Iterator[Session]:
    """One read transaction that sees a single committed state for all its queries.

    SQLite holds its read snapshot from the first read to the end of the transaction.
    PostgreSQL's default (READ COMMITTED) takes a new snapshot per statement, so the
    transaction asks for REPEATABLE READ, which is still read-only and never blocks writers.
    """
    with ledger.read() as session:
        if not ledger.is_sqlite:
            session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        yield session


def _chunks(session: Session, query: Select[*tuple[Any, ...]]) -> Iterator[Sequence[Any]]:
    """Lines in chunks, through Core: no ORM row processing for a hundred thousand lines."""
    result = session.connection().execute(query.execution_options(yield_per=STREAM_CHUNK))
    return result.partitions()  # a fetch per chunk, not per line


def _stream(session: Session, query: Select[*tuple[Any, ...]]) -> Iterator[Sequence[Any]]:
    for chunk in _chunks(session, query):
        yield from chunk


def result_lines(
    session: Session, run_id: int, row_ids: set[int] | None = None
) -> Iterator[tuple[object, ...]]:
    """One line per recorded step of each success row (SPEC results.csv); the row_id of each
    is added to `row_ids` when given (the rows the file holds)."""
    query = (
        select(
            # As the driver hands it over: the text is made once per time written (one per
            # transaction, shared by the many steps committed in it), not once per line.
            type_coerce(StepRecord.updated_at, String),
            Row.batch_id,
            Row.row_id,
            StepRecord.entity_type,
            StepRecord.entity_key,
            StepRecord.step,
            StepRecord.status,
            StepRecord.http_status,
            StepRecord.message,
            StepRecord.remote_id,
        )
        .join(Row, Row.id == StepRecord.row_pk)
        .where(
            Row.run_id == run_id,
            Row.status == RowStatus.SUCCESS,
            StepRecord.status.in_(RESULT_STEP_STATUSES),
        )
        .order_by(Row.row_id, _STEP_ORDER)
    )
    # Chunk by chunk, without a generator per layer: this file has a line per step of every
    # success row, the most lines of any artifact.
    texts: dict[object, str] = {}
    for chunk in _chunks(session, query):
        if row_ids is not None:
            row_ids.update([line[2] for line in chunk])
        for line in chunk:
            written = line[0]
            text = texts.get(written)
            if text is None:
                text = texts[written] = iso(_stored_datetime(written))
            yield (text, *line[1:])


def _stored_datetime(value: object) -> datetime:
    """A datetime column as the driver hands it over untyped: PostgreSQL's driver gives a
    datetime, SQLite the text it stores (`YYYY-MM-DD HH:MM:SS.ffffff`, UTC)."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        return datetime.fromisoformat(value)
    raise TypeError(f"a stored time of type {type(value).__name__}")


def pending_lines(session: Session, run_id: int) -> Iterator[tuple[object, ...]]:
    """One line per pending row, for the step that stopped it."""
    query = (
        select(
            Row.finished_at,
            Row.updated_at,
            Row.batch_id,
            Row.row_id,
            StepRecord.entity_type,
            StepRecord.entity_key,
            Row.reason_step,
            Row.reason_code,
            Row.reason_message,
            Row.http_status,
            Row.raw_json,
            Row.email,
            Row.location_name,
        )
        .outerjoin(
            StepRecord,
            (StepRecord.row_pk == Row.id) & (StepRecord.step == Row.reason_step),
        )
        .where(Row.run_id == run_id, Row.status == RowStatus.PENDING)
        .order_by(Row.row_id)
    )
    for line in _stream(session, query):
        (finished, updated, batch_id, row_id, entity_type, entity_key, step, code) = line[:8]
        message, http_status, raw, email, location = line[8:]
        if entity_type is None:
            entity_type, entity_key = entity_of_step(step, email or "", location or "")
        yield (
            iso(finished or updated),
            batch_id,
            row_id,
            entity_type,
            entity_key,
            step,
            code,
            message,
            http_status,
            raw,
        )


def rejected_lines(session: Session, run_id: int) -> Iterator[tuple[object, ...]]:
    query = (
        select(
            Row.created_at,
            Row.row_id,
            Row.reason_code,
            Row.reason_message,
            Row.reason_field,
            Row.raw_json,
        )
        .where(Row.run_id == run_id, Row.status == RowStatus.REJECTED)
        .order_by(Row.row_id)
    )
    for line in _stream(session, query):
        yield (iso(line[0]), *line[1:])


def retry_lines(
    session: Session, run_id: int, headers: Sequence[str]
) -> Iterator[tuple[object, ...]]:
    """Pending and rejected rows in the input's own columns, plus their reason code."""
    query = (
        select(Row.raw_json, Row.reason_code)
        .where(Row.run_id == run_id, Row.status.in_((RowStatus.PENDING, RowStatus.REJECTED)))
        .order_by(Row.row_id)
    )
    for raw_json, code in _stream(session, query):
        raw = json.loads(raw_json)
        yield (*(raw.get(header, "") for header in headers), code)


def checkpoint_position_in(session: Session, run_id: int) -> tuple[int, int]:
    """(last_completed_batch_id, last_completed_row_id) as SPEC section 5 defines them."""
    first_open = session.scalar(
        select(func.min(Row.batch_id)).where(
            Row.run_id == run_id,
            Row.batch_id.is_not(None),
            Row.status.not_in(TERMINAL_ROW_STATUSES),
        )
    )
    if first_open is None:
        last = session.scalar(select(func.max(Row.batch_id)).where(Row.run_id == run_id))
    else:
        last = first_open - 1
    if not last:
        return 0, 0
    row_id = session.scalar(
        select(func.max(Row.row_id)).where(Row.run_id == run_id, Row.batch_id == last)
    )
    return int(last), int(row_id or 0)


def checkpoint_position(ledger: Ledger, run_id: int) -> tuple[int, int]:
    """`checkpoint_position_in`, in a read transaction of its own."""
    with snapshot(ledger) as session:
        return checkpoint_position_in(session, run_id)


def outcome_counts(session: Session, run_id: int) -> dict[RowStatus, int]:
    """Rows of the run per terminal outcome (0 where none)."""
    counts = dict.fromkeys(TERMINAL_ROW_STATUSES, 0)
    query = (
        select(Row.status, func.count())
        .where(Row.run_id == run_id, Row.status.in_(tuple(counts)))
        .group_by(Row.status)
    )
    for status, count in session.execute(query):
        counts[RowStatus(status)] = int(count)
    return counts
