"""The queue's API side: enqueue (with idempotency, the ledger hold and the in-flight cap), reads,
listings, cancel requests and callback pokes, and the task event log every status change writes.

The tasks table is the queue; `leases.py` is the worker side (claims, fencing, lease-guarded
writes). Status changes go through `status.TRANSITIONS` and are guarded again in SQL
(`WHERE status IN (allowed sources)`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from vidgate import db, ids, ledger, webhooks
from vidgate.catalog import VideoRequest
from vidgate.errors import Conflict, NotFound, RateLimited
from vidgate.status import TERMINAL, Phase, Status, check_transition

T = db.tasks


def request_hash(body: Mapping[str, Any]) -> str:
    """A stable hash of the submitted JSON, to tell an idempotent replay from a key reuse."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


# Built once: a statement object caches its compiled form, while `.values(...)` on every call
# would rebuild it and recompute its cache key (a large part of a submit's CPU time).
_INSERT_EVENT = db.task_events.insert()
_INSERT_TASK = T.insert()


def record_event(
    conn: Connection,
    task_id: str,
    source: str | None,
    target: str,
    phase: str,
    *,
    worker: str | None = None,
    detail: dict[str, Any] | None = None,
    now: float | None = None,
    callback: bool | None = None,
) -> None:
    """Record a status change; a change of status also queues the task's webhook (same transaction).
    `callback=False` says the task has no callback URL, which saves the outbox statement."""
    at = now or time.time()
    if source is not None and source != target and callback is not False:
        webhooks.record(conn, task_id, str(target), at)
    conn.execute(
        _INSERT_EVENT,
        {
            "task_id": task_id,
            "at": at,
            "from_status": source,
            "to_status": target,
            "phase": phase,
            "worker": worker,
            "detail": detail,
        },
    )


def create(
    database: db.Database,
    *,
    key_id: str,
    request: VideoRequest,
    body: Mapping[str, Any],
    provider: str,
    estimated_time: int,
    idempotency_key: str | None = None,
    cost: Decimal | float = 0,
    deadline_seconds: float | None = None,
    max_in_flight: int | None = None,
    callback_url: str | None = None,
) -> tuple[Any, bool]:
    """Insert a pending task (the enqueue); returns (row, replayed).

    With an Idempotency-Key, the same key and body return the original task (replayed=True); the
    same key with another body raises Conflict and changes nothing.
    """
    digest = request_hash(body)
    now = time.time()
    for _ in range(2):
        with database.write() as conn:
            if idempotency_key is not None:
                existing = conn.execute(
                    sa.select(T).where(T.c.key_id == key_id, T.c.idempotency_key == idempotency_key)
                ).first()
                if existing is not None:
                    if existing.request_hash != digest:
                        raise Conflict("idempotency_conflict", param="Idempotency-Key", key=idempotency_key)
                    return existing, True
            task_id = ids.new_task_id()
            values = {
                "id": task_id,
                "key_id": key_id,
                "model": request.model,
                "mode": request.mode,
                "request": request.model_dump(mode="json", exclude_none=True),
                "provider": provider,
                "status": Status.PENDING.value,
                "phase": Phase.QUEUED.value,
                "progress": 0,
                "estimated_time": estimated_time,
                "cost": cost,
                "created_at": now,
                "updated_at": now,
                "next_run_at": now,
                "deadline_at": now + deadline_seconds if deadline_seconds else None,
                "idempotency_key": idempotency_key,
                "request_hash": digest,
                "callback_url": callback_url,
            }
            if max_in_flight is not None:
                # Racing submits of one key queue on its row (PostgreSQL; SQLite's BEGIN IMMEDIATE
                # already serializes writers), so two cannot both count the last free slot.
                conn.execute(sa.select(db.api_keys.c.id).where(db.api_keys.c.id == key_id).with_for_update())
                active = conn.execute(
                    sa.select(sa.func.count())
                    .select_from(T)
                    .where(
                        T.c.key_id == key_id, T.c.status.in_([Status.PENDING.value, Status.PROCESSING.value])
                    )
                ).scalar_one()
                if active >= max_in_flight:
                    raise RateLimited("too_many_in_flight", headers={"Retry-After": "5"}, limit=max_in_flight)
            try:
                conn.execute(_INSERT_TASK, values)
            except IntegrityError:
                # A concurrent submit with the same Idempotency-Key won; read its task instead.
                conn.rollback()
                continue
            ledger.hold(conn, key_id=key_id, task_id=task_id, amount=Decimal(str(cost)))
            record_event(conn, task_id, None, Status.PENDING, Phase.QUEUED, now=now)
            # The row is what we just wrote: no need to read it back.
            return db.Record({c.name: values.get(c.name) for c in T.columns}), False
    raise Conflict("idempotency_conflict", param="Idempotency-Key", key=idempotency_key)


def get(database: db.Database, task_id: str, key_id: str | None = None) -> sa.Row[Any] | None:
    """A task; with `key_id`, only if that key owns it (another key's task does not exist for it)."""
    query = sa.select(T).where(T.c.id == task_id)
    if key_id is not None:
        query = query.where(T.c.key_id == key_id)
    with database.read() as conn:
        return conn.execute(query).first()


#: What the task view shows; the request and upstream blobs stay in the database.
VIEW_COLUMNS = (
    T.c.id,
    T.c.model,
    T.c.status,
    T.c.progress,
    T.c.created_at,
    T.c.started_at,
    T.c.completed_at,
    T.c.expires_at,
    T.c.estimated_time,
    T.c.cost,
    T.c.provider,
    T.c.result,
    T.c.error,
)

