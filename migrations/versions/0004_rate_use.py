"""rate use: each work process also reports the requests it sends per second, so that the
others may pace on the part of its share it leaves unused

Revision ID: 0004_rate_use
Revises: 0003_rate_shares
Create Date: 2026-12-01 13:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_rate_use"
down_revision = "0003_rate_shares"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("rate_shares", sa.Column("used_per_s", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rate_shares") as batch:
        batch.drop_column("used_per_s")
