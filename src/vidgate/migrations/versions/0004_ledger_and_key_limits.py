"""ledger and per-key limits

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("expires_at", sa.Float(), nullable=True))
        batch.add_column(sa.Column("allowed_models", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("rpm", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("max_in_flight", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("balance", sa.Numeric(18, 6), nullable=True))
        batch.add_column(sa.Column("used", sa.Numeric(18, 6), nullable=False, server_default="0"))
        batch.create_check_constraint("balance_not_negative", "balance IS NULL OR balance >= 0")
    op.create_table(
        "ledger",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "key_id",
            sa.String(length=40),
            sa.ForeignKey("api_keys.id", name="fk_ledger_key_id_api_keys"),
            nullable=False,
        ),
        sa.Column("task_id", sa.String(length=40), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("amount", sa.Numeric(18, 6), nullable=False),
        sa.Column("balance_after", sa.Numeric(18, 6), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("note", sa.String(length=200), nullable=True),
        sa.CheckConstraint("kind IN ('topup', 'hold', 'capture', 'release')", name="ck_ledger_kind_valid"),
        sa.CheckConstraint("amount >= 0", name="ck_ledger_amount_not_negative"),
        sa.CheckConstraint("(kind = 'topup') = (task_id IS NULL)", name="ck_ledger_task_rows_have_task"),
        sa.UniqueConstraint("task_id", "kind", name="uq_ledger_task_id_kind"),
    )
    op.create_index("ix_ledger_key_created", "ledger", ["key_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_ledger_key_created", table_name="ledger")
    op.drop_table("ledger")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_constraint("balance_not_negative", type_="check")
        for column in ("used", "balance", "max_in_flight", "rpm", "allowed_models", "expires_at"):
            batch.drop_column(column)