_BY_ID_AND_KEY_HASH = (
    sa.select(*VIEW_COLUMNS)
    .join(db.api_keys, db.api_keys.c.id == T.c.key_id)
    .where(
        T.c.id == sa.bindparam("task_id"),
        db.api_keys.c.key_hash == sa.bindparam("key_hash"),
        db.api_keys.c.revoked_at.is_(None),
        sa.or_(db.api_keys.c.expires_at.is_(None), db.api_keys.c.expires_at > sa.bindparam("now")),
    )
)


def get_for_key_hash(database: db.Database, task_id: str, key_hash: str) -> Any:
    """One round trip for the hot poll path: the task, if the active key with this hash owns it."""
    return database.read_one(
        _BY_ID_AND_KEY_HASH, {"task_id": task_id, "key_hash": key_hash, "now": time.time()}
    )


def events(database: db.Database, task_id: str) -> list[sa.Row[Any]]:
    with database.read() as conn:
        return list(
            conn.execute(
                sa.select(db.task_events)
                .where(db.task_events.c.task_id == task_id)
                .order_by(db.task_events.c.id)
            ).all()
        )


# --- the queue ------------------------------------------------------------------------------------


#: Phases during which a task holds one of its provider's in-flight slots (claimed from the queue
#: and not yet finished). Counting slots over task state leaves no counter that could drift.
def request_cancel(database: db.Database, task_id: str, key_id: str) -> sa.Row[Any]:
    """Cancel a task of this key: at once when no worker holds it, else flag it for its worker.

    Raises Conflict for a finished task, NotFound for an unknown one (or another key's).
    """
    now = time.time()
    with database.write() as conn:
        row = conn.execute(sa.select(T).where(T.c.id == task_id, T.c.key_id == key_id)).first()
        if row is None:
            raise NotFound("task_not_found", param="task_id", task_id=task_id)
        if Status(row.status) in TERMINAL:
            raise Conflict("cancel_terminal", param="task_id", task_id=task_id, status=row.status)
        unheld = row.lease_until is None or row.lease_until < now
        if row.status == Status.PENDING and row.upstream_id is None and unheld:
            check_transition(Status.PENDING, Status.CANCELLED)
            result = conn.execute(
                T.update()
                .where(
                    T.c.id == task_id, T.c.status == Status.PENDING.value, T.c.lease_token == row.lease_token
                )
                .values(
                    status=Status.CANCELLED.value,
                    phase=Phase.DONE.value,
                    completed_at=now,
                    updated_at=now,
                    next_run_at=None,
                    lease_owner=None,
                    lease_until=None,
                    cancel_requested=True,
                    cost=0,
                )
            )
            if result.rowcount == 1:
                ledger.release(conn, task_id=task_id, note=Status.CANCELLED.value)
                record_event(
                    conn,
                    task_id,
                    Status.PENDING,
                    Status.CANCELLED,
                    Phase.DONE,
                    detail={"by": "user"},
                    now=now,
                )
                return conn.execute(sa.select(T).where(T.c.id == task_id)).one()
        # Held by a worker, or already at an upstream: its worker finishes the cancellation.
        conn.execute(
            T.update().where(T.c.id == task_id).values(cancel_requested=True, next_run_at=now, updated_at=now)
        )
        return conn.execute(sa.select(T).where(T.c.id == task_id)).one()


def cancel_requested(database: db.Database, task_id: str) -> bool:
    with database.read() as conn:
        return bool(conn.execute(sa.select(T.c.cancel_requested).where(T.c.id == task_id)).scalar())


def list_for_key(
    database: db.Database,
    key_id: str,
    *,
    limit: int,
    after: tuple[float, str] | None = None,
    status: str | None = None,
    model: str | None = None,
    created_after: float | None = None,
    created_before: float | None = None,
) -> list[Any]:
    """This key's tasks, newest first; `after` is the (created_at, id) of the last row of the
    previous page (keyset pagination: stable while new tasks arrive)."""
    query = sa.select(*VIEW_COLUMNS).where(T.c.key_id == key_id)
    if status is not None:
        query = query.where(T.c.status == status)
    if model is not None:
        query = query.where(T.c.model == model)
    if created_after is not None:
        query = query.where(T.c.created_at >= created_after)
    if created_before is not None:
        query = query.where(T.c.created_at < created_before)
    if after is not None:
        at, last_id = after
        query = query.where(sa.or_(T.c.created_at < at, sa.and_(T.c.created_at == at, T.c.id < last_id)))
    query = query.order_by(T.c.created_at.desc(), T.c.id.desc()).limit(limit)
    with database.read() as conn:
        return list(conn.execute(query).all())


def poke(database: db.Database, task_id: str, *, provider: str, upstream_id: str) -> bool:
    """Make a waiting upstream task due now (a verified callback said its job changed)."""
    with database.write() as conn:
        result = conn.execute(
            T.update()
            .where(
                T.c.id == task_id,
                T.c.provider == provider,
                T.c.upstream_id == upstream_id,
                T.c.status.in_([Status.PENDING.value, Status.PROCESSING.value]),
            )
            .values(next_run_at=time.time())
        )
    return result.rowcount == 1


def decode_json(value: Any) -> Any:
    """JSON columns come back parsed on both dialects; tolerate text from older drivers."""
    if isinstance(value, str | bytes):
        return orjson.loads(value)
    return value
