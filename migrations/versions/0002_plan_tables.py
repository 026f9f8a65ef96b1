"""plan tables: the latest `ledger plan` of each run and its lines, and the view v_plan

Revision ID: 0002_plan
Revises: 0001
Create Date: 2026-12-01 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_plan"
down_revision = "0001"
branch_labels = None
depends_on = None

# One line per field a step of a row would change (or per step, when none would), of the
# latest plan of each run; documented in docs/sql.md.
V_PLAN = """
    SELECT p.run_id, p.id AS plan_id, p.outcome AS plan_outcome, p.made_at, r.row_id,
           r.batch_id, r.email, r.location_name, l.step, l.action, l.field, l.before, l.after,
           l.reason_code, l.message
    FROM plan_lines l
    JOIN plans p ON p.id = l.plan_id
    JOIN rows r ON r.id = l.row_pk"""


def upgrade() -> None:
    op.create_table(
        "plans",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("made_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("summary_json", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "outcome IN ('incomplete', 'nothing_to_do', 'changes_pending', 'blocked')",
            name=op.f("ck_plans_outcome"),
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_plans_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plans")),
        sa.UniqueConstraint("run_id", name=op.f("uq_plans_run_id")),
    )
    op.create_table(
        "plan_lines",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("plan_id", sa.Integer(), nullable=False),
        sa.Column("row_pk", sa.Integer(), nullable=False),
        sa.Column("step", sa.String(length=20), nullable=False),
        sa.Column("action", sa.String(length=10), nullable=False),
        sa.Column("field", sa.Text(), nullable=True),
        sa.Column("before", sa.Text(), nullable=True),
        sa.Column("after", sa.Text(), nullable=True),
        sa.Column("reason_code", sa.String(length=40), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "(action = 'blocked') = (reason_code IS NOT NULL)",
            name=op.f("ck_plan_lines_reason_iff_blocked"),
        ),
        sa.CheckConstraint(
            "action IN ('create', 'update', 'unchanged', 'blocked')",
            name=op.f("ck_plan_lines_action"),
        ),
        sa.CheckConstraint(
            "step IN ('location', 'calling', 'number', 'user', 'settings')",
            name=op.f("ck_plan_lines_step"),
        ),
        sa.ForeignKeyConstraint(
            ["plan_id"], ["plans.id"], name=op.f("fk_plan_lines_plan_id_plans"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["row_pk"], ["rows.id"], name=op.f("fk_plan_lines_row_pk_rows"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plan_lines")),
    )
    with op.batch_alter_table("plan_lines", schema=None) as batch_op:
        batch_op.create_index("ix_plan_lines_plan_row", ["plan_id", "row_pk"], unique=False)
    op.execute(f"CREATE VIEW v_plan AS {V_PLAN}")


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS v_plan")
    with op.batch_alter_table("plan_lines", schema=None) as batch_op:
        batch_op.drop_index("ix_plan_lines_plan_row")
    op.drop_table("plan_lines")
    op.drop_table("plans")
