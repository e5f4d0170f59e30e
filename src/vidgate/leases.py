"""The queue's worker side: claims with a lease, and lease-guarded writes.

A worker claims due rows by taking a lease (owner, expiry and a fencing token that every claim
increments); each later write names that token, so a worker whose lease was taken over writes
nothing. Finishing a task writes its ledger row (capture or release) and its event in the same
transaction. `tasks.py` is the API side of the same table.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from vidgate import db, ledger
from vidgate.status import Phase, Status, check_transition, sources_of
from vidgate.tasks import T, record_event


class LeaseLost(Exception):
    """The lease moved to another worker (or the task changed state); stop touching this task."""


@dataclass(frozen=True)
class Lease:
    task_id: str
    owner: str
    token: int


SLOT_PHASES = tuple(p.value for p in Phase if p not in (Phase.QUEUED, Phase.DONE))


def in_flight(conn: Connection, provider: str) -> int:
    return int(
        conn.execute(
            sa.select(sa.func.count())
            .select_from(T)
            .where(
                T.c.provider == provider,
                T.c.status.in_([Status.PENDING.value, Status.PROCESSING.value]),
                T.c.phase.in_(SLOT_PHASES),
            )
        ).scalar_one()
    )


def _lock_slots(conn: Connection, provider: str) -> None:
    """Serialize slot counting per provider until commit. SQLite's BEGIN IMMEDIATE already
    serializes writers; PostgreSQL under READ COMMITTED would let two claimers count the same
    free slot, so they queue on a transaction-scoped advisory lock."""
    if conn.dialect.name == "postgresql":
        lock_id = int.from_bytes(
            hashlib.sha256(f"vidgate-slots:{provider}".encode()).digest()[:8], "big", signed=True
        )
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id})


def claim(
    database: db.Database,
    *,
    owner: str,
    providers: frozenset[str],
    limit: int,
    lease_seconds: float,
    slots: dict[str, int] | None = None,
    now: float | None = None,
) -> list[sa.Row[Any]]:
    """Lease up to `limit` due tasks for the given providers (oldest first).

    Due: pending or processing, `next_run_at` reached, and no live lease. A `processing` row whose
    lease expired belonged to a worker that died; it is taken over with a new fencing token.
    `slots` caps, per provider, the tasks in flight across all workers: a queued task is only
    taken while its provider has a free slot, so the excess waits in `pending`.
    """
    if limit <= 0 or not providers:
        return []
    now = time.time() if now is None else now
    active = [Status.PENDING.value, Status.PROCESSING.value]
    due_filter = [
        T.c.status.in_(active),
        T.c.next_run_at <= now,
        sa.or_(T.c.lease_until.is_(None), T.c.lease_until < now),
    ]
    columns = (T.c.id, T.c.status, T.c.phase, T.c.lease_owner, T.c.next_run_at, T.c.callback_url)
    with database.write() as conn:
        due: list[Any] = []
        for provider in sorted(providers):
            room = limit - len(due)
            if room <= 0:
                break
            # Tasks already holding a slot (polls, takeovers) and queued tasks (within free
            # slots) compete in due-time order, so neither kind starves the other.
            held = conn.execute(
                sa.select(*columns)
                .where(*due_filter, T.c.provider == provider, T.c.phase != Phase.QUEUED.value)
                .order_by(T.c.next_run_at)
                .limit(room)
                .with_for_update(skip_locked=True)
            ).all()
            free = room
            cap = (slots or {}).get(provider)
            if cap is not None:
                _lock_slots(conn, provider)
                free = min(room, cap - in_flight(conn, provider))
            queued: Sequence[Any] = ()
            if free > 0:
                queued = conn.execute(
                    sa.select(*columns)
                    .where(*due_filter, T.c.provider == provider, T.c.phase == Phase.QUEUED.value)
                    .order_by(T.c.next_run_at, T.c.created_at)
                    .limit(free)
                    .with_for_update(skip_locked=True)
                ).all()
            merged = sorted([*held, *queued], key=lambda r: (r.next_run_at, r.id))[:room]
            due += merged
        if not due:
            return []
        ids = [r.id for r in due]
        conn.execute(
            T.update()
            .where(T.c.id.in_(ids))
            .values(
                status=Status.PROCESSING.value,
                phase=sa.case(
                    (T.c.phase == Phase.QUEUED.value, Phase.FETCHING_INPUTS.value), else_=T.c.phase
                ),
                lease_owner=owner,
                lease_until=now + lease_seconds,
                lease_token=T.c.lease_token + 1,
                attempts=T.c.attempts + 1,
                started_at=sa.func.coalesce(T.c.started_at, now),
                updated_at=now,
            )
        )
        for r in due:
            # A routine poll claim is no event; starting work and taking over a dead lease are.
            if r.status == Status.PENDING or r.lease_owner:
                detail = {"took_over_from": r.lease_owner} if r.lease_owner else None
                record_event(
                    conn,
                    r.id,
                    r.status,
                    Status.PROCESSING,
                    r.phase,
                    worker=owner,
                    detail=detail,
                    now=now,
                    callback=r.callback_url is not None,
                )
        return list(conn.execute(sa.select(T).where(T.c.id.in_(ids))).all())


def checkpoint(
    database: db.Database, lease: Lease, *, phase: Phase, lease_seconds: float, **values: Any
) -> None:
    """Commit where a tick stands before its next outside effect (e.g. `submitting` and the
    idempotency handle before a submit call), so a crash leaves a record of what may have happened
    upstream. Renews the lease too."""
    now = time.time()
    _update(
        database,
        lease,
        {**values, "phase": phase.value, "lease_until": now + lease_seconds, "updated_at": now},
    )


def reroute(database: db.Database, lease: Lease, *, provider: str, upstream_state: dict[str, Any]) -> None:
    """Hand a not-yet-accepted task to the next provider of its route (infrastructure failure)."""
    now = time.time()
    _update(
        database,
        lease,
        {
            "provider": provider,
            "status": Status.PENDING.value,
            "phase": Phase.QUEUED.value,
            "upstream_id": None,
            "upstream_state": upstream_state,
            "lease_owner": None,
            "lease_until": None,
            "next_run_at": now,
            "attempts": 0,
            "updated_at": now,
        },
        requeue_detail={"rerouted_to": provider},
    )


def _guarded(lease: Lease, *, statuses: frozenset[Status] | None = None) -> list[sa.ColumnElement[bool]]:
    allowed = statuses or frozenset({Status.PROCESSING})
    return [
        T.c.id == lease.task_id,
        T.c.lease_token == lease.token,
        T.c.lease_owner == lease.owner,
        T.c.status.in_([s.value for s in allowed]),
    ]


def _update(
    database: db.Database,
    lease: Lease,
    values: dict[str, Any],
    *,
    requeue_detail: dict[str, Any] | None = None,
    **guard: Any,
) -> None:
    values.setdefault("updated_at", time.time())
    with database.write() as conn:
        result = conn.execute(T.update().where(*_guarded(lease, **guard)).values(**values))
        if result.rowcount != 1:
            raise LeaseLost(lease.task_id)
        _record_requeue(conn, lease, values, requeue_detail)


def _record_requeue(
    conn: Connection, lease: Lease, values: dict[str, Any], detail: dict[str, Any] | None = None
) -> None:
    """Back to the queue (processing -> pending) is a status change like the others: its event is
    written in the transaction that makes it (the lifecycle state machine found it missing)."""
    if values.get("status") == Status.PENDING.value:
        record_event(
            conn,
            lease.task_id,
            Status.PROCESSING,
            Status.PENDING,
            Phase.QUEUED,
            worker=lease.owner,
            detail=detail,
            now=values["updated_at"],
        )


def heartbeat(
    database: db.Database,
    lease: Lease,
    lease_seconds: float,
    *,
    progress: int | None = None,
    phase: Phase | None = None,
) -> bool:
    """Extend the lease (and record progress/phase) or raise LeaseLost. Returns whether the
    owner asked to cancel the task meanwhile."""
    now = time.time()
    values: dict[str, Any] = {"lease_until": now + lease_seconds, "updated_at": now}
    if progress is not None:
        values["progress"] = monotonic_progress(progress)
    if phase is not None:
        values["phase"] = phase.value
    with database.write() as conn:
        result = conn.execute(T.update().where(*_guarded(lease)).values(**values))
        if result.rowcount != 1:
            raise LeaseLost(lease.task_id)
        return bool(conn.execute(sa.select(T.c.cancel_requested).where(T.c.id == lease.task_id)).scalar())


def _finish(
    database: db.Database,
    lease: Lease,
    target: Status,
    values: dict[str, Any],
    *,
    detail: dict[str, Any] | None = None,
) -> None:
    """End a held task; its ledger row (capture or release) is written in the same transaction."""
    check_transition(Status.PROCESSING, target)
    now = time.time()
    values |= {
        "status": target.value,
        "updated_at": now,
        "lease_owner": None,
        "lease_until": None,
        "next_run_at": None,
    }
    guard = _guarded(lease, statuses=sources_of(target) & {Status.PROCESSING})
    with database.write() as conn:
        if target is Status.COMPLETED:
            values["cost"] = ledger.capture(conn, task_id=lease.task_id, amount=Decimal(str(values["cost"])))
        result = conn.execute(T.update().where(*guard).values(**values))
        if result.rowcount != 1:
            raise LeaseLost(lease.task_id)  # rolls back the ledger row above too
        if target is not Status.COMPLETED:
            ledger.release(conn, task_id=lease.task_id, note=target.value)
        record_event(
            conn,
            lease.task_id,
            Status.PROCESSING,
            target,
            values.get("phase", Phase.DONE),
            worker=lease.owner,
            detail=detail,
            now=now,
        )


def complete(
    database: db.Database,
    lease: Lease,
    result: dict[str, Any],
    *,
    ttl_seconds: int,
    cost: Decimal | float = 0,
) -> None:
    """Store the result and charge `cost` (at most the hold; the rest returns to the balance)."""
    now = time.time()
    _finish(
        database,
        lease,
        Status.COMPLETED,
        {
            "cost": cost,
            "result": result,
            "progress": 100,
            "phase": Phase.DONE.value,
            "completed_at": now,
            "expires_at": now + ttl_seconds,
            "error": None,
        },
    )


def fail(database: db.Database, lease: Lease, error: dict[str, Any]) -> None:
    _finish(
        database,
        lease,
        Status.FAILED,
        {"error": error, "phase": Phase.DONE.value, "completed_at": time.time(), "cost": 0},
        detail={"error": error.get("code")},
    )


def fail_unleased(database: db.Database, task_id: str, error: dict[str, Any]) -> bool:
    """Fail a non-terminal task that no live worker holds (e.g. it crashed its worker too often)."""
    now = time.time()
    with database.write() as conn:
        row = conn.execute(sa.select(T.c.status).where(T.c.id == task_id)).first()
        if row is None or Status(row.status) not in sources_of(Status.FAILED):
            return False
        result = conn.execute(
            T.update()
            .where(T.c.id == task_id, T.c.status == row.status)
            .values(
                status=Status.FAILED.value,
                error=error,
                phase=Phase.DONE.value,
                completed_at=now,
                updated_at=now,
                lease_owner=None,
                lease_until=None,
                next_run_at=None,
                cost=0,
            )
        )
        if result.rowcount != 1:
            return False
        ledger.release(conn, task_id=task_id, note=Status.FAILED.value)
        record_event(
            conn, task_id, row.status, Status.FAILED, Phase.DONE, detail={"error": error.get("code")}, now=now
        )
        return True


def monotonic_progress(value: int) -> sa.ColumnElement[int]:
    """SET progress to `value` unless it is already higher: shown progress never goes back, not
    even when a task restarts on another worker."""
    value = max(0, min(99, int(value)))
    return sa.case((T.c.progress >= value, T.c.progress), else_=sa.literal(value))


def _release_values(
    *, delay: float, phase: Phase | None, reset_attempts: bool, values: dict[str, Any]
) -> dict[str, Any]:
    now = time.time()
    values = {
        **values,
        "lease_owner": None,
        "lease_until": None,
        "next_run_at": now + delay,
        "updated_at": now,
    }
    if reset_attempts:
        values["attempts"] = 0
    if "progress" in values:
        values["progress"] = monotonic_progress(values["progress"])
    if phase is not None:
        values["phase"] = phase.value
        if phase is Phase.QUEUED:
            # Back in the queue (e.g. an upstream said "too many jobs"): pending again, slot freed.
            values["status"] = Status.PENDING.value
    return values


def release(
    database: db.Database,
    lease: Lease,
    *,
    delay: float,
    phase: Phase | None = None,
    reset_attempts: bool = True,
    **values: Any,
) -> None:
    """Give the task back to the queue, due again after `delay` seconds (a poll, or a retry)."""
    _update(
        database,
        lease,
        _release_values(delay=delay, phase=phase, reset_attempts=reset_attempts, values=values),
    )


@dataclass(frozen=True)
class Release:
    lease: Lease
    delay: float
    phase: Phase | None = None
    values: dict[str, Any] | None = None


def release_many(database: db.Database, releases: Sequence[Release]) -> list[bool]:
    """Several releases in one transaction (a worker polling thousands of upstream jobs writes
    far fewer commits this way); each stays fenced by its own token. True where it applied."""
    applied: list[bool] = []
    with database.write() as conn:
        for item in releases:
            values = _release_values(
                delay=item.delay, phase=item.phase, reset_attempts=True, values=dict(item.values or {})
            )
            result = conn.execute(T.update().where(*_guarded(item.lease)).values(**values))
            applied.append(result.rowcount == 1)
            if result.rowcount == 1:
                _record_requeue(conn, item.lease, values)
    return applied


def finish_cancel(database: db.Database, lease: Lease) -> None:
    """The worker holding a cancel-requested task has stopped it (and its upstream job)."""
    _finish(
        database,
        lease,
        Status.CANCELLED,
        {"phase": Phase.DONE.value, "completed_at": time.time(), "cost": 0},
        detail={"by": "user"},
    )


def lease_of(row: sa.Row[Any]) -> Lease:
    return Lease(task_id=row.id, owner=row.lease_owner, token=row.lease_token)
