"""The hot path of a claimed row: recording its steps and finishing it, fenced by its claim.

Every row writes here several times, from as many threads as rows are in flight, and each
caller returns only once its own write is committed. So the writes go through the ledger's
group commit (`ledger.group_commit`): those that arrive together share one transaction, in
which each kind of statement runs once for all of them (`executemany`): prebuilt Core
statements (`step_statements`), compiled once per dialect and handed to the driver with one
plain tuple per row, datetimes converted once per group (`driver_sql`):

* the fence of every step write (its claim still holds; its lease pushed out) but those of a
  row finished in the group, then one upsert of every outcome, then the finish of every row,
  checked in the same statement against its claim and, for a success, against the statuses
  of its required steps (no read first): that check fences the row's steps too;
* one insert of every event.

When any fence or finish matches fewer rows than it should (a claim lost, a required step
missing), the group is rolled back and each write made again alone, the way it always was
(`_record_steps_alone`, `_finish_row_alone`), so that each caller hears its own
`ClaimLostError` or `InvariantError` and the others commit.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from json.encoder import encode_basestring_ascii
from typing import Any

from sqlalchemy.engine import Connection

from ledger.database import Ledger
from ledger.error_handling import ClaimLostError, InvariantError, ReasonCode
from ledger.records import (
    SUCCESS_STEP_STATUSES,
    ClaimedRow,
    RowStatus,
    StepName,
    StepOutcome,
    StepStatus,
    utcnow,
)
from ledger.state_store.driver_sql import Row, dialect_of
from ledger.state_store.events import EVENT_INSERT, EventValues, append_events, event
from ledger.state_store.step_statements import (
    FENCE,
    FINISH,
    FINISH_CHECKED,
    REQUIRED_SLOTS,
    SELECT_STEP_STATUSES,
    STEP_INSERT,
    STEP_UPDATE,
    STEP_UPSERTS,
)


@dataclass(frozen=True, slots=True)
class _StepWrite:
    ledger: Ledger
    row: ClaimedRow
    outcomes: tuple[StepOutcome, ...]
    lease_s: float | None


@dataclass(frozen=True, slots=True)
class _FinishWrite:
    ledger: Ledger
    row: ClaimedRow
    status: RowStatus
    reason_code: str | None
    reason_message: str | None
    reason_step: StepName | None
    http_status: int | None
    required: tuple[str, ...]  # distinct, in the order given


@dataclass(frozen=True, slots=True)
class _RowsStepWrites:
    """Many rows' step records handed in as one write (a batch's preparation records its rows
    together); each row is fenced by its own claim, and `lost` gathers the pks of the rows
    whose claim was lost, when the write had to be made row by row."""

    writes: tuple[_StepWrite, ...]
    lost: set[int]


@dataclass(frozen=True, slots=True)
class _StepsThenFinish:
    """A row's last step records and its finish, committed together (one wait, not two)."""

    steps: _StepWrite
    finish: _FinishWrite


_Write = _StepWrite | _FinishWrite | _StepsThenFinish | _RowsStepWrites
_STEP_NAMES = frozenset(StepName)


class _Refused(Exception):
    """A fence or finish of the group matched nothing: each write is made again alone."""


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
    """Record steps' states for a claimed row in one transaction (fenced), with their events.

    Returns once they are committed; raises ClaimLostError when the row's claim is lost.
    """
    if not outcomes:
        return
    for outcome in outcomes:
        if outcome.step not in _STEP_NAMES:
            raise InvariantError(f"unknown step {outcome.step!r}")
    ledger.group.submit(STEP_WRITER, _StepWrite(ledger, row, tuple(outcomes), lease_s))


def record_rows_steps(
    ledger: Ledger,
    rows_outcomes: Sequence[tuple[ClaimedRow, Sequence[StepOutcome]]],
    *,
    lease_s: float | None = None,
) -> frozenset[int]:
    """Record the steps of many claimed rows, each fenced by its own claim, in one write: one
    transaction with the other writes of the moment, not one wait per row.

    Returns once every record is committed, with the pks of the rows whose claim was lost
    (nothing was recorded for those); the other rows' records stand.
    """
    writes: list[_StepWrite] = []
    for row, outcomes in rows_outcomes:
        for outcome in outcomes:
            if outcome.step not in _STEP_NAMES:
                raise InvariantError(f"unknown step {outcome.step!r}")
        if outcomes:
            writes.append(_StepWrite(ledger, row, tuple(outcomes), lease_s))
    if not writes:
        return frozenset()
    bulk = _RowsStepWrites(tuple(writes), set())
    ledger.group.submit(STEP_WRITER, bulk)
    return frozenset(bulk.lost)


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
    outcomes: Sequence[StepOutcome] = (),
) -> None:
    """Make a claimed row terminal (fenced). Success needs every required step succeeded.

    `outcomes`, step records not yet made, are recorded first, in the same transaction.
    Returns once it is committed; raises ClaimLostError when the row's claim is lost (whatever
    else is wrong), InvariantError when a required step has not succeeded.
    """
    for outcome in outcomes:
        if outcome.step not in _STEP_NAMES:
            raise InvariantError(f"unknown step {outcome.step!r}")
    if status not in (RowStatus.SUCCESS, RowStatus.PENDING):
        raise InvariantError(f"a worker cannot finish a row as {status!r}")
    if (status == RowStatus.PENDING) != (reason_code is not None):
        raise InvariantError("a pending row needs a reason code, and only a pending row")
    required = dict.fromkeys(str(s) for s in required_steps) if status == RowStatus.SUCCESS else {}
    write = _FinishWrite(
        ledger,
        row,
        status,
        None if reason_code is None else str(reason_code),
        reason_message,
        reason_step,
        http_status,
        tuple(required),
    )
    if outcomes:
        steps = _StepWrite(ledger, row, tuple(outcomes), None)
        ledger.group.submit(STEP_WRITER, _StepsThenFinish(steps, write))
    else:
        ledger.group.submit(STEP_WRITER, write)


