"""PostgreSQL: NOTIFY workers when tasks become due (LISTEN/NOTIFY wake-up; SQLite has none)

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# Keep in step with vidgate.wakeup.CHANNEL.
_FUNCTION = """
CREATE OR REPLACE FUNCTION vidgate_notify_due() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('vidgate_tasks_due', '');
    RETURN NULL;
END
$$
"""
# A submit (any INSERT), and an unleased task made due now: a callback's poke, a hand-back on
# SIGTERM, a retry without delay. A release for a later poll (next_run_at in the future) and a
# claim (which sets lease_owner) notify nobody. PostgreSQL folds the notifications of one
# transaction into one.
_TRIGGERS = (
    "CREATE TRIGGER tasks_due_on_insert AFTER INSERT ON tasks"
    " FOR EACH STATEMENT EXECUTE FUNCTION vidgate_notify_due()",
    "CREATE TRIGGER tasks_due_on_update AFTER UPDATE OF next_run_at ON tasks FOR EACH ROW"
    " WHEN (NEW.lease_owner IS NULL AND NEW.next_run_at IS NOT NULL"
    " AND NEW.next_run_at <= EXTRACT(EPOCH FROM clock_timestamp()))"
    " EXECUTE FUNCTION vidgate_notify_due()",
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_FUNCTION)
    for statement in _TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS tasks_due_on_update ON tasks")
    op.execute("DROP TRIGGER IF EXISTS tasks_due_on_insert ON tasks")
    op.execute("DROP FUNCTION IF EXISTS vidgate_notify_due()")
