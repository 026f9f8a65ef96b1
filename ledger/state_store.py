"""Every ledger state transition: runs, ingest, claims, step outcomes, shared entities.

Each function is one short transaction and never calls the network. Row and entity writes made
on behalf of a claim are fenced by its token: once a lease has expired and another worker has
claimed the row, the old worker's writes match nothing and raise `ClaimLostError`. Every state
change appends an event in the same transaction. ORM objects never leave this module: callers
get the frozen models below. Reports over the ledger (exports, status) live in `reports`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    DateTime,
    Integer,
    String,
    Text,
    and_,
    bindparam,
    case,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from ledger.data_pipeline import ParsedRow
from ledger.database import Ledger
from ledger.error_handling import ClaimLostError, InvariantError, ReasonCode, UsageError
from ledger.models import (
    Base,
    Event,
    Row,
    Run,
    SharedEntity,
    StepRecord,
    WorkerStats,
)
from ledger.records import TERMINAL_ROW_STATUSES, StepName
from ledger.row_rules import LocationSpec, UserRow

SUCCESS_STEP_STATUSES = frozenset({"created", "updated", "unchanged", "skipped"})
INSERT_CHUNK = 1000
# Core, not ORM, for the bulk insert of an ingest: a third of the time for 21,000 rows.
ROWS_INSERT = insert(Base.metadata.tables["rows"])


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite hands datetimes back naive; they were written as UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def entity_of_step(step: str | None, email: str, location_name: str) -> tuple[str, str]:
    """The entity (type, key) a failed step names where it recorded none of its own."""
    if step in ("location", "calling"):
        return "location", location_name
    return step or "user", email


def iso(value: datetime) -> str:
    """ISO 8601 UTC with a `Z`: the one format of every timestamp `ledger` writes out."""
    return as_utc(value).astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class RunInfo:
    id: int
    input_hash: str
    file_name: str
    pipeline_version: str
    started_at: datetime
    total_rows: int
    accepted_rows: int
    rejected_rows: int
    batch_size: int
    headers: list[str]


@dataclass(frozen=True)
class StepState:
    status: str
    remote_id: str | None
    attempts: int


@dataclass(frozen=True)
class ClaimedRow:
    """A row a worker holds: what it asks for and what earlier attempts already did."""

    pk: int
    run_id: int
    row_id: int
    batch_id: int
    claim_token: str
    user: UserRow
    steps: dict[str, StepState]


@dataclass(frozen=True)
class StepOutcome:
    step: str
    status: str
    entity_type: str
    entity_key: str
    http_status: int | None = None
    remote_id: str | None = None
    message: str | None = None
    tracking_id: str | None = None


@dataclass(frozen=True)
class EntityState:
    """A shared entity as a claim attempt found it. `token` is set when the caller holds it."""

    id: int
    status: str
    remote_id: str | None
    calling_enabled: bool
    desired: dict[str, Any]
    outcome: dict[str, Any]
    reason_code: str | None
    reason_message: str | None
    http_status: int | None
    token: str | None


def _run_info(run: Run) -> RunInfo:
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


def _event(
    session: Session,
    run_id: int,
    kind: str,
    *,
    row_pk: int | None = None,
    step: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    session.add(
        Event(
            run_id=run_id,
            row_pk=row_pk,
            kind=kind,
            step=step,
            detail_json=json.dumps(detail, sort_keys=True) if detail else None,
            at=utcnow(),
        )
    )


# --- runs and ingest -------------------------------------------------------------------------


def find_run(ledger: Ledger, run_id: int | None = None) -> RunInfo:
    """The run `run_id`, or the latest run. Raises UsageError when there is none."""
    with ledger.read() as session:
        query = select(Run)
        query = query.where(Run.id == run_id) if run_id else query.order_by(Run.id.desc())
        run = session.scalars(query.limit(1)).first()
        if run is None:
            what = f"no run {run_id}" if run_id else "no run yet"
            raise UsageError(f"{what} in the ledger: run `ledger ingest FILE.csv` first")
        return _run_info(run)


def find_run_by_hash(ledger: Ledger, input_hash: str) -> RunInfo | None:
    with ledger.read() as session:
        run = session.scalars(select(Run).where(Run.input_hash == input_hash)).first()
        return None if run is None else _run_info(run)


def store_run(
    ledger: Ledger,
    *,
    input_hash: str,
    file_name: str,
    pipeline_version: str,
    batch_size: int,
    headers: list[str],
    rows: Iterable[ParsedRow],
    locations: Any,
) -> RunInfo:
    """Write a whole ingested file as one run, in one transaction: all of it or nothing.

    `rows` is consumed as it streams; `locations` is called after it to get each location's
    agreed values (they are only known once every row was read).
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
        accepted = rejected = 0
        chunk: list[dict[str, Any]] = []
        for parsed in rows:
            values: dict[str, Any] = {
                "run_id": run.id,
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
                    "batch_id": accepted // batch_size + 1,
                    "normalized_json": parsed.user.model_dump_json(exclude_none=True),
                    "email": parsed.user.email,
                    "location_name": parsed.user.location_name,
                    "status": "ready",
                    "reason_code": None,
                    "reason_message": None,
                    "reason_field": None,
                    "finished_at": None,
                }
                accepted += 1
            else:
                rejection = parsed.rejection
                if rejection is None:
                    raise InvariantError(f"row {parsed.row_id} is neither accepted nor rejected")
                values |= {
                    "batch_id": None,
                    "normalized_json": None,
                    "email": None,
                    "location_name": None,
                    "status": "rejected",
                    "reason_code": str(rejection.reason),
                    "reason_message": rejection.message,
                    "reason_field": rejection.field,
                    "finished_at": now,
                }
                rejected += 1
            chunk.append(values)
            if len(chunk) >= INSERT_CHUNK:
                session.connection().execute(ROWS_INSERT, chunk)
                chunk = []
        if chunk:
            session.connection().execute(ROWS_INSERT, chunk)
        run.total_rows = accepted + rejected
        run.accepted_rows = accepted
        run.rejected_rows = rejected
        specs: list[LocationSpec] = locations()
        if specs:
            session.execute(
                insert(SharedEntity),
                [
                    {
                        "run_id": run.id,
                        "entity_type": "location",
                        "entity_key": spec.name,
                        "status": "new",
                        "calling_enabled": False,
                        "desired_json": spec.model_dump_json(),
                        "updated_at": now,
                    }
                    for spec in specs
                ],
            )
        _event(session, run.id, "ingested", detail={"accepted": accepted, "rejected": rejected})
        session.flush()
        return _run_info(run)


