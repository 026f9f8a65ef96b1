"""Plans: the rows a plan looks at (read, never claimed), and the plan it records.

A plan reads what `work` would claim (ready rows, and claimed rows whose lease expired) batch
by batch without claiming them, and the run's locations as the ledger knows them. It records
its own result only: one `plans` record per run (a new plan replaces the last, its lines
cascading), its lines written batch by batch, and its outcome and summary once it went
through every row.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import datetime

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from ledger.database import Ledger
from ledger.error_handling import InvariantError
from ledger.models import Base, PlanLine, Row, RunPlan, SharedEntity, StepRecord
from ledger.plan_diff import PlannedStep, PlanOutcome
from ledger.records import (
    ClaimedRow,
    EntityState,
    EntityType,
    RowStatus,
    StepName,
    StepState,
    StepStatus,
    as_utc,
    utcnow,
)
from ledger.row_rules import UserRow
from ledger.state_store.entities import entity_state
from ledger.state_store.runs import INSERT_CHUNK

# Batches of the run read per query: a bound on memory, whatever BATCH_SIZE is.
MAX_ROWS_PER_READ = 10_000
LINES_INSERT = insert(Base.metadata.tables["plan_lines"])


def _workable(run_id: int, now: datetime) -> ColumnElement[bool]:
    """What `work` would claim: ready rows, and claimed rows whose lease expired."""
    return and_(
        Row.run_id == run_id,
        or_(
            Row.status == RowStatus.READY,
            and_(Row.status == RowStatus.CLAIMED, Row.lease_expires_at < now),
        ),
    )


def count_workable_rows(ledger: Ledger, run_id: int) -> int:
    with ledger.read() as session:
        found = session.scalar(
            select(func.count()).select_from(Row).where(_workable(run_id, utcnow()))
        )
        return int(found or 0)


def workable_locations(ledger: Ledger, run_id: int) -> dict[str, int]:
    """Each location the workable rows name, with the first of them (in `work`'s order)."""
    with ledger.read() as session:
        found = session.execute(
            select(Row.location_name, func.min(Row.row_id))
            .where(_workable(run_id, utcnow()), Row.location_name.is_not(None))
            .group_by(Row.location_name)
            .order_by(func.min(Row.row_id))
        ).all()
        return {str(name): int(first) for name, first in found}


def workable_batches(ledger: Ledger, run_id: int) -> Iterator[list[ClaimedRow]]:
    """The rows `work` would claim, one batch (by batch_id) at a time, in row order, as rows
    that no claim holds (an empty claim token): what their earlier attempts did included."""
    after = 0
    while True:
        with ledger.read() as session:
            now = utcnow()
            batch_ids = session.scalars(
                select(Row.batch_id)
                .where(_workable(run_id, now), Row.batch_id > after)
                .group_by(Row.batch_id)
                .order_by(Row.batch_id)
                .limit(1)
            ).all()
            if not batch_ids or batch_ids[0] is None:
                return
            batch_id = batch_ids[0]
            rows = _rows_of_batch(session, run_id, batch_id, now)
        after = batch_id
        if rows:
            yield rows


def _rows_of_batch(session: Session, run_id: int, batch_id: int, now: datetime) -> list[ClaimedRow]:
    found = session.execute(
        select(Row.id, Row.row_id, Row.normalized_json)
        .where(_workable(run_id, now), Row.batch_id == batch_id)
        .order_by(Row.row_id)
        .limit(MAX_ROWS_PER_READ)
    ).all()
    pks = [pk for pk, _, _ in found]
    steps: dict[int, dict[StepName, StepState]] = {pk: {} for pk in pks}
    for record in session.scalars(select(StepRecord).where(StepRecord.row_pk.in_(pks))):
        status = StepStatus(record.status)
        started_at = as_utc(record.updated_at) if status == StepStatus.STARTED else None
        steps[record.row_pk][StepName(record.step)] = StepState(
            status, record.remote_id, record.attempts, started_at
        )
    rows = []
    for pk, row_id, normalized in found:
        if normalized is None:
            raise InvariantError(f"row {row_id} is ready but was never accepted")
        rows.append(
            ClaimedRow(
                pk=pk,
                run_id=run_id,
                row_id=row_id,
                batch_id=batch_id,
                claim_token="",
                user=UserRow.model_validate_json(normalized),
                steps=steps[pk],
            )
        )
    return rows


def run_locations(ledger: Ledger, run_id: int) -> dict[str, EntityState]:
    """The run's locations as the ledger knows them (what the file asks, what was done)."""
    with ledger.read() as session:
        records = session.scalars(
            select(SharedEntity).where(
                SharedEntity.run_id == run_id, SharedEntity.entity_type == EntityType.LOCATION
            )
        ).all()
        return {record.entity_key: entity_state(record, None) for record in records}


def begin_plan(ledger: Ledger, run_id: int) -> int:
    """A new, `incomplete` plan of the run in place of its last one; its id."""
    now = utcnow()
    with ledger.write() as session:
        session.execute(delete(RunPlan).where(RunPlan.run_id == run_id))
        plan = RunPlan(run_id=run_id, outcome=PlanOutcome.INCOMPLETE, made_at=now)
        session.add(plan)
        session.flush()
        return plan.id


def record_plan_lines(ledger: Ledger, plan_id: int, steps: Sequence[PlannedStep]) -> int:
    """Add the lines of these planned steps to the plan (one transaction); how many."""
    lines = [
        {
            "plan_id": plan_id,
            "row_pk": planned.row_pk,
            "step": planned.step,
            "action": planned.action,
            "field": field,
            "before": before,
            "after": after,
            "reason_code": planned.reason,
            "message": planned.message,
        }
        for planned in steps
        for field, before, after in planned.lines()
    ]
    with ledger.write_connection() as connection:
        for start in range(0, len(lines), INSERT_CHUNK):
            connection.execute(LINES_INSERT, lines[start : start + INSERT_CHUNK])
    return len(lines)


def finish_plan(
    ledger: Ledger, plan_id: int, outcome: PlanOutcome, summary: dict[str, object]
) -> None:
    """The plan went through every row: its outcome and summary."""
    if outcome == PlanOutcome.INCOMPLETE:
        raise InvariantError("a plan cannot finish incomplete")
    with ledger.write() as session:
        result = session.execute(
            update(RunPlan)
            .where(RunPlan.id == plan_id)
            .values(
                outcome=outcome,
                finished_at=utcnow(),
                summary_json=json.dumps(summary, sort_keys=True, ensure_ascii=False),
            )
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise InvariantError(f"plan {plan_id} vanished before it finished")


def plan_lines(session: Session, run_id: int) -> Iterator[tuple[object, ...]]:
    """The lines of the run's plan in the order of `PLAN_COLUMNS`: by row, then as planned."""
    query = (
        select(
            Row.row_id,
            PlanLine.step,
            PlanLine.action,
            PlanLine.field,
            PlanLine.before,
            PlanLine.after,
            PlanLine.reason_code,
            PlanLine.message,
        )
        .join(RunPlan, RunPlan.id == PlanLine.plan_id)
        .join(Row, Row.id == PlanLine.row_pk)
        .where(RunPlan.run_id == run_id)
        .order_by(Row.row_id, PlanLine.id)
        .execution_options(yield_per=INSERT_CHUNK)
    )
    for line in session.execute(query):
        yield tuple(line)
