"""The task table as a queue: claims, leases, fencing tokens, guarded writes, database constraints."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from vidgate import catalog, db, keys, leases, tasks
from vidgate.db import Database
from vidgate.errors import Conflict
from vidgate.status import Status

BODY = {"model": "pixverse-v6", "prompt": "waves"}
LOCAL = frozenset({"local"})


def _create(database: Database, key_id: str, body: dict[str, Any] = BODY, idem: str | None = None) -> Any:
    row, _ = tasks.create(
        database,
        key_id=key_id,
        request=catalog.parse(body),
        body=body,
        provider="local",
        estimated_time=10,
        idempotency_key=idem,
    )
    return row


@pytest.fixture
def database(any_database: Database) -> Database:
    """Every queue test runs on SQLite and on PostgreSQL."""
    return any_database


@pytest.fixture
def key_id(database: Database) -> str:
    return keys.create(database, "queue")[0].id


def test_claim_takes_each_due_task_once(database: Database, key_id: str) -> None:
    ids = {_create(database, key_id).id for _ in range(5)}
    first = leases.claim(database, owner="a", providers=LOCAL, limit=3, lease_seconds=30)
    second = leases.claim(database, owner="b", providers=LOCAL, limit=10, lease_seconds=30)
    assert len(first) == 3 and len(second) == 2
    assert {r.id for r in first} | {r.id for r in second} == ids
    assert all(r.status == Status.PROCESSING and r.lease_token == 1 for r in [*first, *second])
    assert leases.claim(database, owner="c", providers=LOCAL, limit=10, lease_seconds=30) == []
    assert leases.claim(database, owner="c", providers=frozenset({"vidu"}), limit=10, lease_seconds=30) == []


def test_concurrent_claimers_never_share_a_task(database: Database, key_id: str) -> None:
    for _ in range(40):
        _create(database, key_id)
    got: list[str] = []
    lock = threading.Lock()

    def claimer(name: str) -> None:
        while True:
            rows = leases.claim(database, owner=name, providers=LOCAL, limit=2, lease_seconds=30)
            if not rows:
                return
            with lock:
                got.extend(r.id for r in rows)

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 40 and len(set(got)) == 40


def test_expired_lease_is_taken_over_and_old_holder_is_fenced(database: Database, key_id: str) -> None:
    task = _create(database, key_id)
    (row,) = leases.claim(database, owner="old", providers=LOCAL, limit=1, lease_seconds=0.05)
    old = leases.lease_of(row)
    time.sleep(0.1)
    (again,) = leases.claim(database, owner="new", providers=LOCAL, limit=1, lease_seconds=30)
    assert again.id == task.id and again.lease_token == old.token + 1 and again.attempts == 2
    with pytest.raises(leases.LeaseLost):
        leases.heartbeat(database, old, 30, progress=50)
    with pytest.raises(leases.LeaseLost):
        leases.complete(database, old, {"video": "x"}, ttl_seconds=60)
    leases.complete(database, leases.lease_of(again), {"video": "v"}, ttl_seconds=60)
    final = tasks.get(database, task.id)
    assert final is not None and final.status == Status.COMPLETED and final.progress == 100
    history = [(e.from_status, e.to_status, e.worker) for e in tasks.events(database, task.id)]
    assert history == [
        (None, "pending", None),
        ("pending", "processing", "old"),
        ("processing", "processing", "new"),
        ("processing", "completed", "new"),
    ]


def test_terminal_tasks_cannot_be_written_again(database: Database, key_id: str) -> None:
    _create(database, key_id)
    (row,) = leases.claim(database, owner="w", providers=LOCAL, limit=1, lease_seconds=30)
    lease = leases.lease_of(row)
    leases.fail(database, lease, {"code": "render_failed", "type": "server_error", "params": {}})
    with pytest.raises(leases.LeaseLost):
        leases.complete(database, lease, {"video": "v"}, ttl_seconds=60)
    assert leases.claim(database, owner="w2", providers=LOCAL, limit=1, lease_seconds=30) == []


def test_release_makes_a_task_due_later(database: Database, key_id: str) -> None:
    task = _create(database, key_id)
    (row,) = leases.claim(database, owner="w", providers=LOCAL, limit=1, lease_seconds=30)
    leases.release(database, leases.lease_of(row), delay=0.2)
    assert leases.claim(database, owner="w", providers=LOCAL, limit=1, lease_seconds=30) == []
    time.sleep(0.25)
    (again,) = leases.claim(database, owner="w", providers=LOCAL, limit=1, lease_seconds=30)
    assert again.id == task.id and again.attempts == 1  # a clean release resets the crash counter


def test_heartbeat_caps_progress_below_100(database: Database, key_id: str) -> None:
    task = _create(database, key_id)
    (row,) = leases.claim(database, owner="w", providers=LOCAL, limit=1, lease_seconds=30)
    leases.heartbeat(database, leases.lease_of(row), 30, progress=150)
    assert tasks.get(database, task.id).progress == 99  # type: ignore[union-attr]


def test_database_enforces_the_state_rules(database: Database, key_id: str) -> None:
    task = _create(database, key_id)
    bad_updates = [
        {"status": "done"},
        {"status": "completed", "completed_at": time.time()},  # no result, progress < 100
        {"status": "failed", "completed_at": time.time()},  # no error
        {"status": "cancelled"},  # terminal without completed_at
        {"progress": 101},
        {"progress": 100},  # 100 only when completed
        {"phase": "sleeping"},
    ]
    for values in bad_updates:
        with pytest.raises(IntegrityError), database.write() as conn:
            conn.execute(db.tasks.update().where(db.tasks.c.id == task.id).values(**values))
    assert tasks.get(database, task.id).status == Status.PENDING  # type: ignore[union-attr]


def test_idempotent_create_races_make_one_task(database: Database, key_id: str) -> None:
    results: list[str] = []

    def submit() -> None:
        results.append(_create(database, key_id, idem="same").id)

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and len(set(results)) == 1
    with pytest.raises(Conflict):
        _create(database, key_id, body={**BODY, "duration": 3}, idem="same")
    with database.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(db.tasks)).scalar_one() == 1


def test_fail_unleased_only_touches_live_tasks(database: Database, key_id: str) -> None:
    task = _create(database, key_id)
    error = {"code": "worker_lost", "type": "server_error", "params": {"attempts": 3}}
    assert leases.fail_unleased(database, task.id, error)
    assert not leases.fail_unleased(database, task.id, error)
    assert tasks.get(database, task.id).status == Status.FAILED  # type: ignore[union-attr]


def test_slot_cap_holds_across_concurrent_claimers(database: Database, key_id: str) -> None:
    for _ in range(30):
        _create(database, key_id)
    held: list[str] = []
    lock = threading.Lock()

    def claimer(name: str) -> None:
        for _ in range(20):
            rows = leases.claim(
                database, owner=name, providers=LOCAL, limit=3, lease_seconds=30, slots={"local": 4}
            )
            with lock:
                held.extend(r.id for r in rows)

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(held) == 4  # never more in flight than the cap, whoever asks
    with database.read() as conn:
        assert leases.in_flight(conn, "local") == 4
    # Finishing one frees exactly one slot.
    first = tasks.get(database, held[0])
    assert first is not None
    leases.complete(database, leases.lease_of(first), {"video": "v"}, ttl_seconds=60)
    more = leases.claim(database, owner="x", providers=LOCAL, limit=10, lease_seconds=30, slots={"local": 4})
    assert len(more) == 1
