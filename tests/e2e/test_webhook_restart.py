"""A `vidgate serve` killed with SIGKILL while a webhook is being retried, or while an attempt is
in flight, loses no delivery: the outbox is in the database, and after a restart the same event
(same webhook-id, same body) reaches the receiver."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.webhook_receiver import Receiver, hand_verify
from vidgate import keys
from vidgate.db import Database
from vidgate.sdk import verify_webhook

from .conftest import Server, make_server, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PIX = {"model": "pixverse-v6", "prompt": "a kite", "resolution": "360p", "duration": 1}


def start(tmp_path: Path) -> Server:
    server = make_server(
        tmp_path,
        VIDGATE_ALLOW_PRIVATE_URLS="true",
        VIDGATE_WEBHOOK_RETRY_SCHEDULE="[0.3]",
        VIDGATE_WEBHOOK_TIMEOUT_SECONDS="20",
    )
    server.start()
    return server


def secret_of(server: Server) -> str:
    database = Database(f"sqlite:///{server.data_dir / 'vidgate.db'}")
    try:
        key = keys.authenticate(database, server.key)
        assert key is not None
        secret = keys.webhook_secret(database, key.id)
        assert secret is not None
        return secret
    finally:
        database.dispose()


def deliveries(server: Server, task_id: str) -> list[dict[str, Any]]:
    with server.client() as client:
        response = client.get(f"/v1/tasks/{task_id}/deliveries")
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def test_kill_9_mid_retry_then_restart_delivers(tmp_path: Path) -> None:
    receiver = Receiver()
    receiver.status = 500
    server = start(tmp_path)
    try:
        with server.client() as client:
            response = client.post("/v1/videos/generations", json={**PIX, "callback_url": receiver.url()})
            task_id = response.json()["data"][0]["task_id"]
            assert wait_for(client, task_id, timeout=60)["status"] == "completed"
        receiver.wait_for(lambda r: [q.json["type"] for q in r.requests].count("task.completed") >= 2)
        server.kill9()
        failed = len(receiver.requests)
        assert receiver.delivered() == []
        receiver.status = 200
        server.start()
        receiver.wait_for(lambda r: sorted(r.events()) == ["task.completed", "task.processing"], timeout=60)
        secret = secret_of(server)
        ids = {q.json["type"]: q.id for q in receiver.requests}
        for got in receiver.delivered():
            assert got.id == ids[got.json["type"]]  # the same event as before the kill
            assert hand_verify(secret, got.headers, got.body)
            assert verify_webhook(got.body, got.headers, secret)["data"]["id"] == task_id
        log = {d["event"]: d for d in deliveries(server, task_id)}
        completed = log["task.completed"]
        assert completed["status"] == "delivered" and completed["id"] == ids["task.completed"]
        codes = [a["status_code"] for a in completed["attempts"]]
        assert codes[-1] == 200 and set(codes[:-1]) == {500} and len(codes) >= 3
        assert len(receiver.requests) > failed
    finally:
        server.stop()
        receiver.close()


def test_kill_9_mid_attempt_then_restart_sends_it_again(tmp_path: Path) -> None:
    receiver = Receiver()
    receiver.delay = 30.0  # the first attempt hangs: vidgate dies waiting for the answer
    server = start(tmp_path)
    try:
        with server.client() as client:
            response = client.post("/v1/videos/generations", json={**PIX, "callback_url": receiver.url()})
            task_id = response.json()["data"][0]["task_id"]
        receiver.wait_for(lambda r: len(r.started) >= 1)
        in_flight = receiver.started[0]
        server.kill9()
        receiver.delay = 0.0
        started = time.monotonic()
        server.start()
        receiver.wait_for(lambda r: sorted(r.events()) == ["task.completed", "task.processing"], timeout=90)
        # The restarted worker frees the dead process's lease at once (no wait for it to expire).
        assert time.monotonic() - started < 20
        [processing] = [d for d in deliveries(server, task_id) if d["event"] == "task.processing"]
        assert processing["id"] == in_flight and processing["status"] == "delivered"
        assert processing["attempt_count"] == 2  # the one cut short by the kill, and this one
        assert [a["status_code"] for a in processing["attempts"]] == [200]
    finally:
        server.stop()
        receiver.close()
