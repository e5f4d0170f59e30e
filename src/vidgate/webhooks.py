"""Signed webhooks, the outbox side: callback URLs, signing secrets and the deliveries table.

A task submitted with `callback_url` gets one delivery row per event, inserted by `tasks._event`
in the very transaction that changes the task's status: a state change that rolls back leaves no
delivery, and one that commits cannot lose its delivery to a crash. The workers' dispatcher
(`webhook_dispatch.py`) leases due rows, POSTs them and records every attempt here.

Events (each sent at most once per task; a redeliver resends the same one):
  task.processing  the first time a worker starts the task
  task.completed   the result is ready
  task.failed      the task failed (its `error` says why)
  task.cancelled   the task was cancelled
The submit answer already says `pending`; a task that goes back to the queue for a retry sends
nothing (that is an internal step).
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import re
import secrets
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from vidgate import db, ids, netguard
from vidgate.errors import InvalidRequest

D = db.webhook_deliveries
A = db.webhook_attempts

#: Task status -> the event a callback receives when a task enters it.
EVENTS = {
    "processing": "task.processing",
    "completed": "task.completed",
    "failed": "task.failed",
    "cancelled": "task.cancelled",
}
MAX_URL_LENGTH = 2048
PARAM = "callback_url"
_SPACE_OR_CONTROL = re.compile(r"[\x00-\x20\x7f]")
#: An ASCII host name or IPv4 address (IDNA names arrive here as punycode).
_HOST_NAME = re.compile(r"[A-Za-z0-9._-]+")


def new_secret() -> str:
    """A signing secret as Standard Webhooks writes them: `whsec_` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


# --- the callback URL on submit --------------------------------------------------------------------


def split_callback(body: Any) -> tuple[Any, Any]:
    """(the body without `callback_url`, its raw value or None): the catalog knows only model
    fields, while the idempotency hash keeps covering the whole body."""
    if not isinstance(body, dict) or PARAM not in body:
        return body, None
    fields = dict(body)
    return fields, fields.pop(PARAM)


def check_callback_url(value: Any, *, allow_private: bool) -> str | None:
    """The callback URL as stored, or InvalidRequest naming `callback_url`.

    Checked here without DNS: type, length, http(s), no credentials, a canonical host that is not
    a literal private, loopback or link-local address (nor `localhost`). Names are resolved and
    their addresses checked again on every delivery, which is what stops rebinding.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest("type_string", param=PARAM)
    if not value.strip():
        raise InvalidRequest("string_empty", param=PARAM)
    if len(value) > MAX_URL_LENGTH:
        raise InvalidRequest("string_too_long", param=PARAM, max=MAX_URL_LENGTH, actual=len(value))
    invalid = InvalidRequest("url_invalid", param=PARAM, actual=value[:200])
    if value.split(":", 1)[0].lower() not in ("http", "https") or _SPACE_OR_CONTROL.search(value):
        raise invalid
    try:
        url = netguard.check_url(value)
    except netguard.FetchFailed:
        raise invalid from None
    except netguard.UrlForbidden as exc:
        raise InvalidRequest("callback_url_refused", param=PARAM, detail=exc.detail) from None
    raw_host = url.raw_host.decode("ascii")
    if ":" not in raw_host and not _HOST_NAME.fullmatch(raw_host):
        raise invalid  # httpx percent-encodes what a host name cannot hold; refuse it instead
    if not allow_private:
        host = url.host.rstrip(".").lower()
        reason = None
        if host == "localhost" or host.endswith(".localhost"):
            reason = f"loopback name {host}"  # RFC 6761: always the loopback interface
        else:
            with contextlib.suppress(ValueError):  # a name: its addresses are vetted when delivering
                reason = netguard.address_forbidden(ipaddress.ip_address(host))
        if reason:
            raise InvalidRequest("callback_url_refused", param=PARAM, detail=reason)
    return value


# --- the outbox ----------------------------------------------------------------------------------


def _record_statement() -> sa.Insert:
    T = db.tasks
    task_id = sa.bindparam("task_id", type_=sa.String)
    event = sa.bindparam("event", type_=sa.String)
    now = sa.bindparam("now", type_=sa.Float)
    seen = sa.select(D.c.id).where(D.c.task_id == task_id, D.c.event == event).exists()
    source = sa.select(
        sa.bindparam("id", type_=sa.String),
        T.c.id,
        T.c.key_id,
        event,
        T.c.callback_url,
        sa.literal("pending"),
        now,
        now,
        now,
    ).where(T.c.id == task_id, T.c.callback_url.is_not(None), ~seen)
    columns = ["id", "task_id", "key_id", "event", "url", "status", "created_at", "queued_at"]
    return D.insert().from_select([*columns, "next_attempt_at"], source)


# Built once with bound parameters: it runs in the transaction of every status change.
_RECORD = _record_statement()


def record(conn: Connection, task_id: str, status: str, now: float) -> None:
    """Queue the event for `status` if the task has a callback and has not had this event yet.

    One INSERT ... SELECT: a task without a callback costs no read round trip."""
    event = EVENTS.get(status)
    if event is None:
        return
    conn.execute(_RECORD, {"id": ids.new_id("msg"), "task_id": task_id, "event": event, "now": now})


def any_due(database: db.Database, now: float | None = None) -> bool:
    """A cheap read first, so that idle dispatchers never take SQLite's write lock."""
    now = time.time() if now is None else now
    with database.read() as conn:
        return conn.execute(sa.select(D.c.id).where(*_due(now)).limit(1)).first() is not None


