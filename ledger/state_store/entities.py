"""Shared entities (a run's locations): provisioned by the worker that claimed one, then reused.

What provisioning did is kept as JSON in `outcome_json`, which only this module reads and
writes: `{"by_row": 7, "failed_step": "calling", "location": {"status": "created",
"http_status": 200, "tracking_id": "…"}, "calling": {…}}`. Callers pass and get it typed,
through `EntityState` (`steps`, `by_row`, `failure`).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from ledger.database import Ledger
from ledger.error_handling import ClaimLostError, InvariantError, ReasonCode
from ledger.models import SharedEntity
from ledger.records import (
    SHARED_STEPS,
    EntityState,
    EntityStatus,
    EntityType,
    Failure,
    StepName,
    StepOutcome,
    StepStatus,
    utcnow,
)
from ledger.row_rules import LocationSpec
from ledger.state_store.events import append_events, event


def _saved_step(entity: SharedEntity, step: StepName, saved: dict[str, Any]) -> StepOutcome | None:
    status, http_status, tracking = (saved.get(k) for k in ("status", "http_status", "tracking_id"))
    if status not in set(StepStatus):
        return None
    return StepOutcome(
        step=step,
        status=StepStatus(status),
        entity_type=EntityType(entity.entity_type),
        entity_key=entity.entity_key,
        http_status=http_status if isinstance(http_status, int) else None,
        remote_id=entity.remote_id,
        tracking_id=tracking if isinstance(tracking, str) else None,
    )


def entity_state(entity: SharedEntity, token: str | None) -> EntityState:
    outcome: dict[str, Any] = json.loads(entity.outcome_json) if entity.outcome_json else {}
    steps: dict[StepName, StepOutcome] = {}
    for step in SHARED_STEPS:
        saved = outcome.get(step)
        found = _saved_step(entity, step, saved) if isinstance(saved, dict) else None
        if found is not None:
            steps[step] = found
    failure = None
    if entity.status == EntityStatus.FAILED:
        failed_step = outcome.get("failed_step")
        failure = Failure(
            reason=ReasonCode(entity.reason_code or ReasonCode.DEPENDENCY_FAILED),
            message=entity.reason_message or "the location could not be provisioned",
            http_status=entity.http_status,
            step=StepName(failed_step) if failed_step in SHARED_STEPS else StepName.LOCATION,
        )
    by_row = outcome.get("by_row")
    desired = entity.desired_json
    return EntityState(
        id=entity.id,
        status=EntityStatus(entity.status),
        remote_id=entity.remote_id,
        calling_enabled=entity.calling_enabled,
        desired=LocationSpec.model_validate_json(desired) if desired else None,
        steps=steps,
        by_row=by_row if isinstance(by_row, int) else None,
        failure=failure,
        token=token,
    )


def update_entity(
    ledger: Ledger,
    entity: EntityState,
    *,
    remote_id: str | None = None,
    calling_enabled: bool | None = None,
    step: StepOutcome | None = None,
    by_row: int | None = None,
    done: bool = False,
    failure: Failure | None = None,
    lease_s: float = 60.0,
) -> EntityState:
    """Record progress on a held entity (fenced by its token): its remote id, what a shared
    `step` did (`started` before its write), for which row; `done` or `failure` release it."""
    if entity.token is None:
        raise InvariantError(f"entity {entity.id} updated without holding it")
    now = utcnow()
    with ledger.write() as session:
        record = session.get(SharedEntity, entity.id)
        if (
            record is None
            or record.claim_token != entity.token
            or record.status != EntityStatus.CLAIMED
        ):
            raise ClaimLostError(f"entity {entity.id}: claim lost to another worker")
        if remote_id is not None:
            record.remote_id = remote_id
        if calling_enabled is not None:
            record.calling_enabled = calling_enabled
        _merge_outcome(record, step, by_row, failure)
        record.updated_at = now
        record.lease_expires_at = now + timedelta(seconds=lease_s)
        token: str | None = entity.token
        if failure is not None:
            record.status = EntityStatus.FAILED
            record.reason_code = str(failure.reason)
            record.reason_message = failure.message
            record.http_status = failure.http_status
        elif done:
            if record.remote_id is None:
                raise InvariantError(f"entity {record.entity_key!r} done without a remote id")
            record.status = EntityStatus.READY
        if record.status != EntityStatus.CLAIMED:
            record.claim_token = None
            record.lease_expires_at = None
            token = None
            kind = f"entity_{record.status}"
            detail = {"entity": record.entity_key}
            append_events(session, [event(record.run_id, kind, now, detail=detail)])
        session.flush()
        return entity_state(record, token)


def _merge_outcome(
    record: SharedEntity, step: StepOutcome | None, by_row: int | None, failure: Failure | None
) -> None:
    outcome: dict[str, Any] = {}
    if by_row is not None:
        outcome["by_row"] = by_row
    if step is not None:
        outcome[step.step] = {
            "status": step.status,
            "http_status": step.http_status,
            "tracking_id": step.tracking_id,
        }
    if failure is not None:
        outcome["failed_step"] = failure.step
    if outcome:
        merged = json.loads(record.outcome_json) if record.outcome_json else {}
        record.outcome_json = json.dumps(merged | outcome, sort_keys=True)


def reset_failed_entities_in(session: Session, run_id: int, now: datetime) -> int:
    """`reset_failed_entities` in the caller's transaction (`retry_rows` does it too)."""
    result = session.execute(
        update(SharedEntity)
        .where(SharedEntity.run_id == run_id, SharedEntity.status == EntityStatus.FAILED)
        .values(status=EntityStatus.NEW, reason_code=None, reason_message=None, updated_at=now)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def reset_failed_entities(ledger: Ledger, run_id: int) -> int:
    """Let shared entities that failed be provisioned again (a new `work` session, a retry)."""
    now = utcnow()
    with ledger.write() as session:
        count = reset_failed_entities_in(session, run_id, now)
        if count:
            append_events(session, [event(run_id, "entities_reset", now, detail={"count": count})])
        return count