def rejection_counts(ledger: Ledger, run_id: int) -> dict[str, int]:
    with ledger.read() as session:
        rows = session.execute(
            select(Row.reason_code, func.count())
            .where(Row.run_id == run_id, Row.status == "rejected")
            .group_by(Row.reason_code)
            .order_by(func.count().desc(), Row.reason_code)
        ).all()
        return {str(code): int(count) for code, count in rows}


# --- row claims ------------------------------------------------------------------------------


def new_token() -> str:
    return uuid.uuid4().hex


def claim_batch(
    ledger: Ledger, run_id: int, worker_id: str, limit: int, lease_s: float
) -> list[ClaimedRow]:
    """Claim up to `limit` ready rows (or rows whose lease expired), lowest batch first."""
    if limit < 1:
        raise InvariantError(f"claim limit must be positive, got {limit}")
    now = utcnow()
    token = new_token()
    with ledger.write() as session:
        query = (
            select(Row.id)
            .where(
                Row.run_id == run_id,
                or_(
                    Row.status == "ready",
                    and_(Row.status == "claimed", Row.lease_expires_at < now),
                ),
            )
            .order_by(Row.batch_id, Row.row_id)
            .limit(limit)
        )
        if not ledger.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        ids = list(session.scalars(query))
        if not ids:
            return []
        session.execute(
            update(Row)
            .where(Row.id.in_(ids))
            .values(
                status="claimed",
                claim_token=token,
                claimed_by=worker_id,
                lease_expires_at=now + timedelta(seconds=lease_s),
                attempts=Row.attempts + 1,
                updated_at=now,
            )
        )
        session.execute(
            insert(Event),
            [
                {
                    "run_id": run_id,
                    "row_pk": pk,
                    "kind": "claimed",
                    "step": None,
                    "detail_json": json.dumps({"worker": worker_id}),
                    "at": now,
                }
                for pk in ids
            ],
        )
        rows = session.execute(
            select(Row.id, Row.row_id, Row.batch_id, Row.normalized_json)
            .where(Row.id.in_(ids))
            .order_by(Row.batch_id, Row.row_id)
        ).all()
        steps: dict[int, dict[str, StepState]] = {pk: {} for pk in ids}
        for record in session.scalars(select(StepRecord).where(StepRecord.row_pk.in_(ids))):
            steps[record.row_pk][record.step] = StepState(
                record.status, record.remote_id, record.attempts
            )
    claimed = []
    for pk, row_id, batch_id, normalized in rows:
        if normalized is None or batch_id is None:
            raise InvariantError(f"row {row_id} is ready but was never accepted")
        claimed.append(
            ClaimedRow(
                pk=pk,
                run_id=run_id,
                row_id=row_id,
                batch_id=batch_id,
                claim_token=token,
                user=UserRow.model_validate_json(normalized),
                steps=steps[pk],
            )
        )
    return claimed


