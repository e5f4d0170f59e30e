"""per-key request rate state

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_limits",
        sa.Column("bucket", sa.String(length=80), nullable=False),
        sa.Column("tat", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bucket", name="pk_rate_limits"),
    )


def downgrade() -> None:
    op.drop_table("rate_limits")
