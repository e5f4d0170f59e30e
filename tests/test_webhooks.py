"""Signed webhooks through the API, with a real receiver on loopback: what is sent (events, body,
headers, signatures checked by the SDK helper and by hand), retries until a failing receiver takes
the event, the delivery log, redelivery, and `callback_url` validation on submit.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import auth, wait_finished
from tests.webhook_receiver import Receiver, hand_verify
from vidgate import keys, tasks
from vidgate.api import create_app
from vidgate.config import Settings
from vidgate.db import Database
from vidgate.sdk import AsyncClient, Client, verify_webhook
from vidgate.signing import Signer, load_secret
from vidgate.storage import open_storage
from vidgate.testing.fake_serve import serving
from vidgate.webhook_dispatch import Dispatcher

PIX = {"model": "pixverse-v6", "prompt": "a kite", "resolution": "360p", "duration": 1}
NEW = {"X-APIMart-Response-Version": "2026-07-27"}


@pytest.fixture
def hook_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "webhook_retry_schedule": [0.1],
            "webhook_timeout_seconds": 3.0,
            "public_url": "http://vidgate.test",
        }
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def live(hook_settings: Settings, database: Database, api_key: str) -> Iterator[TestClient]:
    """The API with its worker (which runs the webhook dispatcher)."""
    with TestClient(create_app(hook_settings, run_worker=True), headers=auth(api_key)) as c:
        yield c


@pytest.fixture
def api_only(hook_settings: Settings, database: Database, api_key: str) -> Iterator[TestClient]:
    with TestClient(create_app(hook_settings, run_worker=False), headers=auth(api_key)) as c:
        yield c


def webhook_secret(database: Database, api_key: str) -> str:
    key = keys.authenticate(database, api_key)
    assert key is not None
    secret = keys.webhook_secret(database, key.id)
    assert secret is not None and secret.startswith("whsec_")
    return secret


def submit(client: TestClient, body: dict[str, Any], **headers: str) -> str:
    response = client.post("/v1/videos/generations", json=body, headers=headers)
    assert response.status_code == 200, response.text
    task_id: str = response.json()["data"][0]["task_id"]
    return task_id


def deliveries(client: TestClient, task_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/tasks/{task_id}/deliveries")
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def dispatch_until(
    settings: Settings, database: Database, done: Callable[[], bool], timeout: float = 15
) -> None:
    """Run one dispatcher (as a worker would) until `done()`."""
    signer = Signer(load_secret(database, settings.secret_key))
    signer = signer.with_links(open_storage(settings, signer))

    async def main() -> None:
        stop = asyncio.Event()
        dispatcher = Dispatcher(settings, database, signer, owner=f"test:{os.getpid()}:dispatch")
        running = asyncio.create_task(dispatcher.run(stop))
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        stop.set()
        await running

    asyncio.run(main())
    assert done(), "the dispatcher did not get there in time"


def test_state_changes_arrive_signed_with_the_task(
    live: TestClient, database: Database, receiver: Receiver, api_key: str
) -> None:
    task_id = submit(live, {**PIX, "callback_url": receiver.url("/hook?src=vidgate")})
    task = wait_finished(live, task_id, headers=NEW)
    assert task["status"] == "completed", task
    receiver.wait_for(lambda r: len(r.delivered()) == 2)
    secret = webhook_secret(database, api_key)
    processing, completed = receiver.delivered()
    assert [processing.json["type"], completed.json["type"]] == ["task.processing", "task.completed"]
    for got in (processing, completed):
        assert got.path == "/hook?src=vidgate"
        assert got.headers["content-type"] == "application/json"
        assert got.headers["user-agent"].startswith("vidgate-webhooks/")
        assert got.id.startswith("msg_") and abs(int(got.headers["webhook-timestamp"]) - time.time()) < 60
        assert got.headers["webhook-signature"].startswith("v1,")
        # The SDK helper and an implementation written from the spec agree.
        assert verify_webhook(got.body, got.headers, secret) == got.json
        assert hand_verify(secret, got.headers, got.body)
        assert not hand_verify(secret, got.headers, got.body + b" ")
        assert set(got.json) == {"type", "timestamp", "data"} and got.json["timestamp"].endswith("Z")
        assert got.json["data"]["id"] == task_id and got.json["data"]["object"] == "generation.task"
        # No credential of any kind travels with a webhook.
        everything = got.body.decode() + repr(got.headers)
        assert api_key not in everything and secret not in everything and secret[6:30] not in everything
        assert "authorization" not in got.headers
    assert processing.id != completed.id
    assert processing.json["data"]["status"] in ("processing", "completed")
    # The completed event carries the task exactly as GET /v1/tasks/{id} shows it (2026-07-27).
    assert completed.json["data"] == task
    assert completed.json["data"]["result"]["videos"][0]["url"][0].startswith("http://vidgate.test/files/")

    log = deliveries(live, task_id)
    assert [(d["event"], d["status"], d["attempt_count"]) for d in log] == [
        ("task.processing", "delivered", 1),
        ("task.completed", "delivered", 1),
    ]
    assert [d["id"] for d in log] == [processing.id, completed.id]
    for entry in log:
        assert entry["object"] == "webhook.delivery" and entry["url"] == receiver.url("/hook?src=vidgate")
        assert entry["next_attempt_at"] is None and entry["delivered_at"] is not None
        [attempt] = entry["attempts"]
        assert (attempt["attempt"], attempt["status_code"], attempt["error"]) == (1, 200, None)
        assert attempt["response"] == "ok" and attempt["duration_ms"] >= 0


def test_a_receiver_that_fails_three_times_still_gets_each_event(
    live: TestClient, database: Database, api_key: str
) -> None:
    receiver = Receiver(fail_first=3)
    try:
        task_id = submit(live, {**PIX, "callback_url": receiver.url()})
        assert wait_finished(live, task_id, headers=NEW)["status"] == "completed"
        receiver.wait_for(lambda r: sorted(r.events()) == ["task.completed", "task.processing"])
        secret = webhook_secret(database, api_key)
        by_id: dict[str, list[Any]] = {}
        for got in receiver.requests:
            by_id.setdefault(got.id, []).append(got)
        assert len(by_id) == 2
        for attempts in by_id.values():
            # Same webhook-id and the very same bytes on every retry; each one signed afresh.
            assert [a.answered for a in attempts] == [500, 500, 500, 200]
            assert len({a.body for a in attempts}) == 1
            for a in attempts:
                assert hand_verify(secret, a.headers, a.body)
                assert verify_webhook(a.body, a.headers, secret)["data"]["id"] == task_id
        for entry in deliveries(live, task_id):
            assert entry["status"] == "delivered" and entry["attempt_count"] == 4
            assert [a["status_code"] for a in entry["attempts"]] == [500, 500, 500, 200]
            assert [a["error"] for a in entry["attempts"]] == ["HTTP 500"] * 3 + [None]
            assert entry["attempts"][0]["response"] == "receiver says no"
            assert [a["attempt"] for a in entry["attempts"]] == [1, 2, 3, 4]
    finally:
        receiver.close()


def test_a_failed_task_sends_task_failed_with_its_error(live: TestClient, receiver: Receiver) -> None:
    body = {**PIX, "image_urls": ["http://127.0.0.1:9/none.png"], "callback_url": receiver.url()}
    task_id = submit(live, body)
    assert wait_finished(live, task_id, headers=NEW)["status"] == "failed"
    receiver.wait_for(lambda r: "task.failed" in r.events())
    failed = next(r for r in receiver.delivered() if r.json["type"] == "task.failed")
    assert failed.json["data"]["status"] == "failed"
    assert failed.json["data"]["error"]["code"] == "image_fetch_failed"
    assert receiver.events() == ["task.processing", "task.failed"]


def test_cancel_redeliver_and_the_log_are_per_key(
    api_only: TestClient,
    hook_settings: Settings,
    database: Database,
    receiver: Receiver,
    api_key: str,
    other_key: str,
) -> None:
    task_id = submit(api_only, {**PIX, "callback_url": receiver.url()})
    assert deliveries(api_only, task_id) == []  # `pending` sends nothing: the submit said it
    assert api_only.post(f"/v1/tasks/{task_id}/cancel").json()["data"]["status"] == "cancelled"
    [queued] = deliveries(api_only, task_id)
    assert (queued["event"], queued["status"], queued["attempt_count"], queued["attempts"]) == (
        "task.cancelled",
        "pending",
        0,
        [],
    )
    dispatch_until(hook_settings, database, lambda: len(receiver.delivered()) == 1)
    [first] = receiver.delivered()
    assert first.id == queued["id"] and first.json["data"]["status"] == "cancelled"
    assert verify_webhook(first.body, first.headers, webhook_secret(database, api_key))

    # Another key sees neither the log nor the redeliver route: a 404, as for its tasks.
    for response in (
        api_only.get(f"/v1/tasks/{task_id}/deliveries", headers=auth(other_key)),
        api_only.post(f"/v1/tasks/{task_id}/deliveries/{first.id}/redeliver", headers=auth(other_key)),
        api_only.get("/v1/tasks/task_01AAAAAAAAAAAAAAAAAAAAAAAA/deliveries"),
    ):
        assert response.status_code == 404, response.text
        assert response.json()["error"] == {
            "code": 404,
            "type": "not_found_error",
            "param": "task_id",
            "message": response.json()["error"]["message"],
        }
    missing = api_only.post(f"/v1/tasks/{task_id}/deliveries/msg_nope/redeliver?language=zh")
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "delivery_id"
    assert "msg_nope" in missing.json()["error"]["message"] and "投递" in missing.json()["error"]["message"]
    assert api_only.get(f"/v1/tasks/{task_id}/deliveries", headers={"Authorization": ""}).status_code == 401

    again = api_only.post(f"/v1/tasks/{task_id}/deliveries/{first.id}/redeliver")
    assert again.status_code == 200, again.text
    assert again.json()["data"]["status"] == "pending" and again.json()["data"]["id"] == first.id
    dispatch_until(hook_settings, database, lambda: len(receiver.delivered()) == 2)
    second = receiver.delivered()[1]
    assert (second.id, second.body) == (first.id, first.body)  # the same event, byte for byte
    [entry] = deliveries(api_only, task_id)
    assert entry["status"] == "delivered" and [a["attempt"] for a in entry["attempts"]] == [1, 2]


BAD_CALLBACKS: list[tuple[Any, str]] = [
    (123, "must be a string"),
    (["http://example.com/"], "must be a string"),
    ("", "must not be empty"),
    ("example.com/hook", "http(s) URL"),
    ("ftp://example.com/hook", "http(s) URL"),
    ("file:///etc/passwd", "http(s) URL"),
    ("http://exa mple.com/hook", "http(s) URL"),
    ("http://ex%3Cample.com/hook", "http(s) URL"),
    ("http://example.com/hook\n", "http(s) URL"),
    ("http://user:pw@example.com/hook", "credentials"),
    ("https://example.com/" + "a" * 2048, "at most 2048"),
    ("http://127.0.0.1:8000/hook", "loopback"),
    ("http://localhost:8000/hook", "loopback"),
    ("http://app.localhost/hook", "loopback"),
    ("http://[::1]/hook", "loopback"),
    ("http://10.1.2.3/hook", "private"),
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://[::ffff:192.168.0.1]/hook", "private"),
    ("http://2130706433/hook", "non-canonical"),
]


@pytest.mark.parametrize(("value", "says"), BAD_CALLBACKS)
def test_bad_callback_urls_are_refused_at_submit(
    hook_settings: Settings, database: Database, api_key: str, value: Any, says: str
) -> None:
    strict = hook_settings.model_copy(update={"allow_private_urls": False})
    with TestClient(create_app(strict, run_worker=False), headers=auth(api_key)) as client:
        response = client.post("/v1/videos/generations", json={**PIX, "callback_url": value})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert (error["code"], error["type"], error["param"]) == (
            400,
            "invalid_request_error",
            "callback_url",
        )
        assert says in error["message"], error["message"]
        assert client.get("/v1/tasks").json()["data"] == []  # nothing was created


def test_callback_url_is_optional_and_part_of_the_idempotent_body(
    api_only: TestClient, database: Database, receiver: Receiver
) -> None:
    plain = submit(api_only, {**PIX, "callback_url": None})
    assert api_only.post(f"/v1/tasks/{plain}/cancel").status_code == 200
    assert deliveries(api_only, plain) == []  # no callback, no delivery
    row = tasks.get(database, plain)
    assert row is not None and row.callback_url is None and "callback_url" not in row.request

    body = {**PIX, "callback_url": receiver.url("/a")}
    first = submit(api_only, body, **{"Idempotency-Key": "k-1"})
    replay = api_only.post("/v1/videos/generations", json=body, headers={"Idempotency-Key": "k-1"})
    assert replay.headers["Idempotency-Replayed"] == "true"
    assert replay.json()["data"][0]["task_id"] == first
    other = api_only.post(
        "/v1/videos/generations",
        json={**body, "callback_url": receiver.url("/b")},
        headers={"Idempotency-Key": "k-1"},
    )
    assert other.status_code == 409, other.text
    stored = tasks.get(database, first)
    assert stored is not None and stored.callback_url == receiver.url("/a")


def test_sdk_sends_callback_url(
    hook_settings: Settings, database: Database, api_key: str, receiver: Receiver
) -> None:
    app = create_app(hook_settings, run_worker=False)
    with serving(app) as base, Client(api_key=api_key, base_url=base) as sdk:
        task = sdk.videos.create(**PIX, callback_url=receiver.url("/sdk"))
        plain = sdk.videos.create(**PIX)

        async def via_async() -> str:
            async with AsyncClient(api_key=api_key, base_url=base) as client:
                return (await client.videos.create(**PIX, callback_url=receiver.url("/async"))).id

        other = asyncio.run(via_async())
    callbacks = {t: getattr(tasks.get(database, t), "callback_url", None) for t in (task.id, plain.id, other)}
    assert callbacks == {task.id: receiver.url("/sdk"), plain.id: None, other: receiver.url("/async")}
