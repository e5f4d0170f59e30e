"""The webhook outbox on SQLite and PostgreSQL: rows commit (or roll back) with the state change,
one per task and event, in order per task, leased so that racing dispatchers send each attempt
once, failed after the retry window; and the 0006 migration (schema, secrets for older keys).
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tests.conftest import fresh_postgres
from tests.webhook_receiver import Receiver
from vidgate import catalog, db, keys, leases, migrations, tasks, webhooks
from vidgate.config import Settings
from vidgate.db import Database
from vidgate.signing import Signer
from vidgate.webhook_dispatch import Dispatcher, retry_delay

PIX = {"model": "pixverse-v6", "prompt": "x", "resolution": "360p", "duration": 1}
D = db.webhook_deliveries


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def key_id(database: Database) -> str:
    return keys.create(database, "hooks")[0].id


def new_task(database: Database, key: str, callback: str | None = "http://127.0.0.1:9/hook") -> str:
    row, _ = tasks.create(
        database,
        key_id=key,
        request=catalog.parse(PIX),
        body={**PIX, "callback_url": callback},
        provider="local",
        estimated_time=5,
        callback_url=callback,
    )
    return str(row.id)


def outbox(database: Database) -> list[Any]:
    with database.read() as conn:
        return list(conn.execute(sa.select(D).order_by(D.c.created_at)).all())


def claim_all(database: Database) -> list[Any]:
    return leases.claim(database, owner="w", providers=frozenset({"local"}), limit=100, lease_seconds=30)


def test_outbox_rows_commit_and_roll_back_with_the_state_change(any_database: Database) -> None:
    key = key_id(any_database)
    hooked, plain = new_task(any_database, key), new_task(any_database, key, callback=None)
    assert outbox(any_database) == []  # pending is not an event
    rows = {r.id: r for r in claim_all(any_database)}
    [processing] = outbox(any_database)
    assert (processing.task_id, processing.event, processing.status) == (hooked, "task.processing", "pending")
    assert processing.url == "http://127.0.0.1:9/hook" and processing.key_id == key
    assert processing.id.startswith("msg_") and processing.attempts == 0

    # A state change that rolls back takes its delivery with it.
    with pytest.raises(RuntimeError), any_database.write() as conn:
        tasks.record_event(conn, hooked, "processing", "completed", "done")
        assert conn.execute(sa.select(sa.func.count()).select_from(D)).scalar_one() == 2
        raise RuntimeError("rolled back")
    assert len(outbox(any_database)) == 1
    # A write with a stale lease changes nothing, and queues nothing.
    stale = leases.Lease(task_id=hooked, owner="w", token=rows[hooked].lease_token + 5)
    with pytest.raises(leases.LeaseLost):
        leases.complete(any_database, stale, {"video": "results/x/video.mp4"}, ttl_seconds=60)
    assert len(outbox(any_database)) == 1

    for task_id in (hooked, plain):
        leases.complete(any_database, leases.lease_of(rows[task_id]), {"video": "v.mp4"}, ttl_seconds=60)
    assert [(r.task_id, r.event) for r in outbox(any_database)] == [
        (hooked, "task.processing"),
        (hooked, "task.completed"),
    ]


def test_each_event_is_queued_once_per_task(any_database: Database) -> None:
    key = key_id(any_database)
    task_id = new_task(any_database, key)
    [row] = claim_all(any_database)
    # Back to the queue (e.g. an upstream was busy) and claimed again: no second task.processing.
    leases.release(any_database, leases.lease_of(row), delay=0, phase=tasks.Phase.QUEUED)
    [row] = claim_all(any_database)
    leases.reroute(any_database, leases.lease_of(row), provider="local", upstream_state={})
    [row] = claim_all(any_database)
    error = {"code": "render_failed", "type": "server_error", "params": {"detail": "x"}}
    leases.fail(any_database, leases.lease_of(row), error)
    assert [(r.task_id, r.event) for r in outbox(any_database)] == [
        (task_id, "task.processing"),
        (task_id, "task.failed"),
    ]


def dispatcher(settings: Settings, database: Database, name: str) -> Dispatcher:
    return Dispatcher(settings, database, Signer(b"k" * 32), owner=f"test:{os.getpid()}:{name}")


async def run_until(dispatchers: list[Dispatcher], done: Any, timeout: float = 20) -> None:
    stop = asyncio.Event()
    running = [asyncio.create_task(d.run(stop)) for d in dispatchers]
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.gather(*running)


def test_racing_dispatchers_send_each_event_once(
    any_database: Database, settings: Settings, receiver: Receiver
) -> None:
    settings = settings.model_copy(update={"webhook_concurrency": 4})
    second = Database(any_database.url)  # another process's connection pool
    try:
        key = key_id(any_database)
        task_ids = [new_task(any_database, key, receiver.url()) for _ in range(24)]
        for task_id in task_ids:
            tasks.request_cancel(any_database, task_id, key)
        racers = [dispatcher(settings, any_database, "a"), dispatcher(settings, second, "b")]
        asyncio.run(run_until(racers, lambda: len(receiver.requests) >= 24))
        time.sleep(0.3)  # a duplicate, if any, would arrive now
    finally:
        second.dispose()
    counts = Counter(r.id for r in receiver.requests)
    assert len(counts) == 24 and set(counts.values()) == {1}, counts
    assert {r.json["data"]["id"] for r in receiver.requests} == set(task_ids)
    rows = outbox(any_database)
    assert {(r.status, r.attempts, r.lease_owner) for r in rows} == {("delivered", 1, None)}


def test_later_events_wait_for_an_untried_earlier_one_but_not_for_its_retries(
    any_database: Database,
) -> None:
    key = key_id(any_database)
    task_id = new_task(any_database, key)
    [row] = claim_all(any_database)
    leases.complete(any_database, leases.lease_of(row), {"video": "v.mp4"}, ttl_seconds=60)
    now = time.time() + 1
    [first] = webhooks.claim(any_database, owner="x", limit=10, lease_seconds=30, now=now)
    assert first.event == "task.processing" and first.webhook_secret.startswith("whsec_")
    # In flight: task.completed waits.
    assert webhooks.claim(any_database, owner="y", limit=10, lease_seconds=30, now=now) == []
    webhooks.finish(
        any_database,
        first,
        owner="x",
        started=now,
        duration=0.01,
        payload="{}",
        status_code=503,
        error="HTTP 503",
        response=None,
        retry_at=now + 60,
    )
    [second] = webhooks.claim(any_database, owner="y", limit=10, lease_seconds=30, now=now)
    assert (second.task_id, second.event) == (task_id, "task.completed")
    # A fenced outcome: the former owner's late write for an attempt it no longer holds is dropped.
    assert not webhooks.finish(
        any_database,
        second,
        owner="x",
        started=now,
        duration=0.01,
        payload="{}",
        status_code=200,
        error=None,
        response=None,
        retry_at=None,
    )


def test_a_delivery_is_failed_after_its_retry_window(
    database: Database, settings: Settings, receiver: Receiver
) -> None:
    receiver.status = 500
    settings = settings.model_copy(
        update={"webhook_retry_schedule": [0.05, 0.1], "webhook_retry_window_seconds": 0.6}
    )
    key = key_id(database)
    task_id = new_task(database, key, receiver.url())
    tasks.request_cancel(database, task_id, key)
    asyncio.run(
        run_until([dispatcher(settings, database, "w")], lambda: outbox(database)[0].status != "pending")
    )
    [row] = outbox(database)
    assert row.status == "failed" and row.last_status_code == 500 and row.next_attempt_at is None
    assert 3 <= row.attempts == len(receiver.requests) <= 12
    assert len({r.id for r in receiver.requests}) == 1
    [(_, attempts)] = webhooks.for_task(database, task_id)
    assert [a.attempt for a in attempts] == list(range(1, row.attempts + 1))


def test_retry_delays_follow_the_schedule_with_jitter() -> None:
    schedule = [5.0, 30.0, 120.0]
    for attempt, base in ((1, 5.0), (2, 30.0), (3, 120.0), (4, 120.0), (50, 120.0)):
        delays = [retry_delay(attempt, schedule) for _ in range(200)]
        assert all(0.8 * base <= d <= 1.2 * base for d in delays)
        assert len(set(delays)) > 100  # jittered, so failures that came together spread out


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_migration_0006_matches_the_models_and_gives_older_keys_a_secret(
    dialect: str, tmp_path: Path
) -> None:
    with _empty_database(dialect, tmp_path) as database:
        migrations.upgrade(database, "0005")
        with database.write() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO api_keys (id, name, key_hash, prefix, created_at, used) "
                    "VALUES ('key_old', 'old', 'h', 'vg_old', 1, 0)"
                )
            )
        migrations.upgrade(database)
        secret = keys.webhook_secret(database, "key_old")
        assert secret is not None and secret.startswith("whsec_")
        assert len(base64.b64decode(secret[len("whsec_") :])) == 32
        with database.engine.connect() as conn:
            diffs = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), db.metadata
            )
        assert diffs == []
        rotated = keys.rotate_webhook_secret(database, "key_old")
        assert rotated != secret and keys.webhook_secret(database, "key_old") == rotated
        assert keys.rotate_webhook_secret(database, "key_missing") is None


@contextmanager
def _empty_database(dialect: str, tmp_path: Path) -> Iterator[Database]:
    if dialect == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'm.db'}")
        yield database
        database.dispose()
        return
    with fresh_postgres() as url:
        database = Database(url)
        yield database
        database.dispose()
