"""Alembic migrations, run by `vidgate migrate` and on `vidgate serve` start."""

from __future__ import annotations

import contextlib
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from vidgate.db import Database

_HERE = Path(__file__).resolve().parent
# Any constant works; it only has to be the same for every vidgate process on one database.
_PG_LOCK_ID = 0x76696467


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_HERE))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(database: Database, revision: str = "head") -> None:
    """Bring the schema to `revision`; safe when several processes start at once."""
    with database.engine.connect() as conn:
        if database.engine.dialect.name == "postgresql":
            # Serialize concurrent migrators; the second one finds nothing left to do.
            conn.execute(sa.text("SELECT pg_advisory_lock(:id)"), {"id": _PG_LOCK_ID})
            conn.commit()
        try:
            config = alembic_config(database.url)
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
            conn.commit()
        finally:
            if database.engine.dialect.name == "postgresql":
                # If the connection died (e.g. the server restarted), the lock died with it; an
                # error here must not hide the one that brought us here.
                with contextlib.suppress(sa.exc.DBAPIError):
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:id)"), {"id": _PG_LOCK_ID})
                    conn.commit()


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(database: Database) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with database.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
