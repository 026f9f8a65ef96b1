"""rate shares: each work process's report on the rate limit it shares with the others

Revision ID: 0003_rate_shares
Revises: 0002_plan
Create Date: 2026-12-01 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_rate_shares"
down_revision = "0002_plan"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_shares",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("worker_id", sa.String(length=200), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rate_per_s", sa.Float(), nullable=True),
        sa.Column("limit_per_s", sa.Float(), nullable=True),
        sa.Column("throttled_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "limit_per_s IS NULL OR limit_per_s > 0", name=op.f("ck_rate_shares_limit_per_s")
        ),
        sa.CheckConstraint(
            "rate_per_s IS NULL OR rate_per_s > 0", name=op.f("ck_rate_shares_rate_per_s")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rate_shares")),
        sa.UniqueConstraint("scope", "worker_id", name=op.f("uq_rate_shares_scope_worker_id")),
    )


def downgrade() -> None:
    op.drop_table("rate_shares")