class _StepWriter:
    """The group commit's writer of step records and finishes (see the module docstring)."""

    def write_many(self, connection: Connection, payloads: Sequence[_Write]) -> None:
        dialect = dialect_of(connection)
        now = utcnow()
        at = dialect.datetime(now)
        steps: list[_StepWrite] = []  # the first `fenced` fenced; the others' rows finish here
        finishes: list[_FinishWrite] = []
        for payload in payloads:
            if isinstance(payload, _StepWrite):
                steps.append(payload)
            elif isinstance(payload, _FinishWrite):
                finishes.append(payload)
            elif isinstance(payload, _RowsStepWrites):
                steps.extend(payload.writes)
        fenced = len(steps)
        for payload in payloads:
            if isinstance(payload, _StepsThenFinish):  # steps in before any finish is checked
                steps.append(payload.steps)
                finishes.append(payload.finish)
        events: list[Row] = []
        if fenced:
            leases: dict[float | None, Any] = {None: None}  # lease_s -> the lease's end
            fences: list[Row] = []
            for write in steps[:fenced]:
                lease_s = write.lease_s
                if lease_s is not None and lease_s not in leases:
                    leases[lease_s] = dialect.datetime(now + timedelta(seconds=lease_s))
                fences.append((write.row.pk, write.row.claim_token, at, leases[lease_s]))
            if dialect.statement(FENCE, FENCE_NAMES).run(connection, fences) != fenced:
                raise _Refused
        # The steps of a row finished here need no fence of their own: its finish checks the
        # claim in this transaction, and a finish refused rolls the steps back with it.
        if steps:
            values: list[Row] = []
            for write in steps:
                row = write.row
                for outcome in write.outcomes:
                    values.append(_step_row(row.pk, outcome, at))
                    events.append(_step_event_row(row, outcome, at))
            upsert = dialect.statement(STEP_UPSERTS[dialect.name], STEP_COLUMNS, insert=True)
            upsert.run(connection, values)
        if finishes:
            params = [_finish_row(write, at) for write in finishes]
            finish = dialect.statement(FINISH_CHECKED, FINISH_NAMES)
            if finish.run(connection, params) != len(finishes):
                raise _Refused
            events.extend(_finish_event_row(write, at) for write in finishes)
        if events:
            dialect.statement(EVENT_INSERT, EVENT_COLUMNS, insert=True).run(connection, events)

    def write_one(self, payload: _Write) -> None:
        if isinstance(payload, _StepWrite):
            _record_steps_alone(payload)
        elif isinstance(payload, _FinishWrite):
            _finish_row_alone(payload)
        elif isinstance(payload, _RowsStepWrites):
            for write in payload.writes:  # each row alone: one lost claim spoils no other row
                try:
                    _record_steps_alone(write)
                except ClaimLostError:
                    payload.lost.add(write.row.pk)
        else:
            _record_steps_alone(payload.steps)
            _finish_row_alone(payload.finish)


STEP_WRITER = _StepWriter()

# The order of each statement's values in the rows handed to the driver (`driver_sql`).
FENCE_NAMES = ("b_pk", "b_token", "b_now", "b_lease_until")
STEP_COLUMNS = (
    "row_pk",
    "step",
    "entity_type",
    "entity_key",
    "status",
    "attempts",
    "http_status",
    "remote_id",
    "message",
    "tracking_id",
    "updated_at",
)
FINISH_NAMES = (
    "b_pk",
    "b_token",
    "b_status",
    "b_reason_code",
    "b_reason_message",
    "b_reason_step",
    "b_http_status",
    "b_now",
    "b_required",
    *(slot.key for slot in REQUIRED_SLOTS),
)
EVENT_COLUMNS = ("run_id", "row_pk", "kind", "step", "detail_json", "at")
_NO_NAMES = (None,) * len(REQUIRED_SLOTS)