# The hot path (a few statements per step of every row) runs prebuilt Core statements with
# bound parameters: SQLAlchemy compiles each once, where building ORM statements per call cost
# several milliseconds of CPU per step.
ROWS_T = Base.metadata.tables["rows"]
STEPS_T = Base.metadata.tables["steps"]
EVENTS_T = Base.metadata.tables["events"]
_CLAIM_HOLDS = and_(
    ROWS_T.c.id == bindparam("b_pk"),
    ROWS_T.c.claim_token == bindparam("b_token"),
    ROWS_T.c.status == "claimed",
)
FENCE = (
    update(ROWS_T)
    .where(_CLAIM_HOLDS)
    .values(
        updated_at=bindparam("b_now", type_=DateTime(timezone=True)),
        lease_expires_at=func.coalesce(
            bindparam("b_lease_until", type_=DateTime(timezone=True)), ROWS_T.c.lease_expires_at
        ),
    )
)
_STATUS = bindparam("b_status", type_=String)
STEP_UPDATE = (
    update(STEPS_T)
    .where(STEPS_T.c.row_pk == bindparam("b_pk"), STEPS_T.c.step == bindparam("b_step"))
    .values(
        entity_type=bindparam("b_entity_type"),
        entity_key=bindparam("b_entity_key"),
        # A failure never hides an unknown outcome: whoever works the row next must still
        # look up (and wait for Webex's lag) before creating again.
        status=case(
            (and_(_STATUS == "failed", STEPS_T.c.status == "started"), STEPS_T.c.status),
            else_=_STATUS,
        ),
        http_status=bindparam("b_http_status", type_=Integer),
        remote_id=func.coalesce(bindparam("b_remote_id", type_=Text), STEPS_T.c.remote_id),
        message=bindparam("b_message", type_=Text),
        tracking_id=bindparam("b_tracking_id", type_=Text),
        updated_at=bindparam("b_now", type_=DateTime(timezone=True)),
        attempts=STEPS_T.c.attempts + bindparam("b_started", type_=Integer),
    )
)
STEP_INSERT = insert(STEPS_T)
EVENT_INSERT = insert(EVENTS_T)
STEP_STATUSES = select(STEPS_T.c.step, STEPS_T.c.status).where(
    STEPS_T.c.row_pk == bindparam("b_pk")
)
FINISH = (
    update(ROWS_T)
    .where(_CLAIM_HOLDS)
    .values(
        status=bindparam("b_status"),
        reason_code=bindparam("b_reason_code"),
        reason_message=bindparam("b_reason_message"),
        reason_step=bindparam("b_reason_step"),
        http_status=bindparam("b_http_status", type_=Integer),
        claim_token=None,
        claimed_by=None,
        lease_expires_at=None,
        finished_at=bindparam("b_now", type_=DateTime(timezone=True)),
        updated_at=bindparam("b_now", type_=DateTime(timezone=True)),
    )
)


def _event_values(
    run_id: int, kind: str, now: datetime, *, row_pk: int | None, step: str | None, detail: Any
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "row_pk": row_pk,
        "kind": kind,
        "step": step,
        "detail_json": json.dumps(detail, sort_keys=True) if detail else None,
        "at": now,
    }