def _due(now: float) -> list[sa.ColumnElement[bool]]:
    return [
        D.c.status == "pending",
        D.c.next_attempt_at <= now,
        sa.or_(D.c.lease_until.is_(None), D.c.lease_until < now),
    ]


def claim(
    database: db.Database, *, owner: str, limit: int, lease_seconds: float, now: float | None = None
) -> list[Any]:
    """Lease up to `limit` due deliveries (earliest due first), with each key's signing secret.

    The lease stops other workers from sending the same attempt meanwhile; a worker that dies
    mid-attempt leaves a lease that expires, and the attempt is made again (at least once)."""
    now = time.time() if now is None else now
    # Events of one task go out in order: none while an older one of its task is untried or in
    # flight. An older one that failed an attempt holds nothing up while it waits for its retry.
    older = sa.alias(D, "older")
    ahead = (
        sa.select(older.c.id)
        .where(
            older.c.task_id == D.c.task_id,
            older.c.status == "pending",
            older.c.created_at < D.c.created_at,
            sa.or_(older.c.attempts == 0, older.c.lease_until >= now),
        )
        .exists()
    )
    with database.write() as conn:
        rows = conn.execute(
            sa.select(D.c.id)
            .where(*_due(now), ~ahead)
            .order_by(D.c.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        if not rows:
            return []
        chosen = [r.id for r in rows]
        conn.execute(
            D.update()
            .where(D.c.id.in_(chosen))
            .values(lease_owner=owner, lease_until=now + lease_seconds, attempts=D.c.attempts + 1)
        )
        return list(
            conn.execute(
                sa.select(D, db.api_keys.c.webhook_secret)
                .join(db.api_keys, db.api_keys.c.id == D.c.key_id)
                .where(D.c.id.in_(chosen))
            ).all()
        )


def expire_dead_leases(database: db.Database, host: str, alive: Callable[[str], bool]) -> int:
    """Free the leases of this host's dead processes (owners are `host:pid:...`), so that a
    restarted worker makes their interrupted attempts again at once instead of after the lease."""
    with database.read() as conn:
        owners = conn.execute(
            sa.select(D.c.lease_owner).distinct().where(D.c.lease_owner.like(f"{host}:%"))
        ).scalars()
        dead = [o for o in owners if o and not alive(o)]
    if not dead:
        return 0
    with database.write() as conn:
        result = conn.execute(D.update().where(D.c.lease_owner.in_(dead)).values(lease_until=time.time() - 1))
    return int(result.rowcount)


def finish(
    database: db.Database,
    delivery: Any,
    *,
    owner: str,
    started: float,
    duration: float,
    payload: str | None,
    status_code: int | None,
    error: str | None,
    response: str | None,
    retry_at: float | None,
) -> bool:
    """Write an attempt's outcome: delivered (a 2xx), due again at `retry_at`, or failed for good
    (`retry_at` None). Fenced by owner and attempt number: False if the lease was taken over."""
    delivered = status_code is not None and 200 <= status_code < 300
    values: dict[str, Any] = {
        "lease_owner": None,
        "lease_until": None,
        "last_attempt_at": started,
        "last_status_code": status_code,
        "last_error": error,
        "payload": sa.func.coalesce(D.c.payload, payload),  # the first body sent stays
    }
    if delivered:
        values |= {"status": "delivered", "delivered_at": time.time(), "next_attempt_at": None}
    elif retry_at is not None:
        values |= {"next_attempt_at": retry_at}
    else:
        values |= {"status": "failed", "next_attempt_at": None}
    with database.write() as conn:
        result = conn.execute(
            D.update()
            .where(D.c.id == delivery.id, D.c.lease_owner == owner, D.c.attempts == delivery.attempts)
            .values(**values)
        )
        if result.rowcount != 1:
            return False
        conn.execute(
            A.insert().values(
                delivery_id=delivery.id,
                attempt=delivery.attempts,
                at=started,
                duration_ms=int(duration * 1000),
                status_code=status_code,
                error=error,
                response=response,
            )
        )
    return True


# --- the delivery log ----------------------------------------------------------------------------


def for_task(database: db.Database, task_id: str) -> list[tuple[Any, list[Any]]]:
    """The task's deliveries, oldest first, each with its attempts."""
    with database.read() as conn:
        deliveries = conn.execute(
            sa.select(D).where(D.c.task_id == task_id).order_by(D.c.created_at, D.c.id)
        ).all()
        attempts = conn.execute(
            sa.select(A)
            .where(A.c.delivery_id.in_([d.id for d in deliveries]))
            .order_by(A.c.delivery_id, A.c.id)
        ).all()
    by_delivery: dict[str, list[Any]] = {}
    for attempt in attempts:
        by_delivery.setdefault(attempt.delivery_id, []).append(attempt)
    return [(d, by_delivery.get(d.id, [])) for d in deliveries]


def redeliver(database: db.Database, task_id: str, delivery_id: str) -> bool:
    """Send a delivery again now, with the same webhook-id and body, and a fresh retry window.
    False when the task has no such delivery."""
    now = time.time()
    with database.write() as conn:
        result = conn.execute(
            D.update()
            .where(D.c.id == delivery_id, D.c.task_id == task_id)
            .values(status="pending", next_attempt_at=now, queued_at=now, delivered_at=None)
        )
    return result.rowcount == 1
