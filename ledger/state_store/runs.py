"""Runs: finding them, and writing an ingested file as one run (`begin_run`)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from ledger.data_pipeline import ParsedRow
from ledger.database import Ledger
from ledger.error_handling import InvariantError, UsageError
from ledger.models import Base, Row, Run, SharedEntity
from ledger.records import (
    TERMINAL_ROW_STATUSES,
    EntityStatus,
    EntityType,
    RowStatus,
    RunInfo,
    as_utc,
    utcnow,
)
from ledger.row_rules import LocationSpec
from ledger.state_store.events import append_events, event

INSERT_CHUNK = 1000
# Core, not ORM, for the bulk insert of an ingest: a third of the time for 21,000 rows.
ROWS_INSERT = insert(Base.metadata.tables["rows"])


def run_info(run: Run) -> RunInfo:
    return RunInfo(
        id=run.id,
        input_hash=run.input_hash,
        file_name=run.file_name,
        pipeline_version=run.pipeline_version,
        started_at=as_utc(run.started_at),
        total_rows=run.total_rows,
        accepted_rows=run.accepted_rows,
        rejected_rows=run.rejected_rows,
        batch_size=run.batch_size,
        headers=json.loads(run.headers_json),
    )


def find_run(ledger: Ledger, run_id: int | None = None) -> RunInfo:
    """The run `run_id`, or the latest run. Raises UsageError when there is none."""
    with ledger.read() as session:
        query = select(Run)
        query = query.where(Run.id == run_id) if run_id else query.order_by(Run.id.desc())
        run = session.scalars(query.limit(1)).first()
        if run is None:
            what = f"no run {run_id}" if run_id else "no run yet"
            raise UsageError(f"{what} in the ledger: run `ledger ingest FILE.csv` first")
        return run_info(run)


def find_run_by_hash(ledger: Ledger, input_hash: str) -> RunInfo | None:
    with ledger.read() as session:
        run = session.scalars(select(Run).where(Run.input_hash == input_hash)).first()
        return None if run is None else run_info(run)


class RunWriter:
    """The run `begin_run` is writing: `add` each parsed row, then `finish` once."""

    def __init__(self, session: Session, run: Run, now: datetime) -> None:
        self._session = session
        self._run = run
        self._now = now
        self._chunk: list[dict[str, Any]] = []
        self._accepted = 0
        self._rejected = 0
        self.finished: RunInfo | None = None

    def add(self, parsed: ParsedRow) -> None:
        """Add one data row: accepted ones get their batch (BATCH_SIZE at ingest) and `ready`."""
        if self.finished is not None:
            raise InvariantError(f"row {parsed.row_id} added to a finished run")
        now = self._now
        values: dict[str, Any] = {
            "run_id": self._run.id,
            "row_id": parsed.row_id,
            "raw_json": parsed.raw_minified(),
            "attempts": 0,
            "created_at": now,
            "updated_at": now,
            "http_status": None,
            "reason_step": None,
        }
        if parsed.user is not None:
            values |= {
                "batch_id": self._accepted // self._run.batch_size + 1,
                "normalized_json": parsed.user.model_dump_json(exclude_none=True),
                "email": parsed.user.email,
                "location_name": parsed.user.location_name,
                "status": RowStatus.READY,
                "reason_code": None,
                "reason_message": None,
                "reason_field": None,
                "finished_at": None,
            }
            self._accepted += 1
        else:
            rejection = parsed.rejection
            if rejection is None:
                raise InvariantError(f"row {parsed.row_id} is neither accepted nor rejected")
            values |= {
                "batch_id": None,
                "normalized_json": None,
                "email": None,
                "location_name": None,
                "status": RowStatus.REJECTED,
                "reason_code": str(rejection.reason),
                "reason_message": rejection.message,
                "reason_field": rejection.field,
                "finished_at": now,
            }
            self._rejected += 1
        self._chunk.append(values)
        if len(self._chunk) >= INSERT_CHUNK:
            self._flush_rows()

    def finish(self, *, locations: Sequence[LocationSpec]) -> RunInfo:
        """Complete the run with the locations its rows agreed on (known only once all were
        read), and give it back as stored."""
        if self.finished is not None:
            raise InvariantError(f"run {self._run.id} finished twice")
        self._flush_rows()
        run, now = self._run, self._now
        run.total_rows = self._accepted + self._rejected
        run.accepted_rows = self._accepted
        run.rejected_rows = self._rejected
        if locations:
            self._session.execute(
                insert(SharedEntity),
                [
                    {
                        "run_id": run.id,
                        "entity_type": EntityType.LOCATION,
                        "entity_key": spec.name,
                        "status": EntityStatus.NEW,
                        "calling_enabled": False,
                        "desired_json": spec.model_dump_json(),
                        "updated_at": now,
                    }
                    for spec in locations
                ],
            )
        detail = {"accepted": self._accepted, "rejected": self._rejected}
        append_events(self._session, [event(run.id, "ingested", now, detail=detail)])
        self._session.flush()
        self.finished = run_info(run)
        return self.finished

    def _flush_rows(self) -> None:
        if self._chunk:
            self._session.connection().execute(ROWS_INSERT, self._chunk)
            self._chunk = []


@contextmanager
def begin_run(
    ledger: Ledger,
    *,
    input_hash: str,
    file_name: str,
    pipeline_version: str,
    batch_size: int,
    headers: list[str],
) -> Iterator[RunWriter]:
    """Write a whole ingested file as one run, in one transaction: all of it or nothing.

        with begin_run(ledger, ...) as writer:
            for parsed in rows:
                writer.add(parsed)      # streamed: inserted in chunks as they come
            run = writer.finish(locations=specs)

    An exception in the block, or leaving it without `finish`, stores nothing.
    """
    now = utcnow()
    with ledger.write() as session:
        run = Run(
            input_hash=input_hash,
            file_name=file_name,
            pipeline_version=pipeline_version,
            started_at=now,
            total_rows=0,
            accepted_rows=0,
            rejected_rows=0,
            batch_size=batch_size,
            headers_json=json.dumps(headers, ensure_ascii=False),
        )
        session.add(run)
        session.flush()
        writer = RunWriter(session, run, now)
        yield writer
        if writer.finished is None:
            raise InvariantError("a run was written without finish(): nothing was stored")


def rejection_counts(ledger: Ledger, run_id: int) -> dict[str, int]:
    with ledger.read() as session:
        rows = session.execute(
            select(Row.reason_code, func.count())
            .where(Row.run_id == run_id, Row.status == RowStatus.REJECTED)
            .group_by(Row.reason_code)
            .order_by(func.count().desc(), Row.reason_code)
        ).all()
        return {str(code): int(count) for code, count in rows}


def run_is_finished(ledger: Ledger, run_id: int) -> bool:
    with ledger.read() as session:
        open_rows = session.scalar(
            select(func.count())
            .select_from(Row)
            .where(Row.run_id == run_id, Row.status.not_in(TERMINAL_ROW_STATUSES))
        )
        return not open_rows