def _fence(connection: Connection, row: ClaimedRow, lease_s: float | None) -> None:
    """Check the claim still holds (and renew its lease); raise ClaimLostError otherwise."""
    now = utcnow()
    result = connection.execute(
        FENCE,
        {
            "b_pk": row.pk,
            "b_token": row.claim_token,
            "b_now": now,
            "b_lease_until": None if lease_s is None else now + timedelta(seconds=lease_s),
        },
    )
    if result.rowcount != 1:
        raise ClaimLostError(f"row {row.row_id}: claim lost to another worker")


def record_step(
    ledger: Ledger, row: ClaimedRow, outcome: StepOutcome, *, lease_s: float | None = None
) -> None:
    """Record one step's state for a claimed row (fenced), with its event."""
    record_steps(ledger, row, [outcome], lease_s=lease_s)


def record_steps(
    ledger: Ledger,
    row: ClaimedRow,
    outcomes: Sequence[StepOutcome],
    *,
    lease_s: float | None = None,
) -> None:
    """Record steps' states for a claimed row in one transaction (fenced), with their events."""
    if not outcomes:
        return
    for outcome in outcomes:
        if outcome.step not in set(StepName):
            raise InvariantError(f"unknown step {outcome.step!r}")
    now = utcnow()
    with ledger.write_connection() as connection:
        _fence(connection, row, lease_s)
        for outcome in outcomes:
            _upsert_step(connection, row, outcome, now)


def _upsert_step(
    connection: Connection, row: ClaimedRow, outcome: StepOutcome, now: datetime
) -> None:
    started = 1 if outcome.status == "started" else 0
    updated = connection.execute(
        STEP_UPDATE,
        {
            "b_pk": row.pk,
            "b_step": outcome.step,
            "b_entity_type": outcome.entity_type,
            "b_entity_key": outcome.entity_key,
            "b_status": outcome.status,
            "b_http_status": outcome.http_status,
            "b_remote_id": outcome.remote_id,
            "b_message": outcome.message,
            "b_tracking_id": outcome.tracking_id,
            "b_now": now,
            "b_started": started,
        },
    )
    if updated.rowcount == 0:
        connection.execute(
            STEP_INSERT,
            {
                "row_pk": row.pk,
                "step": outcome.step,
                "entity_type": outcome.entity_type,
                "entity_key": outcome.entity_key,
                "status": outcome.status,
                "attempts": started,
                "http_status": outcome.http_status,
                "remote_id": outcome.remote_id,
                "message": outcome.message,
                "tracking_id": outcome.tracking_id,
                "updated_at": now,
            },
        )
    connection.execute(
        EVENT_INSERT,
        _event_values(
            row.run_id,
            f"step_{outcome.status}",
            now,
            row_pk=row.pk,
            step=outcome.step,
            detail={"remote_id": outcome.remote_id, "http_status": outcome.http_status},
        ),
    )


def finish_row(
    ledger: Ledger,
    row: ClaimedRow,
    *,
    status: str,
    reason_code: ReasonCode | None = None,
    reason_message: str | None = None,
    reason_step: str | None = None,
    http_status: int | None = None,
    required_steps: Sequence[str] = (),
) -> None:
    """Make a claimed row terminal (fenced). Success needs every required step succeeded."""
    if status not in ("success", "pending"):
        raise InvariantError(f"a worker cannot finish a row as {status!r}")
    if (status == "pending") != (reason_code is not None):
        raise InvariantError("a pending row needs a reason code, and only a pending row")
    now = utcnow()
    with ledger.write_connection() as connection:
        # The claim first: a worker that lost the row must hear that, whatever else is wrong.
        _fence(connection, row, None)
        if status == "success":
            done = {
                step: step_status
                for step, step_status in connection.execute(STEP_STATUSES, {"b_pk": row.pk})
            }
            missing = [s for s in required_steps if done.get(s) not in SUCCESS_STEP_STATUSES]
            if missing:
                raise InvariantError(
                    f"row {row.row_id} would be success without step(s) {', '.join(missing)}"
                )
        code = None if reason_code is None else str(reason_code)
        result = connection.execute(
            FINISH,
            {
                "b_pk": row.pk,
                "b_token": row.claim_token,
                "b_status": status,
                "b_reason_code": code,
                "b_reason_message": reason_message,
                "b_reason_step": reason_step,
                "b_http_status": http_status,
                "b_now": now,
            },
        )
        if result.rowcount != 1:
            raise ClaimLostError(f"row {row.row_id}: claim lost to another worker")
        connection.execute(
            EVENT_INSERT,
            _event_values(
                row.run_id,
                status,
                now,
                row_pk=row.pk,
                step=reason_step,
                detail={"reason_code": code},
            ),
        )


