"""Claims: a batch of rows or a shared entity taken under a token and a lease, unworked rows
given back, leases kept alive by the heartbeat, and pending rows put back by `retry`."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from ledger.database import Ledger
from ledger.error_handling import InvariantError
from ledger.models import Row, SharedEntity, StepRecord
from ledger.records import (
    ClaimedRow,
    EntityState,
    EntityStatus,
    EntityType,
    RowStatus,
    StepName,
    StepState,
    StepStatus,
    as_utc,
    utcnow,
)
from ledger.row_rules import UserRow
from ledger.state_store.entities import entity_state, reset_failed_entities_in
from ledger.state_store.events import append_events, event
from ledger.state_store.runs import INSERT_CHUNK


def new_token() -> str:
    return uuid.uuid4().hex


def claim_batch(
    ledger: Ledger, run_id: int, worker_id: str, limit: int, lease_s: float
) -> list[ClaimedRow]:
    """Claim up to `limit` ready rows (or rows whose lease expired, or held by a worker of this
    host that died: see `_dead_local_holders`), lowest batch first."""
    if limit < 1:
        raise InvariantError(f"claim limit must be positive, got {limit}")
    now = utcnow()
    token = new_token()
    with ledger.write() as session:
        claimable = [
            Row.status == RowStatus.READY,
            and_(Row.status == RowStatus.CLAIMED, Row.lease_expires_at < now),
        ]
        dead = _dead_local_holders(session, run_id, now)
        if dead:
            claimable.append(and_(Row.status == RowStatus.CLAIMED, Row.claimed_by.in_(dead)))
        query = (
            select(Row.id)
            .where(Row.run_id == run_id, or_(*claimable))
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
                status=RowStatus.CLAIMED,
                claim_token=token,
                claimed_by=worker_id,
                lease_expires_at=now + timedelta(seconds=lease_s),
                attempts=Row.attempts + 1,
                updated_at=now,
            )
        )
        detail = {"worker": worker_id}
        append_events(
            session, [event(run_id, "claimed", now, row_pk=pk, detail=detail) for pk in ids]
        )
        rows = session.execute(
            select(Row.id, Row.row_id, Row.batch_id, Row.normalized_json)
            .where(Row.id.in_(ids))
            .order_by(Row.batch_id, Row.row_id)
        ).all()
        steps: dict[int, dict[StepName, StepState]] = {pk: {} for pk in ids}
        for record in session.scalars(select(StepRecord).where(StepRecord.row_pk.in_(ids))):
            status = StepStatus(record.status)
            # A `started` record is written just before its create is sent, and a failure
            # recorded over it leaves its time as it was (`steps.STEP_UPDATE`).
            started_at = as_utc(record.updated_at) if status == StepStatus.STARTED else None
            steps[record.row_pk][StepName(record.step)] = StepState(
                status, record.remote_id, record.attempts, started_at
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


# No more distinct holders than this are examined per claim: a bound, far above any number
# of workers one ledger sees at once.
MAX_HOLDERS_EXAMINED = 256


def _dead_local_holders(session: Session, run_id: int, now: datetime) -> list[str]:
    """Workers of this host that hold live leases on the run's rows but whose process is gone.

    Their rows need not wait out the lease: a `host:pid` whose host is this one and whose pid
    no longer exists can never renew it. Taking the rows gives them a new token, so if such a
    worker were somehow still writing, its fence would still fail.
    """
    holders = session.scalars(
        select(Row.claimed_by)
        .where(
            Row.run_id == run_id,
            Row.status == RowStatus.CLAIMED,
            Row.lease_expires_at >= now,
            Row.claimed_by.is_not(None),
        )
        .distinct()
        .limit(MAX_HOLDERS_EXAMINED)
    )
    host = socket.gethostname()
    return [holder for holder in holders if holder and is_dead_local_worker(holder, host)]


def is_dead_local_worker(worker_id: str, host: str) -> bool:
    """Whether `worker_id` (`host:pid`, as `work` names itself) is a process of `host` (this
    machine) that no longer exists. Anything else, and any doubt, is "alive"."""
    name, colon, pid_text = worker_id.rpartition(":")
    if not colon or name != host or not (pid_text.isascii() and pid_text.isdigit()):
        return False
    pid = int(pid_text)
    if pid <= 0 or pid == os.getpid():  # 0 would signal our own process group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):  # PermissionError: alive, another user's
        return False
    return False


def claim_entity(
    ledger: Ledger, run_id: int, entity_type: EntityType, entity_key: str, lease_s: float
) -> EntityState:
    """Take a shared entity to provision it, or report why not (ready, failed, busy).

    The result's `token` is set only when the caller now holds it. An entity nobody holds
    (new, or its holder's lease expired) is taken; a ready or failed one is reported as it is.
    """
    query = select(SharedEntity).where(
        SharedEntity.run_id == run_id,
        SharedEntity.entity_type == entity_type,
        SharedEntity.entity_key == entity_key,
    )
    # Every batch asks for each of its locations, nearly always one already settled: that is
    # reported from a read, without a write transaction (nothing settled is taken again).
    with ledger.read() as session:
        settled = session.scalars(query).first()
        if settled is not None and settled.status in (EntityStatus.READY, EntityStatus.FAILED):
            return entity_state(settled, None)
    now = utcnow()
    with ledger.write() as session:
        entity = session.scalars(query).first()
        if entity is None:
            entity = SharedEntity(
                run_id=run_id,
                entity_type=entity_type,
                entity_key=entity_key,
                status=EntityStatus.NEW,
                calling_enabled=False,
                updated_at=now,
            )
            session.add(entity)
            session.flush()
        expired = entity.lease_expires_at is not None and as_utc(entity.lease_expires_at) < now
        if entity.status == EntityStatus.NEW or (entity.status == EntityStatus.CLAIMED and expired):
            token = new_token()
            entity.status = EntityStatus.CLAIMED
            entity.claim_token = token
            entity.lease_expires_at = now + timedelta(seconds=lease_s)
            entity.updated_at = now
            detail = {"entity": entity_key}
            append_events(session, [event(run_id, "entity_claimed", now, detail=detail)])
            return entity_state(entity, token)
        return entity_state(entity, None)


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
                    Row.id == row.pk,
                    Row.claim_token == row.claim_token,
                    Row.status == RowStatus.CLAIMED,
                )
                .values(
                    status=RowStatus.READY,
                    claim_token=None,
                    claimed_by=None,
                    lease_expires_at=None,
                    updated_at=now,
                )
            )
            if result.rowcount == 1:  # type: ignore[attr-defined]
                released += 1
                append_events(session, [event(row.run_id, "released", now, row_pk=row.pk)])
    return released


def renew_leases(ledger: Ledger, tokens: Iterable[str], lease_s: float) -> None:
    """Heartbeat: push out the leases of every row and shared entity held under these tokens."""
    tokens = list(tokens)
    if not tokens:
        return
    now = utcnow()
    until = now + timedelta(seconds=lease_s)
    # A lease that has run out stays out: from then on the row is another worker's to take,
    # and the late heartbeat must not snatch it back between their look and their claim.
    with ledger.write() as session:
        session.execute(
            update(Row)
            .where(
                Row.claim_token.in_(tokens),
                Row.status == RowStatus.CLAIMED,
                Row.lease_expires_at > now,
            )
            .values(lease_expires_at=until)
        )
        # A location's provisioning can outlast a lease (Retry-After waits, a settling
        # lookup): while this worker is alive, nobody else may take it over.
        session.execute(
            update(SharedEntity)
            .where(
                SharedEntity.claim_token.in_(tokens),
                SharedEntity.status == EntityStatus.CLAIMED,
                SharedEntity.lease_expires_at > now,
            )
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
        query = select(Row.id, Row.reason_code).where(
            Row.run_id == run_id, Row.status == RowStatus.PENDING
        )
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
                    status=RowStatus.READY,
                    reason_code=None,
                    reason_message=None,
                    reason_step=None,
                    http_status=None,
                    finished_at=None,
                    updated_at=now,
                )
            )
        append_events(
            session,
            [
                event(run_id, "retried", now, row_pk=pk, detail={"previous_reason": reason})
                for pk, reason in picked
            ],
        )
        # Shared entities that failed get another chance along with the rows that needed them.
        reset_failed_entities_in(session, run_id, now)
        return len(picked)