def _step_row(row_pk: int, outcome: StepOutcome, at: Any) -> Row:
    status = outcome.status
    return (
        row_pk,
        outcome.step,
        outcome.entity_type,
        outcome.entity_key,
        status,
        1 if status == StepStatus.STARTED else 0,
        outcome.http_status,
        outcome.remote_id,
        outcome.message,
        outcome.tracking_id,
        at,
    )


def _step_event_row(row: ClaimedRow, outcome: StepOutcome, at: Any) -> Row:
    # What `event` stores for detail={"remote_id": ..., "http_status": ...}, built directly.
    http_status = _json(outcome.http_status)
    detail_json = f'{{"http_status": {http_status}, "remote_id": {_json(outcome.remote_id)}}}'
    return (row.run_id, row.pk, f"step_{outcome.status}", outcome.step, detail_json, at)


def _json(value: object) -> str:
    """`json.dumps(value)`, the common cases without the encoder's set-up."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return encode_basestring_ascii(value)
    if type(value) is int:
        return int.__repr__(value)
    return json.dumps(value)


def _finish_row(write: _FinishWrite, at: Any) -> Row:
    required = write.required
    slots = len(REQUIRED_SLOTS)
    # More names than steps: some name no step, so the finish is refused and made alone,
    # where the missing ones are named.
    expected = len(required) if len(required) <= slots else -1
    named = required[:slots] + _NO_NAMES[len(required) :]
    row = write.row
    head = (
        row.pk,
        row.claim_token,
        write.status,
        write.reason_code,
        write.reason_message,
        write.reason_step,
        write.http_status,
        at,
        expected,
    )
    return head + named


def _finish_event_row(write: _FinishWrite, at: Any) -> Row:
    detail_json = f'{{"reason_code": {_json(write.reason_code)}}}'
    row = write.row
    return (row.run_id, row.pk, write.status, write.reason_step, detail_json, at)


def _step_values(row: ClaimedRow, outcome: StepOutcome, now: datetime) -> dict[str, Any]:
    return {
        "row_pk": row.pk,
        "step": outcome.step,
        "entity_type": outcome.entity_type,
        "entity_key": outcome.entity_key,
        "status": outcome.status,
        "attempts": 1 if outcome.status == StepStatus.STARTED else 0,
        "http_status": outcome.http_status,
        "remote_id": outcome.remote_id,
        "message": outcome.message,
        "tracking_id": outcome.tracking_id,
        "updated_at": now,
    }


def _step_event(row: ClaimedRow, outcome: StepOutcome, now: datetime) -> EventValues:
    detail = {"remote_id": outcome.remote_id, "http_status": outcome.http_status}
    kind = f"step_{outcome.status}"
    return event(row.run_id, kind, now, row_pk=row.pk, step=outcome.step, detail=detail)


def _finish_event(write: _FinishWrite, now: datetime) -> EventValues:
    detail = {"reason_code": write.reason_code}
    row = write.row
    return event(
        row.run_id, write.status, now, row_pk=row.pk, step=write.reason_step, detail=detail
    )


# --- one write alone: the way each write is made when its group could not be -----------------


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


def _record_steps_alone(write: _StepWrite) -> None:
    row = write.row
    now = utcnow()
    with write.ledger.write_connection() as connection:
        _fence(connection, row, write.lease_s)
        for outcome in write.outcomes:
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
        connection.execute(STEP_INSERT, _step_values(row, outcome, now))
    append_events(connection, [_step_event(row, outcome, now)])


def _finish_row_alone(write: _FinishWrite) -> None:
    row = write.row
    now = utcnow()
    with write.ledger.write_connection() as connection:
        # The claim first: a worker that lost the row must hear that, whatever else is wrong.
        _fence(connection, row, None)
        if write.status == RowStatus.SUCCESS:
            done = {
                step: step_status
                for step, step_status in connection.execute(SELECT_STEP_STATUSES, {"b_pk": row.pk})
            }
            missing = [s for s in write.required if done.get(s) not in SUCCESS_STEP_STATUSES]
            if missing:
                raise InvariantError(
                    f"row {row.row_id} would be success without step(s) {', '.join(missing)}"
                )
        result = connection.execute(
            FINISH,
            {
                "b_pk": row.pk,
                "b_token": row.claim_token,
                "b_status": write.status,
                "b_reason_code": write.reason_code,
                "b_reason_message": write.reason_message,
                "b_reason_step": write.reason_step,
                "b_http_status": write.http_status,
                "b_now": now,
            },
        )
        if result.rowcount != 1:
            raise ClaimLostError(f"row {row.row_id}: claim lost to another worker")
        append_events(connection, [_finish_event(write, now)])