def release_rows(ledger: Ledger, rows: Sequence[ClaimedRow]) -> int:
    """Give claimed rows that were never worked back to `ready` (a graceful stop)."""
    if not rows:
        return 0
    now = utcnow()
    released = 0
    with ledger.write() as session:
        for row in rows:
            result = session.execute(
                update(Row)
                .where(
                    Row.id == row.pk, Row.claim_token == row.claim_token, Row.status == "claimed"
                )
                .values(
                    status="ready",
                    claim_token=None,
                    claimed_by=None,
                    lease_expires_at=None,
                    updated_at=now,
                )
            )
            if result.rowcount == 1:  # type: ignore[attr-defined]
                released += 1
                _event(session, row.run_id, "released", row_pk=row.pk)
    return released


def renew_leases(ledger: Ledger, tokens: Iterable[str], lease_s: float) -> None:
    """Heartbeat: push out the leases of every row and shared entity held under these tokens."""
    tokens = list(tokens)
    if not tokens:
        return
    until = utcnow() + timedelta(seconds=lease_s)
    with ledger.write() as session:
        session.execute(
            update(Row)
            .where(Row.claim_token.in_(tokens), Row.status == "claimed")
            .values(lease_expires_at=until)
        )
        # A location's provisioning can outlast a lease (Retry-After waits, a settling
        # lookup): while this worker is alive, nobody else may take it over.
        session.execute(
            update(SharedEntity)
            .where(SharedEntity.claim_token.in_(tokens), SharedEntity.status == "claimed")
            .values(lease_expires_at=until)
        )


def retry_rows(
    ledger: Ledger,
    run_id: int,
    *,
    reasons: Sequence[str] = (),
    row_ids: Sequence[int] = (),
) -> int:
    """Put pending rows back to ready (all, or those with these reasons or row ids)."""
    now = utcnow()
    with ledger.write() as session:
        query = select(Row.id, Row.reason_code).where(Row.run_id == run_id, Row.status == "pending")
        if reasons:
            query = query.where(Row.reason_code.in_(list(reasons)))
        if row_ids:
            query = query.where(Row.row_id.in_(list(row_ids)))
        picked = session.execute(query).all()
        if not picked:
            return 0
        ids = [pk for pk, _ in picked]
        for start in range(0, len(ids), INSERT_CHUNK):
            part = ids[start : start + INSERT_CHUNK]
            session.execute(
                update(Row)
                .where(Row.id.in_(part))
                .values(
                    status="ready",
                    reason_code=None,
                    reason_message=None,
                    reason_step=None,
                    http_status=None,
                    finished_at=None,
                    updated_at=now,
                )
            )
        session.execute(
            insert(Event),
            [
                {
                    "run_id": run_id,
                    "row_pk": pk,
                    "kind": "retried",
                    "step": None,
                    "detail_json": json.dumps({"previous_reason": reason}),
                    "at": now,
                }
                for pk, reason in picked
            ],
        )
        # Shared entities that failed get another chance along with the rows that needed them.
        _reset_failed_entities(session, run_id, now)
        return len(picked)


