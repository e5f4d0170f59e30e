"""The PostgreSQL pool's disconnect handling: a connection that sat idle is pinged before use, so
one killed behind the pool's back (a database restart, an idle timeout in a proxy) is replaced
without the caller seeing an error; a connection in steady use is not pinged."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from vidgate import db, keys
from vidgate.db import Database, normalize_url

from .conftest import PG_ADMIN_URL


def _kill_backends(database: Database) -> int:
    """Terminate every server process serving `database` (what a restart does to a pool)."""
    name = database.engine.url.database
    admin = sa.create_engine(normalize_url(PG_ADMIN_URL), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as conn:
            return len(
                conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": name},
                ).all()
            )
    finally:
        admin.dispose()


def _pooled_backend(database: Database) -> int:
    with database.read() as conn:
        return int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())


def test_idle_connection_killed_behind_the_pool_is_replaced(
    pg: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _pooled_backend(pg)
    assert _kill_backends(pg) >= 1
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)  # every pooled connection counts as idle
    # Reads and writes both go through without an error, on a new server process.
    assert _pooled_backend(pg) != first
    _kill_backends(pg)
    record, _secret = keys.create(pg, "after-kill")
    assert keys.get(pg, record.id) is not None


def test_connection_in_steady_use_is_not_pinged(pg: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection back in use within the idle window gets no ping (that round trip is what the
    window saves): its death surfaces once, then the pool is rebuilt. Also proof that the test
    above exercises the ping, not luck."""
    _pooled_backend(pg)
    _kill_backends(pg)
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 3600.0)
    with pytest.raises(sa.exc.DBAPIError) as caught:
        _pooled_backend(pg)
    assert caught.value.connection_invalidated
    _pooled_backend(pg)  # the pool was invalidated: the next checkout connects afresh
