"""The one way an event is built and appended: in the transaction of the change it records."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from ledger.models import Base

EVENT_INSERT = insert(Base.metadata.tables["events"])

EventValues = dict[str, Any]


def event(
    run_id: int,
    kind: str,
    at: datetime,
    *,
    row_pk: int | None = None,
    step: str | None = None,
    detail: dict[str, Any] | None = None,
) -> EventValues:
    """One line of the events table; `detail` is stored as sorted JSON, or NULL when empty."""
    return {
        "run_id": run_id,
        "row_pk": row_pk,
        "kind": kind,
        "step": step,
        "detail_json": json.dumps(detail, sort_keys=True) if detail else None,
        "at": at,
    }


def append_events(db: Connection | Session, events: Sequence[EventValues]) -> None:
    """Insert `events` in the caller's transaction (one statement, however many)."""
    if events:
        db.execute(EVENT_INSERT, list(events))