def _reset_failed_entities(session: Session, run_id: int, now: datetime) -> int:
    result = session.execute(
        update(SharedEntity)
        .where(SharedEntity.run_id == run_id, SharedEntity.status == "failed")
        .values(status="new", reason_code=None, reason_message=None, updated_at=now)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def reset_failed_entities(ledger: Ledger, run_id: int) -> int:
    """Let shared entities that failed be provisioned again (a new `work` session, a retry)."""
    now = utcnow()
    with ledger.write() as session:
        count = _reset_failed_entities(session, run_id, now)
        if count:
            _event(session, run_id, "entities_reset", detail={"count": count})
        return count


# --- shared entities -------------------------------------------------------------------------


def _entity_state(entity: SharedEntity, token: str | None) -> EntityState:
    return EntityState(
        id=entity.id,
        status=entity.status,
        remote_id=entity.remote_id,
        calling_enabled=entity.calling_enabled,
        desired=json.loads(entity.desired_json) if entity.desired_json else {},
        outcome=json.loads(entity.outcome_json) if entity.outcome_json else {},
        reason_code=entity.reason_code,
        reason_message=entity.reason_message,
        http_status=entity.http_status,
        token=token,
    )


def claim_entity(
    ledger: Ledger, run_id: int, entity_type: str, entity_key: str, lease_s: float
) -> EntityState:
    """Take a shared entity to provision it, or report why not (ready, failed, busy).

    The result's `token` is set only when the caller now holds it. An entity nobody holds
    (new, or its holder's lease expired) is taken; a ready or failed one is reported as it is.
    """
    now = utcnow()
    with ledger.write() as session:
        entity = session.scalars(
            select(SharedEntity).where(
                SharedEntity.run_id == run_id,
                SharedEntity.entity_type == entity_type,
                SharedEntity.entity_key == entity_key,
            )
        ).first()
        if entity is None:
            entity = SharedEntity(
                run_id=run_id,
                entity_type=entity_type,
                entity_key=entity_key,
                status="new",
                calling_enabled=False,
                updated_at=now,
            )
            session.add(entity)
            session.flush()
        expired = entity.lease_expires_at is not None and as_utc(entity.lease_expires_at) < now
        if entity.status == "new" or (entity.status == "claimed" and expired):
            token = new_token()
            entity.status = "claimed"
            entity.claim_token = token
            entity.lease_expires_at = now + timedelta(seconds=lease_s)
            entity.updated_at = now
            _event(session, run_id, "entity_claimed", detail={"entity": entity_key})
            return _entity_state(entity, token)
        return _entity_state(entity, None)


def update_entity(
    ledger: Ledger,
    entity: EntityState,
    *,
    remote_id: str | None = None,
    calling_enabled: bool | None = None,
    outcome: dict[str, Any] | None = None,
    done: bool = False,
    failure: tuple[ReasonCode, str, int | None] | None = None,
    lease_s: float = 60.0,
) -> EntityState:
    """Record progress on a held entity (fenced by its token); `done` or `failure` release it."""
    if entity.token is None:
        raise InvariantError(f"entity {entity.id} updated without holding it")
    now = utcnow()
    with ledger.write() as session:
        record = session.get(SharedEntity, entity.id)
        if record is None or record.claim_token != entity.token or record.status != "claimed":
            raise ClaimLostError(f"entity {entity.id}: claim lost to another worker")
        if remote_id is not None:
            record.remote_id = remote_id
        if calling_enabled is not None:
            record.calling_enabled = calling_enabled
        if outcome:
            merged = json.loads(record.outcome_json) if record.outcome_json else {}
            record.outcome_json = json.dumps(merged | outcome, sort_keys=True)
        record.updated_at = now
        record.lease_expires_at = now + timedelta(seconds=lease_s)
        token: str | None = entity.token
        if failure is not None:
            code, message, http_status = failure
            record.status = "failed"
            record.reason_code = str(code)
            record.reason_message = message
            record.http_status = http_status
        elif done:
            if record.remote_id is None:
                raise InvariantError(f"entity {record.entity_key!r} done without a remote id")
            record.status = "ready"
        if record.status != "claimed":
            record.claim_token = None
            record.lease_expires_at = None
            token = None
            _event(
                session,
                record.run_id,
                f"entity_{record.status}",
                detail={"entity": record.entity_key},
            )
        session.flush()
        return _entity_state(record, token)


# --- counters --------------------------------------------------------------------------------


def save_worker_stats(
    ledger: Ledger,
    run_id: int,
    worker_id: str,
    *,
    requests: int,
    retries: int,
    throttled: int,
    wait_s: float,
) -> None:
    now = utcnow()
    with ledger.write() as session:
        record = session.scalars(
            select(WorkerStats).where(
                WorkerStats.run_id == run_id, WorkerStats.worker_id == worker_id
            )
        ).first()
        if record is None:
            record = WorkerStats(run_id=run_id, worker_id=worker_id, started_at=now)
            session.add(record)
        record.requests = requests
        record.retries = retries
        record.throttled = throttled
        record.wait_s = wait_s
        record.updated_at = now


def run_is_finished(ledger: Ledger, run_id: int) -> bool:
    with ledger.read() as session:
        open_rows = session.scalar(
            select(func.count())
            .select_from(Row)
            .where(Row.run_id == run_id, Row.status.not_in(TERMINAL_ROW_STATUSES))
        )
        return not open_rows
