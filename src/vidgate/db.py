"""Schema (SQLAlchemy Core) and the database handle, for SQLite and PostgreSQL alike.

Times are UNIX seconds as floats: one representation on both dialects, cheap to compare in SQL.
The CHECK constraints repeat `status.py` so that no writer, however buggy, stores an impossible row.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool, Pool

from vidgate.status import Phase, Status

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _in(column: str, values: list[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


#: Python None must be SQL NULL (not JSON "null") so the CHECK constraints see it.
JSON = sa.JSON(none_as_null=True)

_STATUSES = [s.value for s in Status]
_PHASES = [p.value for p in Phase]

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("last_used_at", sa.Float),
    sa.Column("revoked_at", sa.Float),
    sa.Column("expires_at", sa.Float),
    #: Model ids this key may use; NULL means all.
    sa.Column("allowed_models", JSON),
    #: Requests per minute; NULL means no limit.
    sa.Column("rpm", sa.Integer),
    #: Tasks pending or processing at once; NULL means no limit.
    sa.Column("max_in_flight", sa.Integer),
    #: Money available for new tasks (top-ups - captures - open holds); NULL means unlimited.
    sa.Column("balance", sa.Numeric(18, 6)),
    sa.Column("used", sa.Numeric(18, 6), nullable=False, server_default="0"),
    #: `whsec_` + base64 key that signs this key's webhooks; kept as is (signing needs it), shown once.
    sa.Column("webhook_secret", sa.String(80)),
    sa.CheckConstraint("balance IS NULL OR balance >= 0", name="balance_not_negative"),
)

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("key_id", sa.String(40), sa.ForeignKey("api_keys.id"), nullable=False),
    sa.Column("model", sa.String(64), nullable=False),
    sa.Column("mode", sa.String(32), nullable=False),
    sa.Column("request", JSON, nullable=False),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("phase", sa.String(32), nullable=False),
    sa.Column("progress", sa.Integer, nullable=False, server_default="0"),
    sa.Column("estimated_time", sa.Integer, nullable=False),
    sa.Column("cost", sa.Numeric(18, 6), nullable=False, server_default="0"),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float),
    sa.Column("completed_at", sa.Float),
    sa.Column("expires_at", sa.Float),
    sa.Column("updated_at", sa.Float, nullable=False),
    #: After this, a task still running is reconciled with its upstream once, then failed.
    sa.Column("deadline_at", sa.Float),
    #: The owner asked to cancel a task a worker holds; the worker stops it at its next step.
    sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    # Queue and lease: a task is due when next_run_at <= now and no live lease holds it.
    sa.Column("next_run_at", sa.Float),
    sa.Column("lease_owner", sa.String(64)),
    sa.Column("lease_until", sa.Float),
    sa.Column("lease_token", sa.Integer, nullable=False, server_default="0"),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    # Upstream handle (relay providers) and outcome.
    sa.Column("upstream_id", sa.String(128)),
    sa.Column("upstream_state", JSON),
    sa.Column("result", JSON),
    sa.Column("error", JSON),
    # Idempotent submits: the same key + Idempotency-Key replays; request_hash tells a reuse apart.
    sa.Column("idempotency_key", sa.String(191)),
    sa.Column("request_hash", sa.String(64), nullable=False),
    #: Where state changes are POSTed (signed webhooks, `webhooks.py`); NULL: none.
    sa.Column("callback_url", sa.Text),
    sa.CheckConstraint(_in("status", _STATUSES), name="status_valid"),
    sa.CheckConstraint(_in("phase", _PHASES), name="phase_valid"),
    sa.CheckConstraint("progress >= 0 AND progress <= 100", name="progress_range"),
    sa.CheckConstraint(
        "status <> 'completed' OR (result IS NOT NULL AND progress = 100)", name="completed_has_result"
    ),
    sa.CheckConstraint("status <> 'failed' OR error IS NOT NULL", name="failed_has_error"),
    sa.CheckConstraint("status = 'completed' OR progress < 100", name="progress_below_100_until_done"),
    sa.CheckConstraint(
        "(status IN ('completed', 'failed', 'cancelled')) = (completed_at IS NOT NULL)",
        name="terminal_has_completed_at",
    ),
    sa.UniqueConstraint("key_id", "idempotency_key"),
    sa.Index("ix_tasks_due", "status", "next_run_at"),
    sa.Index("ix_tasks_key_created", "key_id", "created_at"),
)

task_events = sa.Table(
    "task_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("task_id", sa.String(40), sa.ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("from_status", sa.String(16)),
    sa.Column("to_status", sa.String(16), nullable=False),
    sa.Column("phase", sa.String(32), nullable=False),
    sa.Column("worker", sa.String(64)),
    sa.Column("detail", JSON),
    sa.Index("ix_task_events_task", "task_id", "id"),
)

#: The webhook outbox: one row per task and event, written in the transaction of the state change
#: and sent by the workers' dispatcher (`webhook_dispatch.py`); `id` is the `webhook-id` header.
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("task_id", sa.String(40), sa.ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
    sa.Column("key_id", sa.String(40), nullable=False),
    sa.Column("event", sa.String(32), nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    #: When the current round of attempts began (the event, or the last redeliver): retries end
    #: a retry window after it.
    sa.Column("queued_at", sa.Float, nullable=False),
    sa.Column("next_attempt_at", sa.Float),
    sa.Column("lease_owner", sa.String(64)),
    sa.Column("lease_until", sa.Float),
    #: Attempts started; also the fencing token of an attempt's outcome write.
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_attempt_at", sa.Float),
    sa.Column("last_status_code", sa.Integer),
    sa.Column("last_error", sa.String(300)),
    sa.Column("delivered_at", sa.Float),
    #: The signed body, fixed at the first attempt so every retry sends the same bytes.
    sa.Column("payload", sa.Text),
    sa.CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="status_valid"),
    sa.Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    sa.Index("ix_webhook_deliveries_task", "task_id", "event"),
)

#: One row per finished delivery attempt: the delivery log.
webhook_attempts = sa.Table(
    "webhook_attempts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "delivery_id",
        sa.String(40),
        sa.ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("duration_ms", sa.Integer, nullable=False),
    sa.Column("status_code", sa.Integer),
    sa.Column("error", sa.String(300)),
    sa.Column("response", sa.String(300)),
    sa.Index("ix_webhook_attempts_delivery", "delivery_id", "id"),
)

#: Money movements: one row per task and kind, written in the transaction of the state change.
ledger = sa.Table(
    "ledger",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key_id", sa.String(40), sa.ForeignKey("api_keys.id"), nullable=False),
    sa.Column("task_id", sa.String(40)),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("amount", sa.Numeric(18, 6), nullable=False),
    sa.Column("balance_after", sa.Numeric(18, 6)),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("note", sa.String(200)),
    sa.CheckConstraint("kind IN ('topup', 'hold', 'capture', 'release')", name="kind_valid"),
    sa.CheckConstraint("amount >= 0", name="amount_not_negative"),
    sa.CheckConstraint("(kind = 'topup') = (task_id IS NULL)", name="task_rows_have_task"),
    sa.UniqueConstraint("task_id", "kind"),
    sa.Index("ix_ledger_key_created", "key_id", "created_at"),
)

uploads = sa.Table(
    "uploads",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("key_id", sa.String(40), sa.ForeignKey("api_keys.id"), nullable=False),
    sa.Column("storage_key", sa.String(255), nullable=False, unique=True),
    sa.Column("filename", sa.String(255), nullable=False),
    sa.Column("content_type", sa.String(64), nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)

#: Per-key request rate state (`ratelimit.py`, GCRA): when the bucket's next request is due, in
#: integer microseconds. One row per rate-limited key, so it never needs cleaning.
rate_limits = sa.Table(
    "rate_limits",
    metadata,
    sa.Column("bucket", sa.String(80), primary_key=True),
    sa.Column("tat", sa.BigInteger, nullable=False),
)

#: Small server-wide values, such as the generated URL-signing secret.
meta = sa.Table(
    "meta",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)


class Record(dict[str, Any]):
    """A row as a dict that also allows attribute access, like SQLAlchemy rows."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def normalize_url(url: str) -> str:
    """Accept plain `postgresql://` URLs and use the psycopg 3 driver for them."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


class Database:
    """One engine plus transaction helpers that take the right lock on each dialect."""

    def __init__(self, url: str, *, echo: bool = False, pool_size: int = 10, max_overflow: int = 20) -> None:
        self.url = normalize_url(url)
        self.engine: Engine = _make_engine(self.url, echo=echo, pool=(pool_size, max_overflow))
        self._local = threading.local()
        self._hot: Engine | None = None
        self._compiled: dict[int, tuple[str, tuple[str, ...], dict[str, Any]]] = {}

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    def read_one(self, statement: sa.Select[Any], params: dict[str, Any]) -> Any:
        """One row from one prebuilt SELECT: the task polling hot path. Rows allow `row.column`.

        On SQLite the statement, compiled once by SQLAlchemy, runs straight on the driver over a
        connection kept per thread: a lone SELECT is atomic by itself, and at a few microseconds
        per query, pool checkouts and result wrappers would cost several times the query.
        JSON columns come back as text here (`tasks.decode_json` reads both forms).
        On PostgreSQL it is an ordinary pooled read.
        """
        if not self.is_sqlite:
            # Autocommit: one statement needs no BEGIN/COMMIT round trips.
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                return conn.execute(statement, params).first()
        compiled = self._compiled.get(id(statement))
        if compiled is None:
            c = statement.compile(dialect=self.engine.dialect)
            compiled = (str(c), tuple(c.positiontup or ()), dict(c.params))
            self._compiled[id(statement)] = compiled
        sql, names, defaults = compiled
        raw = getattr(self._local, "raw", None)
        if raw is None:
            # Its own unpooled connection per thread: kept for the thread's life, it must not
            # hold one of the shared pool's connections.
            raw = self._hot_engine().raw_connection()
            self._local.raw = raw
        try:
            args = tuple(params[n] if n in params else defaults[n] for n in names)
            driver: Any = raw.driver_connection
            cursor = driver.execute(sql, args)
            values = cursor.fetchone()
        except Exception:
            self._local.raw = None
            raw.close()
            raise
        if values is None:
            return None
        return Record(zip((d[0] for d in cursor.description), values, strict=True))

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction; on SQLite `BEGIN IMMEDIATE` takes the write lock up front, so a
        read-then-write transaction never fails to upgrade (SQLITE_BUSY despite busy_timeout)."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(vidgate_immediate=True)
            with conn.begin():
                yield conn

    def _hot_engine(self) -> Engine:
        if self._hot is None:
            self._hot = _make_engine(self.url, echo=False, poolclass=NullPool)
        return self._hot

    def dispose(self) -> None:
        self.engine.dispose()
        if self._hot is not None:
            self._hot.dispose()


#: A pooled connection idle longer than this is pinged before use; one used more recently is not.
PING_AFTER_IDLE_SECONDS = 1.0


def _ping_when_idle(engine: Engine) -> None:
    """Pessimistic disconnect handling without a round trip per checkout.

    `pool_pre_ping` pings on every checkout: two extra round trips per submit. Here only a
    connection that sat idle is pinged (after a database restart, the pool's idle connections are
    dead); a connection in steady use is not, and if the server dies under it the failing statement
    makes SQLAlchemy invalidate the whole pool.
    """

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            dbapi_conn.execute("SELECT 1")
            if not dbapi_conn.autocommit:
                dbapi_conn.rollback()
        except Exception as exc:
            # The pool discards this connection and checks out (or opens) another one.
            raise sa.exc.DisconnectionError() from exc


def _make_engine(
    url: str, *, echo: bool, poolclass: type[Pool] | None = None, pool: tuple[int, int] = (10, 20)
) -> Engine:
    if not url.startswith("sqlite"):
        engine = sa.create_engine(url, echo=echo, pool_size=pool[0], max_overflow=pool[1])
        _ping_when_idle(engine)
        return engine

    options: dict[str, Any] = {"poolclass": poolclass} if poolclass is not None else {}
    engine = sa.create_engine(
        url, echo=echo, connect_args={"check_same_thread": False, "timeout": 30}, **options
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's `begin` event issue BEGIN itself (pysqlite's implicit BEGIN is deferred).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        if options.get("vidgate_no_begin"):
            return
        conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get("vidgate_immediate") else "BEGIN")

    return engine
