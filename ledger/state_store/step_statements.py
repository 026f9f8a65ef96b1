"""The prebuilt Core statements of the step-record hot path (`steps`), compiled once each.

The solo path of one write (`FENCE`, then `STEP_UPDATE` or `STEP_INSERT`; `FINISH` after a read
of the step statuses) and the group path of many (`FENCE`, `STEP_UPSERTS`, `FINISH_CHECKED`,
each run once with every write's parameters).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from sqlalchemy import (
    DateTime,
    Insert,
    Integer,
    String,
    Text,
    and_,
    bindparam,
    case,
    func,
    insert,
    literal,
    select,
    update,
)

from ledger.models import Base
from ledger.records import SUCCESS_STEP_STATUSES, RowStatus, StepName, StepStatus

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
_FINISH_VALUES: dict[str, Any] = {
    "status": bindparam("b_status"),
    "reason_code": bindparam("b_reason_code"),
    "reason_message": bindparam("b_reason_message"),
    "reason_step": bindparam("b_reason_step"),
    "http_status": bindparam("b_http_status", type_=Integer),
    "claim_token": None,
    "claimed_by": None,
    "lease_expires_at": None,
    "finished_at": bindparam("b_now", type_=DateTime(timezone=True)),
    "updated_at": bindparam("b_now", type_=DateTime(timezone=True)),
}
FINISH = update(ROWS_T).where(_CLAIM_HOLDS).values(**_FINISH_VALUES)


def _step_upsert(dialect_insert: Callable[..., Any]) -> Insert:
    """One outcome inserted, or merged over the step's record as STEP_UPDATE does."""
    statement = dialect_insert(STEPS_T)
    new = statement.excluded
    failure_over_started = and_(
        new.status == StepStatus.FAILED.value, STEPS_T.c.status == StepStatus.STARTED.value
    )
    upsert: Insert = statement.on_conflict_do_update(
        index_elements=[STEPS_T.c.row_pk, STEPS_T.c.step],
        set_={
            "entity_type": new.entity_type,
            "entity_key": new.entity_key,
            "status": case((failure_over_started, STEPS_T.c.status), else_=new.status),
            "http_status": new.http_status,
            "remote_id": func.coalesce(new.remote_id, STEPS_T.c.remote_id),
            "message": new.message,
            "tracking_id": new.tracking_id,
            "updated_at": case((failure_over_started, STEPS_T.c.updated_at), else_=new.updated_at),
            # The inserted `attempts` is 1 for a `started` outcome, else 0.
            "attempts": STEPS_T.c.attempts + new.attempts,
        },
    )
    return upsert


def _sqlite_insert() -> Callable[..., Any]:
    from sqlalchemy.dialects import sqlite

    return sqlite.insert


def _postgresql_insert() -> Callable[..., Any]:
    # Importing the PostgreSQL dialect loads every driver module it ships (asyncpg's with
    # asyncio among them): a tenth of a second of start-up that a SQLite ledger never needs.
    from sqlalchemy.dialects import postgresql

    return postgresql.insert


_DIALECT_INSERTS: dict[str, Callable[[], Callable[..., Any]]] = {
    "sqlite": _sqlite_insert,
    "postgresql": _postgresql_insert,
}


class _Upserts(Mapping[str, Insert]):
    """`STEP_UPSERTS[dialect name]`, each built on first use and then the same statement (the
    driver statements are compiled once per statement object)."""

    def __init__(self) -> None:
        self._built: dict[str, Insert] = {}
        self._lock = threading.Lock()

    def __getitem__(self, dialect: str) -> Insert:
        built = self._built.get(dialect)
        if built is None:
            dialect_insert = _DIALECT_INSERTS[dialect]
            with self._lock:
                built = self._built.get(dialect)
                if built is None:
                    built = self._built[dialect] = _step_upsert(dialect_insert())
        return built

    def __iter__(self) -> Iterator[str]:
        return iter(_DIALECT_INSERTS)

    def __len__(self) -> int:
        return len(_DIALECT_INSERTS)


STEP_UPSERTS: Mapping[str, Insert] = _Upserts()

# A finish in one statement: the claim holds and, for a success, every required step is on
# record as succeeded. Up to one bound name per step; the unused ones are NULL, which no step
# matches (a pending finish requires none).
REQUIRED_SLOTS = [bindparam(f"b_required_{index}", type_=String) for index in range(len(StepName))]
_REQUIRED_DONE = (
    select(func.count())
    .select_from(STEPS_T)
    .where(
        STEPS_T.c.row_pk == bindparam("b_pk"),
        STEPS_T.c.status.in_([literal(status.value) for status in SUCCESS_STEP_STATUSES]),
        STEPS_T.c.step.in_(REQUIRED_SLOTS),
    )
    .scalar_subquery()
)
FINISH_CHECKED = (
    update(ROWS_T)
    .where(_CLAIM_HOLDS, _REQUIRED_DONE == bindparam("b_required", type_=Integer))
    .values(**_FINISH_VALUES)
)
