"""initial schema: runs, rows, steps, shared entities, events, worker stats, and the views

Revision ID: 0001
Revises:
Create Date: 2026-11-27 10:55:33.036377
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Views for ad-hoc inspection (`ledger sql`); documented in the README.
VIEWS = {
    "v_progress": """
        SELECT run_id, status AS outcome, COUNT(*) AS row_count
        FROM rows GROUP BY run_id, status""",
    "v_rows": """
        SELECT r.run_id, r.row_id, r.batch_id, r.email, r.location_name, r.status,
               (SELECT s.step FROM steps s WHERE s.row_pk = r.id
                ORDER BY s.updated_at DESC, s.id DESC LIMIT 1) AS last_step,
               r.reason_step AS failed_step, r.reason_code, r.reason_message, r.http_status,
               r.attempts, r.claimed_by, r.lease_expires_at, r.updated_at, r.finished_at
        FROM rows r""",
    "v_steps": """
        SELECT r.run_id, r.row_id, r.batch_id, r.email, s.step, s.entity_type, s.entity_key,
               s.status, s.attempts, s.http_status, s.remote_id, s.message, s.tracking_id,
               s.updated_at
        FROM steps s JOIN rows r ON r.id = s.row_pk""",
    "v_pending": """
        SELECT run_id, row_id, batch_id, email, location_name, reason_step AS step,
               reason_code, reason_message, http_status, updated_at
        FROM rows WHERE status = 'pending'""",
    "v_rejected": """
        SELECT run_id, row_id, reason_code, reason_field AS field, reason_message,
               raw_json AS raw_row
        FROM rows WHERE status = 'rejected'""",
}


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("input_hash", sa.String(length=64), nullable=False),
        sa.Column("file_name", sa.Text(), nullable=False),
        sa.Column("pipeline_version", sa.String(length=20), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("total_rows", sa.Integer(), nullable=False),
        sa.Column("accepted_rows", sa.Integer(), nullable=False),
        sa.Column("rejected_rows", sa.Integer(), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("headers_json", sa.Text(), nullable=False),
        sa.CheckConstraint(
            "accepted_rows + rejected_rows = total_rows", name=op.f("ck_runs_counts_add_up")
        ),
        sa.CheckConstraint("batch_size > 0", name=op.f("ck_runs_batch_size")),
        sa.CheckConstraint(
            "total_rows >= 0 AND accepted_rows >= 0 AND rejected_rows >= 0",
            name=op.f("ck_runs_counts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
        sa.UniqueConstraint("input_hash", name=op.f("uq_runs_input_hash")),
    )
    op.create_table(
        "entities",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("entity_type", sa.String(length=20), nullable=False),
        sa.Column("entity_key", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("remote_id", sa.Text(), nullable=True),
        sa.Column("calling_enabled", sa.Boolean(), nullable=False),
        sa.Column("desired_json", sa.Text(), nullable=True),
        sa.Column("outcome_json", sa.Text(), nullable=True),
        sa.Column("reason_code", sa.String(length=40), nullable=True),
        sa.Column("reason_message", sa.Text(), nullable=True),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("claim_token", sa.String(length=64), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "(status = 'claimed') = (claim_token IS NOT NULL AND lease_expires_at IS NOT NULL)",
            name=op.f("ck_entities_claim_iff_claimed"),
        ),
        sa.CheckConstraint(
            "status <> 'ready' OR remote_id IS NOT NULL", name=op.f("ck_entities_ready_has_id")
        ),
        sa.CheckConstraint(
            "status IN ('new', 'claimed', 'ready', 'failed')", name=op.f("ck_entities_status")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_entities_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_entities")),
        sa.UniqueConstraint(
            "run_id",
            "entity_type",
            "entity_key",
            name=op.f("uq_entities_run_id_entity_type_entity_key"),
        ),
    )
    op.create_table(
        "rows",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("row_id", sa.Integer(), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=True),
        sa.Column("raw_json", sa.Text(), nullable=False),
        sa.Column("normalized_json", sa.Text(), nullable=True),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("location_name", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("reason_code", sa.String(length=40), nullable=True),
        sa.Column("reason_message", sa.Text(), nullable=True),
        sa.Column("reason_field", sa.String(length=80), nullable=True),
        sa.Column("reason_step", sa.String(length=20), nullable=True),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("claim_token", sa.String(length=64), nullable=True),
        sa.Column("claimed_by", sa.String(length=200), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "(status = 'claimed') = (claim_token IS NOT NULL AND lease_expires_at IS NOT NULL)",
            name=op.f("ck_rows_claim_iff_claimed"),
        ),
        sa.CheckConstraint(
            "(status = 'rejected') = (batch_id IS NULL)",
            name=op.f("ck_rows_batch_only_for_accepted"),
        ),
        sa.CheckConstraint(
            "(status = 'rejected') = (normalized_json IS NULL)",
            name=op.f("ck_rows_normalized_only_for_accepted"),
        ),
        sa.CheckConstraint(
            "(status IN ('pending', 'rejected')) = (reason_code IS NOT NULL)",
            name=op.f("ck_rows_reason_iff_failed"),
        ),
        sa.CheckConstraint(
            "status IN ('ready', 'claimed', 'success', 'pending', 'rejected')",
            name=op.f("ck_rows_status"),
        ),
        sa.CheckConstraint("row_id >= 1", name=op.f("ck_rows_row_id")),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_rows_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rows")),
        sa.UniqueConstraint("run_id", "row_id", name=op.f("uq_rows_run_id_row_id")),
    )
    with op.batch_alter_table("rows", schema=None) as batch_op:
        batch_op.create_index("ix_rows_run_finished", ["run_id", "finished_at"], unique=False)
        batch_op.create_index(
            "ix_rows_run_status_batch", ["run_id", "status", "batch_id", "row_id"], unique=False
        )

    op.create_table(
        "worker_stats",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.String(length=200), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("throttled", sa.Integer(), nullable=False),
        sa.Column("wait_s", sa.Float(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_worker_stats_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_worker_stats")),
        sa.UniqueConstraint("run_id", "worker_id", name=op.f("uq_worker_stats_run_id_worker_id")),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("row_pk", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("step", sa.String(length=20), nullable=True),
        sa.Column("detail_json", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["row_pk"], ["rows.id"], name=op.f("fk_events_row_pk_rows"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_events_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_run_at", ["run_id", "at"], unique=False)

    op.create_table(
        "steps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("row_pk", sa.Integer(), nullable=False),
        sa.Column("step", sa.String(length=20), nullable=False),
        sa.Column("entity_type", sa.String(length=20), nullable=False),
        sa.Column("entity_key", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("remote_id", sa.Text(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("tracking_id", sa.String(length=200), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('started', 'created', 'updated', 'unchanged', 'skipped', 'failed')",
            name=op.f("ck_steps_status"),
        ),
        sa.CheckConstraint(
            "step IN ('location', 'calling', 'number', 'user', 'settings')",
            name=op.f("ck_steps_step"),
        ),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_steps_attempts")),
        sa.ForeignKeyConstraint(
            ["row_pk"], ["rows.id"], name=op.f("fk_steps_row_pk_rows"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_steps")),
        sa.UniqueConstraint("row_pk", "step", name=op.f("uq_steps_row_pk_step")),
    )
    for name, body in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {body}")


def downgrade() -> None:
    for name in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.drop_table("steps")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_run_at")

    op.drop_table("events")
    op.drop_table("worker_stats")
    with op.batch_alter_table("rows", schema=None) as batch_op:
        batch_op.drop_index("ix_rows_run_status_batch")
        batch_op.drop_index("ix_rows_run_finished")

    op.drop_table("rows")
    op.drop_table("entities")
    op.drop_table("runs")
