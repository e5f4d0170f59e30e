"""LISTEN/NOTIFY wake-up on PostgreSQL: a submit or a task made due now wakes listening workers at
once; a release for a later poll does not; the listener survives losing its connection; a worker
that polls only every 30 s still starts a submitted task within moments."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from vidgate import catalog, keys, leases, tasks, wakeup
from vidgate.api import build_gateway
from vidgate.config import Settings
from vidgate.db import Database, normalize_url

from .conftest import PG_ADMIN_URL

BODY = {"model": "pixverse-v6", "prompt": "a lighthouse at dusk"}


class Counter:
    def __init__(self) -> None:
        self.count = 0
        self.changed = threading.Condition()

    def __call__(self) -> None:
        with self.changed:
            self.count += 1
            self.changed.notify_all()

    def wait_above(self, value: int, timeout: float = 5.0) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.count > value, timeout)


@pytest.fixture
def listening(pg: Database) -> Iterator[tuple[wakeup.Listener, Counter]]:
    counter = Counter()
    listener = wakeup.Listener(pg.url, counter)
    listener.start()
    assert listener.listening.wait(10)
    assert counter.wait_above(0)  # the catch-up wake-up on connecting
    yield listener, counter
    listener.stop()


def _submit(database: Database, key_id: str) -> str:
    row, _ = tasks.create(
        database, key_id=key_id, request=catalog.parse(BODY), body=BODY, provider="local", estimated_time=5
    )
    return str(row.id)


def test_submit_and_poke_notify_but_a_later_poll_does_not(
    pg: Database, listening: tuple[wakeup.Listener, Counter]
) -> None:
    _, counter = listening
    key, _ = keys.create(pg, "k")
    before = counter.count
    task_id = _submit(pg, key.id)
    assert counter.wait_above(before), "a submit must wake listeners"

    (row,) = leases.claim(pg, owner="w1", providers=frozenset({"local"}), limit=1, lease_seconds=30)
    lease = leases.lease_of(row)
    time.sleep(0.3)
    quiet = counter.count
    leases.release(pg, lease, delay=60, upstream_id="up-1")
    time.sleep(0.5)
    assert counter.count == quiet, "a release for a poll a minute away must not wake anyone"

    assert tasks.poke(pg, task_id, provider="local", upstream_id="up-1")
    assert counter.wait_above(quiet), "a callback's poke makes the task due now: wake"


def test_listener_reconnects_after_losing_its_connection(
    pg: Database, listening: tuple[wakeup.Listener, Counter]
) -> None:
    listener, counter = listening
    admin = sa.create_engine(normalize_url(PG_ADMIN_URL), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        killed = conn.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = :name AND query LIKE 'LISTEN%'"
            ),
            {"name": pg.engine.url.database},
        ).all()
    admin.dispose()
    assert killed
    deadline = time.monotonic() + 15
    while listener.connections < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert listener.connections == 2 and listener.listening.is_set()
    key, _ = keys.create(pg, "k")
    before = counter.count
    _submit(pg, key.id)
    assert counter.wait_above(before)


def test_a_slow_polling_worker_starts_a_submit_at_once(pg: Database, tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=pg.url,
        poll_interval_seconds=30.0,  # without a notification the task would wait up to 30 s
        gc_interval_seconds=0,
        local_preset="ultrafast",
    )
    gateway = build_gateway(settings, run_worker=True)
    worker = gateway.worker
    assert worker is not None
    key, _ = keys.create(pg, "k")

    async def scenario() -> float:
        stop = asyncio.Event()
        runner = asyncio.create_task(worker.run(stop))
        await asyncio.sleep(1.5)  # started, listening, and past its first (empty) claim round
        started = time.monotonic()
        task_id = await asyncio.to_thread(_submit, pg, key.id)
        while time.monotonic() - started < 10:
            row = await asyncio.to_thread(tasks.get, pg, task_id)
            if row is not None and row.status != "pending":
                break
            await asyncio.sleep(0.05)
        picked = time.monotonic() - started
        stop.set()
        await runner
        return picked

    try:
        assert asyncio.run(scenario()) < 5.0
    finally:
        gateway.database.dispose()
