"""The hot path of a claimed row: recording its steps and finishing it, fenced by its claim.

These run a few statements per step of every row, so they are prebuilt Core statements with
bound parameters: SQLAlchemy compiles each once, where building ORM statements per call cost
several milliseconds of CPU per step.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

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
    select,
    update,
)
from sqlalchemy.engine import Connection

from ledger.database import Ledger
from ledger.error_handling import ClaimLostError, InvariantError, ReasonCode
from ledger.models import Base
from ledger.records import (
    SUCCESS_STEP_STATUSES,
    ClaimedRow,
    RowStatus,
    StepName,
    StepOutcome,
    StepStatus,
    utcnow,
)
from ledger.state_store.events import append_events, event

ROWS_T = Base.metadata.tables["rows"]
STEPS_T = Base.metadata.tables["steps"]
_CLAIM_HOLDS = and_(
    ROWS_T.c.id == bindparam("b_pk"),
    ROWS_T.c.claim_token == bindparam("b_token"),
    ROWS_T.c.status == RowStatus.CLAIMED.value,
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
_NOW = bindparam("b_now", type_=DateTime(timezone=True))
# A failure never hides an unknown outcome: whoever works the row next must still look up
# (and allow for Webex's lag, counted from when the create was sent) before creating again.
_FAILURE_OVER_STARTED = and_(
    _STATUS == StepStatus.FAILED.value, STEPS_T.c.status == StepStatus.STARTED.value
)
STEP_UPDATE = (
    update(STEPS_T)
    .where(STEPS_T.c.row_pk == bindparam("b_pk"), STEPS_T.c.step == bindparam("b_step"))
    .values(
        entity_type=bindparam("b_entity_type"),
        entity_key=bindparam("b_entity_key"),
        status=case((_FAILURE_OVER_STARTED, STEPS_T.c.status), else_=_STATUS),
        http_status=bindparam("b_http_status", type_=Integer),
        remote_id=func.coalesce(bindparam("b_remote_id", type_=Text), STEPS_T.c.remote_id),
        message=bindparam("b_message", type_=Text),
        tracking_id=bindparam("b_tracking_id", type_=Text),
        updated_at=case((_FAILURE_OVER_STARTED, STEPS_T.c.updated_at), else_=_NOW),
        attempts=STEPS_T.c.attempts + bindparam("b_started", type_=Integer),
    )
)
STEP_INSERT = insert(STEPS_T)
SELECT_STEP_STATUSES = select(STEPS_T.c.step, STEPS_T.c.status).where(
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
    started = 1 if outcome.status == StepStatus.STARTED else 0
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
    detail = {"remote_id": outcome.remote_id, "http_status": outcome.http_status}
    kind = f"step_{outcome.status}"
    append_events(
        connection, [event(row.run_id, kind, now, row_pk=row.pk, step=outcome.step, detail=detail)]
    )


def finish_row(
    ledger: Ledger,
    row: ClaimedRow,
    *,
    status: RowStatus,
    reason_code: ReasonCode | None = None,
    reason_message: str | None = None,
    reason_step: StepName | None = None,
    http_status: int | None = None,
    required_steps: Sequence[StepName] = (),
) -> None:
    """Make a claimed row terminal (fenced). Success needs every required step succeeded."""
    if status not in (RowStatus.SUCCESS, RowStatus.PENDING):
        raise InvariantError(f"a worker cannot finish a row as {status!r}")
    if (status == RowStatus.PENDING) != (reason_code is not None):
        raise InvariantError("a pending row needs a reason code, and only a pending row")
    now = utcnow()
    with ledger.write_connection() as connection:
        # The claim first: a worker that lost the row must hear that, whatever else is wrong.
        _fence(connection, row, None)
        if status == RowStatus.SUCCESS:
            done = {
                step: step_status
                for step, step_status in connection.execute(SELECT_STEP_STATUSES, {"b_pk": row.pk})
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
        append_events(
            connection,
            [
                event(
                    row.run_id,
                    status,
                    now,
                    row_pk=row.pk,
                    step=reason_step,
                    detail={"reason_code": code},
                )
            ],
        )
