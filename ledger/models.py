"""The ledger's tables (SQLAlchemy 2 typed models).

The schema holds the invariants, not only the Python around it: every state is a CHECK built
from the enums of `records`, every stable key a unique index, every step record and event a
foreign key to its row or run. The migrations in `migrations/` must produce exactly this
schema (a test compares them).

The annotations are evaluated as the classes are made (no `from __future__ import
annotations`): SQLAlchemy reads each `Mapped[...]` as an object instead of evaluating its text,
which made importing this module, as every command that opens a ledger does, a sixth slower.
"""

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ledger.plan_diff import PlanAction, PlanOutcome
from ledger.records import EntityStatus, RowStatus, StepName, StepStatus

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _in(column: str, values: Iterable[StrEnum]) -> str:
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Run(Base):
    """One ingested file. The same bytes always map to the same run."""

    __tablename__ = "runs"
    __table_args__ = (
        CheckConstraint("total_rows >= 0 AND accepted_rows >= 0 AND rejected_rows >= 0", "counts"),
        CheckConstraint("accepted_rows + rejected_rows = total_rows", "counts_add_up"),
        CheckConstraint("batch_size > 0", "batch_size"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    input_hash: Mapped[str] = mapped_column(String(64), unique=True)
    file_name: Mapped[str] = mapped_column(Text)
    pipeline_version: Mapped[str] = mapped_column(String(20))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    total_rows: Mapped[int] = mapped_column(Integer)
    accepted_rows: Mapped[int] = mapped_column(Integer)
    rejected_rows: Mapped[int] = mapped_column(Integer)
    batch_size: Mapped[int] = mapped_column(Integer)
    # The file's own header row as JSON, so exports can give rows back in the input's columns.
    headers_json: Mapped[str] = mapped_column(Text)


class Row(Base):
    """One data row of a run, its outcome and its claim."""

    __tablename__ = "rows"
    __table_args__ = (
        UniqueConstraint("run_id", "row_id"),
        CheckConstraint(_in("status", RowStatus), "status"),
        CheckConstraint("row_id >= 1", "row_id"),
        CheckConstraint(
            f"(status = '{RowStatus.REJECTED}') = (batch_id IS NULL)", "batch_only_for_accepted"
        ),
        CheckConstraint(
            f"(status = '{RowStatus.REJECTED}') = (normalized_json IS NULL)",
            "normalized_only_for_accepted",
        ),
        CheckConstraint(
            f"({_in('status', (RowStatus.PENDING, RowStatus.REJECTED))}) "
            "= (reason_code IS NOT NULL)",
            "reason_iff_failed",
        ),
        CheckConstraint(
            f"(status = '{RowStatus.CLAIMED}') "
            "= (claim_token IS NOT NULL AND lease_expires_at IS NOT NULL)",
            "claim_iff_claimed",
        ),
        Index("ix_rows_run_status_batch", "run_id", "status", "batch_id", "row_id"),
        Index("ix_rows_run_finished", "run_id", "finished_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    row_id: Mapped[int] = mapped_column(Integer)
    batch_id: Mapped[int | None] = mapped_column(Integer)
    raw_json: Mapped[str] = mapped_column(Text)
    normalized_json: Mapped[str | None] = mapped_column(Text)
    email: Mapped[str | None] = mapped_column(String(320))
    location_name: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(10))
    reason_code: Mapped[str | None] = mapped_column(String(40))
    reason_message: Mapped[str | None] = mapped_column(Text)
    reason_field: Mapped[str | None] = mapped_column(String(80))
    reason_step: Mapped[str | None] = mapped_column(String(20))
    http_status: Mapped[int | None] = mapped_column(Integer)
    claim_token: Mapped[str | None] = mapped_column(String(64))
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class StepRecord(Base):
    """The latest state of one step of one row."""

    __tablename__ = "steps"
    __table_args__ = (
        UniqueConstraint("row_pk", "step"),
        CheckConstraint(_in("step", StepName), "step"),
        CheckConstraint(_in("status", StepStatus), "status"),
        CheckConstraint("attempts >= 0", "attempts"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    row_pk: Mapped[int] = mapped_column(ForeignKey("rows.id", ondelete="CASCADE"))
    step: Mapped[str] = mapped_column(String(20))
    entity_type: Mapped[str] = mapped_column(String(20))
    entity_key: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(10))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    http_status: Mapped[int | None] = mapped_column(Integer)
    remote_id: Mapped[str | None] = mapped_column(Text)
    message: Mapped[str | None] = mapped_column(Text)
    tracking_id: Mapped[str | None] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SharedEntity(Base):
    """An entity many rows share (a location, the calling license), provisioned once per run.

    A worker claims it (status `claimed`, token, lease) before provisioning, so that two
    workers never create the same location; the others wait for `ready` and reuse `remote_id`.
    """

    __tablename__ = "entities"
    __table_args__ = (
        UniqueConstraint("run_id", "entity_type", "entity_key"),
        CheckConstraint(_in("status", EntityStatus), "status"),
        CheckConstraint(
            f"status <> '{EntityStatus.READY}' OR remote_id IS NOT NULL", "ready_has_id"
        ),
        CheckConstraint(
            f"(status = '{EntityStatus.CLAIMED}') "
            "= (claim_token IS NOT NULL AND lease_expires_at IS NOT NULL)",
            "claim_iff_claimed",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    entity_type: Mapped[str] = mapped_column(String(20))
    entity_key: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(10))
    remote_id: Mapped[str | None] = mapped_column(Text)
    calling_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # What the file asks for (for a location: its LocationSpec as JSON).
    desired_json: Mapped[str | None] = mapped_column(Text)
    # What provisioning found and did, for the row that did it: created / updated / unchanged.
    outcome_json: Mapped[str | None] = mapped_column(Text)
    reason_code: Mapped[str | None] = mapped_column(String(40))
    reason_message: Mapped[str | None] = mapped_column(Text)
    http_status: Mapped[int | None] = mapped_column(Integer)
    claim_token: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Event(Base):
    """Append-only history, written in the same transaction as the change it records."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_run_at", "run_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    row_pk: Mapped[int | None] = mapped_column(ForeignKey("rows.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(40))
    step: Mapped[str | None] = mapped_column(String(20))
    detail_json: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class WorkerStats(Base):
    """Request counters per worker process and run, refreshed after every batch."""

    __tablename__ = "worker_stats"
    __table_args__ = (UniqueConstraint("run_id", "worker_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    worker_id: Mapped[str] = mapped_column(String(200))
    requests: Mapped[int] = mapped_column(Integer, default=0)
    retries: Mapped[int] = mapped_column(Integer, default=0)
    throttled: Mapped[int] = mapped_column(Integer, default=0)
    wait_s: Mapped[float] = mapped_column(Float, default=0.0)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RunPlan(Base):
    """The latest `ledger plan` of a run: when it was made, whether it went through every ready
    row, and its org-level checks and counts (JSON). A new plan of the run replaces it."""

    __tablename__ = "plans"
    __table_args__ = (
        UniqueConstraint("run_id"),
        CheckConstraint(_in("outcome", PlanOutcome), "outcome"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    outcome: Mapped[str] = mapped_column(String(20))
    made_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    summary_json: Mapped[str | None] = mapped_column(Text)


class PlanLine(Base):
    """One line of a plan: what `work` would do to one step of one row, field by field (one
    line per field that changes; one line without a field when nothing does)."""

    __tablename__ = "plan_lines"
    __table_args__ = (
        CheckConstraint(_in("step", StepName), "step"),
        CheckConstraint(_in("action", PlanAction), "action"),
        CheckConstraint(
            f"(action = '{PlanAction.BLOCKED}') = (reason_code IS NOT NULL)", "reason_iff_blocked"
        ),
        Index("ix_plan_lines_plan_row", "plan_id", "row_pk"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id", ondelete="CASCADE"))
    row_pk: Mapped[int] = mapped_column(ForeignKey("rows.id", ondelete="CASCADE"))
    step: Mapped[str] = mapped_column(String(20))
    action: Mapped[str] = mapped_column(String(10))
    field: Mapped[str | None] = mapped_column(Text)
    before: Mapped[str | None] = mapped_column(Text)
    after: Mapped[str | None] = mapped_column(Text)
    reason_code: Mapped[str | None] = mapped_column(String(40))
    message: Mapped[str | None] = mapped_column(Text)


class RateShareRecord(Base):
    """One `work` process's latest report on the rate limit it shares with the others.

    One row per Webex base URL (`scope`) and worker, rewritten about once a second while the
    worker sends requests (see `ledger.rate_sharing`); rows unseen for long are deleted.
    """

    __tablename__ = "rate_shares"
    __table_args__ = (
        UniqueConstraint("scope", "worker_id"),
        CheckConstraint("rate_per_s IS NULL OR rate_per_s > 0", "rate_per_s"),
        CheckConstraint("limit_per_s IS NULL OR limit_per_s > 0", "limit_per_s"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scope: Mapped[str] = mapped_column(Text)
    worker_id: Mapped[str] = mapped_column(String(200))
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    rate_per_s: Mapped[float | None] = mapped_column(Float)
    limit_per_s: Mapped[float | None] = mapped_column(Float)
    throttled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    used_per_s: Mapped[float | None] = mapped_column(Float)
