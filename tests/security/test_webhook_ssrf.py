"""SSRF through `callback_url`: every hostile spelling of a private address is refused at submit,
and a name that resolves to one is refused when delivering, without any connection (a listener on
loopback that every hostile URL points at must see none). A receiver's redirect is never followed.
And no webhook, nor the delivery log, carries a credential.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import ImageServer, auth, png_bytes
from tests.security.test_secrets import ADMIN_TOKEN, METRICS_TOKEN, UPSTREAM_KEY, gateway
from tests.security.test_ssrf_suite import PIX, PUBLIC, fake_dns, hostile_forms
from tests.test_netguard import listener, no_system_dns
from tests.test_webhooks import deliveries, dispatch_until
from tests.webhook_receiver import Receiver
from vidgate import keys
from vidgate.api import create_app
from vidgate.config import Settings
from vidgate.db import Database
from vidgate.testing import fake_vidu
from vidgate.testing.fake_serve import serving
from vidgate.testing.fake_vidu_spec import FakeViduConfig

VIDU = {"model": "viduq3", "prompt": "a fox", "duration": 3}
__all__ = ["fake_dns", "no_system_dns"]  # fixtures: fake names only, 127.0.0.2 plays a public host


@pytest.fixture
def strict(settings: Settings) -> Settings:
    """The SSRF guard on, quick retries that end soon."""
    return settings.model_copy(
        update={
            "allow_private_urls": False,
            "webhook_retry_schedule": [0.05],
            "webhook_retry_window_seconds": 0.5,
            "webhook_timeout_seconds": 2.0,
        }
    )


@pytest.fixture
def guarded(strict: Settings, database: Database, api_key: str) -> Iterator[TestClient]:
    with TestClient(create_app(strict, run_worker=False), headers=auth(api_key)) as client:
        yield client


def queue_event(client: TestClient, callback: str) -> tuple[int, str]:
    """Submit with this callback and cancel at once (a task.cancelled delivery): (status, id or param)."""
    response = client.post("/v1/videos/generations", json={**PIX, "callback_url": callback})
    if response.status_code != 200:
        return response.status_code, response.json()["error"].get("param", "")
    task_id: str = response.json()["data"][0]["task_id"]
    assert client.post(f"/v1/tasks/{task_id}/cancel").status_code == 200
    return 200, task_id


def settled(client: TestClient, task_ids: list[str]) -> bool:
    return all(d["status"] != "pending" for t in task_ids for d in deliveries(client, t))


def test_hostile_callbacks_never_connect(
    guarded: TestClient, strict: Settings, database: Database, fake_dns: list[str]
) -> None:
    with listener("127.0.0.1") as port:
        accepted: list[str] = []
        for url in hostile_forms(port):
            status, outcome = queue_event(guarded, url)
            if status == 200:
                accepted.append(outcome)
            else:
                assert (status, outcome) == (400, "callback_url"), url
        # Only names get past the submit check; their addresses are checked when delivering.
        assert len(accepted) == 3
        dispatch_until(strict, database, lambda: settled(guarded, accepted))
    for task_id in accepted:
        [entry] = deliveries(guarded, task_id)
        assert entry["status"] == "failed" and entry["attempt_count"] == 1, entry
        [attempt] = entry["attempts"]
        assert attempt["status_code"] is None and attempt["error"].startswith("refused: "), attempt
    assert {"evil.example", "evil6.example", "mixed.example"} <= set(fake_dns)


def test_redirects_are_not_followed(
    guarded: TestClient, strict: Settings, database: Database, fake_dns: list[str]
) -> None:
    try:
        public = Receiver(host=PUBLIC)
    except OSError:
        pytest.skip(f"cannot listen on {PUBLIC}")
    try:
        with listener("127.0.0.1") as port:
            public.status = 302
            public.answer_headers = {"Location": f"http://127.0.0.1:{port}/steal"}
            _, task_id = queue_event(guarded, f"http://public.example:{public.port}/hook")
            dispatch_until(strict, database, lambda: settled(guarded, [task_id]))
        [entry] = deliveries(guarded, task_id)
        assert entry["status"] == "failed" and entry["attempt_count"] >= 2
        assert {a["error"] for a in entry["attempts"]} == {"HTTP 302"}
        # Each attempt went to the checked address, under the callback's own host name.
        assert len(public.requests) == entry["attempt_count"]
        assert {r.headers["host"] for r in public.requests} == {f"public.example:{public.port}"}
    finally:
        public.close()


def test_a_public_name_is_delivered_by_its_checked_address(
    guarded: TestClient, strict: Settings, database: Database, fake_dns: list[str]
) -> None:
    """The control case: the refusals above are the guard at work, not a broken delivery path."""
    try:
        public = Receiver(host=PUBLIC)
    except OSError:
        pytest.skip(f"cannot listen on {PUBLIC}")
    try:
        _, task_id = queue_event(guarded, f"http://public.example:{public.port}/hook")
        dispatch_until(strict, database, lambda: settled(guarded, [task_id]))
        [entry] = deliveries(guarded, task_id)
        assert entry["status"] == "delivered", entry
        assert [r.json["type"] for r in public.delivered()] == ["task.cancelled"]
    finally:
        public.close()


def test_webhooks_carry_no_secret(tmp_path: Path, image_server: ImageServer) -> None:
    """A task relayed to an upstream (fake Vidu) with a callback: neither the upstream key, the API
    keys, the admin token nor the signing secret is in any webhook or in the delivery log."""
    upstream = fake_vidu.create_app(FakeViduConfig(api_key=UPSTREAM_KEY, time_factor=100.0))
    receiver = Receiver()
    try:
        with (
            serving(upstream) as base,
            gateway(tmp_path, base, UPSTREAM_KEY) as (client, database, mine, other),
        ):
            image = image_server.add("/cat.png", png_bytes((30, 120, 200)))
            body = {**VIDU, "image_urls": [image], "callback_url": receiver.url()}
            task_id = client.post("/v1/videos/generations", json=body).json()["data"][0]["task_id"]
            receiver.wait_for(lambda r: "task.completed" in r.events(), timeout=30)
            log = client.get(f"/v1/tasks/{task_id}/deliveries").text
            key = keys.authenticate(database, mine)
            assert key is not None
            signing = keys.webhook_secret(database, key.id)
            assert signing is not None
        sent = "\n".join(f"{r.headers!r} {r.body.decode()}" for r in receiver.requests)
        assert receiver.events() == ["task.processing", "task.completed"]
        for secret in (UPSTREAM_KEY, ADMIN_TOKEN, METRICS_TOKEN, mine, other, signing):
            for where, text in (("webhooks", sent), ("delivery log", log)):
                assert secret[-16:] not in text, f"part of a secret ({secret[:6]}...) is in the {where}"
    finally:
        receiver.close()
