"""The `vidu` provider against the fake Vidu over real HTTP: happy paths, the in-flight cap, crash
recovery of a task left in `submitting`, and callbacks (§1.8). Faults: test_vidu_faults.py."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
import uuid
from collections.abc import Callable
from email.utils import formatdate
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import ImageServer, png_bytes
from tests.e2e.conftest import probe
from tests.relay.conftest import wait_for
from vidgate import catalog, db, keys, migrations, tasks
from vidgate.api import create_app
from vidgate.config import Settings
from vidgate.db import Database
from vidgate.providers import Router, _relay
from vidgate.providers.vidu import SENT, ViduProvider, data_uris
from vidgate.testing import fake_vidu
from vidgate.testing.fake_media import tiny_mp4
from vidgate.testing.fake_serve import free_port, serve_in_thread, serving, stop_server
from vidgate.testing.fake_vidu import FakeViduConfig, vidu_signature
from vidgate.testing.fake_vidu_tasks import ViduTask

KEY = "vidu-test-key"  # the fake's default key
Gateway = Callable[..., Any]


# --- helpers shared with test_vidu_faults.py -------------------------------------------------------


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retry delays 40x shorter than in production (same jittered shape), so bursts finish fast."""
    real = _relay.backoff

    def quick(
        attempt: int, *, base: float = 2.0, cap: float = 60.0, retry_after: float | None = None
    ) -> float:
        return real(attempt, base=base / 40, cap=cap / 40, retry_after=retry_after)

    monkeypatch.setattr(_relay, "backoff", quick)
    monkeypatch.setattr("vidgate.worker.backoff", quick)


def open_gateway(make_gateway: Gateway, base: str, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "vidu_api_key": KEY,
        "vidu_base_url": base,
        "upstream_poll_seconds": 0.05,
        "upstream_timeout_seconds": 1.0,
        **overrides,
    }
    return make_gateway(**values)


def image_url(images: ImageServer, size: tuple[int, int] = (256, 256), fmt: str = "PNG") -> str:
    name = f"/{uuid.uuid4().hex}.{fmt.lower()}"
    return images.add(name, png_bytes((30, 120, 200), size, fmt), f"image/{fmt.lower()}")


def submit(client: TestClient, images: ImageServer, **fields: Any) -> str:
    body = {"model": "viduq3", "prompt": "a red fox runs", "image_urls": [image_url(images)], **fields}
    response = client.post("/v1/videos/generations", json=body)
    assert response.status_code == 200, response.text
    task_id: str = response.json()["data"][0]["task_id"]
    return task_id


def jobs_of(app: Any, task_id: str) -> list[ViduTask]:
    with app.fake.lock:
        return [t for t in app.fake.tasks.values() if t.request["payload"] == task_id]


def row(database: Database, task_id: str) -> Any:
    found = tasks.get(database, task_id)
    assert found is not None
    return found


def wait_row(database: Database, task_id: str, cond: Callable[[Any], bool], timeout: float = 10) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        current = row(database, task_id)
        if cond(current):
            return current
        time.sleep(0.02)
    raise AssertionError(f"task {task_id} never met the condition: {current}")


def assert_failed(data: dict[str, Any], code: str, type_: str) -> None:
    assert data["status"] == "failed", data
    assert data["error"]["code"] == code and data["error"]["type"] == type_, data["error"]
    assert data["cost"] == 0 and "result" not in data


# --- happy paths -----------------------------------------------------------------------------------


def test_enabled_only_with_a_key_and_routed_first() -> None:
    assert not ViduProvider.enabled(Settings(vidu_api_key=""))
    assert "vidu" not in Router(Settings(vidu_api_key="")).route("viduq3")
    settings = Settings(vidu_api_key="k", vidu_max_in_flight=7)
    for model in ("viduq3", "viduq3-mix"):
        route = Router(settings).route(model)
        assert route[0] == "vidu" and route[-1] == "local"
    assert "vidu" not in Router(settings).route("pixverse-v6")
    assert ViduProvider(settings).in_flight_cap() == 7


def test_viduq3_completes_with_a_rehosted_video(
    vidu: tuple[Any, str], make_gateway: Gateway, image_server: ImageServer, tmp_path: Path
) -> None:
    app, base = vidu
    first, second = image_url(image_server, (256, 256)), image_url(image_server, (300, 200), "JPEG")
    with open_gateway(make_gateway, base) as (client, _database):
        fields = {"image_urls": [first, second], "duration": 4, "resolution": "540p", "aspect_ratio": "9:16"}
        task_id = submit(client, image_server, seed=42, **fields)
        data = wait_for(client, task_id)
        assert data["status"] == "completed" and data["provider"] == "vidu", data
        url = data["result"]["videos"][0]["url"][0]
        assert url.startswith("http://testserver/files/results/") and base not in url
        video = client.get(url, headers={"Authorization": ""})
        assert video.status_code == 200
        assert video.content == tiny_mp4(4, "9:16", True)  # the fake's file, byte for byte
        (tmp_path / "out.mp4").write_bytes(video.content)
        facts = probe(tmp_path / "out.mp4")
        assert (facts.width, facts.height, facts.codec, facts.audio) == (90, 160, "h264", "aac")
        assert abs(facts.duration - 4) < 0.3
        assert client.get(data["result"]["thumbnail_url"]).status_code == 200

    [job] = jobs_of(app, task_id)
    request = job.request
    assert (request["model"], request["duration"], request["resolution"]) == ("viduq3", 4, "540p")
    assert (request["aspect_ratio"], request["seed"], request["callback_url"]) == ("9:16", 42, "")
    # The upstream cannot reach loopback URLs: the checked images travel inline.
    sizes = []
    for uri in request["images"]:
        assert uri.startswith("data:image/jpeg;base64,")
        sizes.append(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).size)
    assert sizes == [(256, 256), (300, 200)]
    stats = app.fake.stats
    assert stats.jobs_created == stats.submits == 1 and stats.submits_by_payload == {task_id: 1}


def test_viduq3_mix_from_an_uploaded_image(
    vidu: tuple[Any, str], make_gateway: Gateway, image_server: ImageServer
) -> None:
    app, base = vidu
    with open_gateway(make_gateway, base) as (client, _database):
        upload = client.post(
            "/v1/uploads/images", files={"file": ("cat.png", png_bytes((9, 9, 9)), "image/png")}
        )
        assert upload.status_code == 200, upload.text
        fields = {"model": "viduq3-mix", "image_urls": [upload.json()["url"]], "duration": 1}
        task_id = submit(client, image_server, resolution="1080p", aspect_ratio="1:1", **fields)
        data = wait_for(client, task_id)
        assert data["status"] == "completed" and data["provider"] == "vidu", data
        assert data["result"]["videos"][0]["width"] == data["result"]["videos"][0]["height"] == 90
    [job] = jobs_of(app, task_id)
    assert (job.request["model"], job.request["resolution"], job.request["aspect_ratio"]) == (
        "viduq3-mix",
        "1080p",
        "1:1",
    )
    assert len(job.request["images"]) == 1 and app.fake.stats.jobs_created == 1


def test_in_flight_cap_holds_excess_tasks_in_pending(
    vidu: tuple[Any, str], make_gateway: Gateway, image_server: ImageServer
) -> None:
    app, base = vidu
    # The fake would run 10 at once and refuses a 6th active job: only our cap keeps it at 5.
    app.fake.configure(concurrency=10, max_active_tasks=5, processing_base_s=60)
    with open_gateway(make_gateway, base, vidu_max_in_flight=5) as (client, _database):
        ids = [submit(client, image_server, duration=3) for _ in range(8)]
        results = [wait_for(client, task_id) for task_id in ids]
    assert [r["status"] for r in results] == ["completed"] * 8
    stats = app.fake.stats
    assert stats.max_in_flight == 5 and "QuotaExceeded" not in stats.submit_errors
    assert stats.jobs_created == 8 and set(stats.submits_by_payload.values()) == {1}


# --- a task left in `submitting` by a crashed worker ------------------------------------------------


def park(database: Database, image: str) -> str:
    """A task for a provider no worker serves: nobody claims it until `to_submitting` moves it."""
    with database.read() as conn:
        key_id = conn.execute(sa.select(db.api_keys.c.id).where(db.api_keys.c.name == "relay")).scalar_one()
    body = {"model": "viduq3", "prompt": "a red fox runs", "image_urls": [image]}
    created, _ = tasks.create(
        database, key_id=key_id, request=catalog.parse(body), body=body, provider="parked", estimated_time=9
    )
    return str(created.id)


def to_submitting(database: Database, task_id: str, sent_ago: float) -> None:
    """Leave the task as a worker does when it dies right after its SUBMITTING checkpoint."""
    now = time.time()
    with database.write() as conn:
        conn.execute(
            db.tasks.update()
            .where(db.tasks.c.id == task_id)
            .values(
                provider="vidu",
                status="processing",
                phase="submitting",
                upstream_state={"payload": task_id, SENT: now - sent_ago},
                lease_owner="gone-host:4242:dead",
                lease_until=now - 1,
                started_at=now - sent_ago,
                deadline_at=now + 600,
            )
        )


def create_jobs_at_fake(base: str, payloads: list[str]) -> list[str]:
    made = []
    with httpx.Client(base_url=base, headers={"Authorization": f"Token {KEY}"}) as fake:
        for payload in payloads:
            body = {
                "model": "viduq3",
                "prompt": "p",
                "images": ["https://example.com/a.png"],
                "payload": payload,
            }
            response = fake.post("/ent/v2/reference2video", json=body)
            assert response.status_code == 200, response.text
            made.append(str(response.json()["task_id"]))
    return made


@pytest.mark.parametrize("newer_jobs", [None, 0, 120], ids=["no-job", "job-on-page-1", "job-on-page-2"])
def test_crash_in_submitting_is_reconciled_not_resubmitted(
    vidu: tuple[Any, str], make_gateway: Gateway, image_server: ImageServer, newer_jobs: int | None
) -> None:
    app, base = vidu
    app.fake.configure(validate_images=False)  # the jobs made here by hand carry a placeholder URL
    with open_gateway(make_gateway, base) as (client, database):
        task_id = park(database, image_url(image_server))
        made = None
        if newer_jobs is not None:
            # The list is newest first, 100 a page: 120 later jobs push this one onto page 2.
            made, *_ = create_jobs_at_fake(base, [task_id] + [f"other-{n}" for n in range(newer_jobs)])
        to_submitting(database, task_id, sent_ago=30)
        data = wait_for(client, task_id)
        assert data["status"] == "completed" and data["provider"] == "vidu", data
        [job] = jobs_of(app, task_id)
        assert row(database, task_id).upstream_id == job.id
    assert made is None or made == job.id
    stats = app.fake.stats
    assert stats.lists >= (2 if newer_jobs else 1) and stats.submits_by_payload[task_id] == 1


# --- callbacks -------------------------------------------------------------------------------------


def signed_headers(url: str, key: str = KEY, date: str | None = None) -> dict[str, str]:
    date = date or formatdate(time.time(), usegmt=True)
    nonce = str(uuid.uuid4())
    signature = vidu_signature("POST", url, date, [("Date", date), ("x-request-nonce", nonce)], key)
    return {
        "Content-Type": "application/json",
        "Date": date,
        "x-request-nonce": nonce,
        "X-HMAC-SIGNED-HEADERS": "Date;x-request-nonce",
        "X-HMAC-ALGORITHM": "hmac-sha256",
        "X-HMAC-ACCESS-KEY": "vidu",
        "X-HMAC-SIGNATURE": signature,
    }


def test_verified_callback_wakes_the_task_and_forged_ones_do_not(
    vidu: tuple[Any, str], make_gateway: Gateway, image_server: ImageServer
) -> None:
    app, base = vidu
    url = "http://testserver/v1/callbacks/vidu"
    with open_gateway(make_gateway, base, upstream_poll_seconds=30) as (client, database):
        task_id = submit(client, image_server, duration=3)
        waiting = wait_row(database, task_id, lambda r: r.upstream_id and r.next_run_at > time.time() + 10)
        [job] = jobs_of(app, task_id)
        app.fake.advance(1000)
        body = json.dumps(app.fake.query_view(job)).encode()
        assert json.loads(body)["state"] == "success"
        stale = formatdate(time.time() - 600, usegmt=True)
        forged = [
            signed_headers(url, key="not-the-key"),
            {**signed_headers(url), "X-HMAC-SIGNATURE": base64.b64encode(b"x" * 32).decode()},
            {**signed_headers(url), "x-request-nonce": "replaced"},
            signed_headers("http://testserver/v1/callbacks/other"),
            signed_headers(url, date=stale),
            {k: v for k, v in signed_headers(url).items() if k != "X-HMAC-SIGNATURE"},
            {"Content-Type": "application/json"},
        ]
        for headers in forged:
            refused = client.post("/v1/callbacks/vidu", content=body, headers=headers)
            assert refused.status_code == 401, refused.text
            assert refused.json()["error"]["type"] == "authentication_error"
        assert row(database, task_id).next_run_at == waiting.next_run_at

        accepted = client.post("/v1/callbacks/vidu", content=body, headers=signed_headers(url))
        assert accepted.status_code == 200 and accepted.json() == {"received": True}
        data = wait_for(client, task_id, timeout=5)  # long before the 30 s poll would have come
        assert data["status"] == "completed", data


def test_real_callbacks_from_the_fake_drive_the_task(tmp_path: Path, image_server: ImageServer) -> None:
    # A slow virtual clock: callback Dates run ahead of the wall clock by (factor - 1) x elapsed.
    config = FakeViduConfig(time_factor=10, processing_base_s=5, processing_per_video_s=0, api_key=KEY)
    fake_app = fake_vidu.create_app(config)
    port = free_port()
    settings = Settings(
        data_dir=tmp_path / "data",
        allow_private_urls=True,
        poll_interval_seconds=0.05,
        lease_seconds=5,
        vidu_api_key=KEY,
        vidu_callbacks=True,
        public_url=f"http://127.0.0.1:{port}",
        upstream_poll_seconds=30,  # only a callback can make this task finish quickly
    )
    settings.data_dir.mkdir(parents=True)
    database = Database(settings.effective_database_url)
    migrations.upgrade(database)
    secret = keys.create(database, "callbacks")[1]
    with serving(fake_app) as fake_base:
        gateway_base = serve_in_thread(
            create_app(settings.model_copy(update={"vidu_base_url": fake_base})), port=port
        )
        try:
            with httpx.Client(base_url=gateway_base, headers={"Authorization": f"Bearer {secret}"}) as client:
                body = {
                    "model": "viduq3",
                    "prompt": "p",
                    "image_urls": [image_url(image_server)],
                    "duration": 3,
                }
                task_id = client.post("/v1/videos/generations", json=body).json()["data"][0]["task_id"]
                deadline = time.time() + 15
                while (data := client.get(f"/v1/tasks/{task_id}").json()["data"])["status"] != "completed":
                    assert time.time() < deadline and data["status"] != "failed", data
                    time.sleep(0.05)
        finally:
            stop_server(gateway_base)
            database.dispose()
        [job] = jobs_of(fake_app, task_id)
        assert job.request["callback_url"] == f"http://127.0.0.1:{port}/v1/callbacks/vidu"
        stats = fake_app.fake.stats
        assert stats.callbacks_by_state.get("success") == 1 and stats.callbacks_failed == 0
        assert stats.polls <= 3  # woken by callbacks, not by the 30 s poll timer


def verify(
    settings: Settings,
    headers: dict[str, str] | list[tuple[str, str]],
    body: bytes,
    *,
    method: str = "POST",
    query: str = "",
) -> Any:
    pairs = list(headers.items()) if isinstance(headers, dict) else headers
    return ViduProvider.verify_callback(settings, method, "/v1/callbacks/vidu", query, pairs, body)


def test_verify_callback_rules() -> None:
    settings = Settings(vidu_api_key=KEY)
    url = "https://gw.example.com/v1/callbacks/vidu"
    body = json.dumps({"id": "880001", "payload": "task_1", "state": "success"}).encode()
    assert verify(settings, signed_headers(url), body) == ("task_1", "880001")
    assert verify(settings, signed_headers(url), b'{"task_id": 7, "payload": "t"}') == ("t", "7")
    # The body is not signed (§1.8): it can only choose which task gets polled.
    assert verify(settings, signed_headers(url), b'{"id": "1", "payload": "other"}') == ("other", "1")
    for bad_body in (b"not json", b"[]", b'{"id": "1"}', b'{"payload": "t"}'):
        assert verify(settings, signed_headers(url), bad_body) is None
    assert verify(Settings(vidu_api_key=""), signed_headers(url), body) is None  # no key: nothing verifies
    future = formatdate(time.time() + 400, usegmt=True)
    assert verify(settings, signed_headers(url, date=future), body) is None
    assert verify(settings, signed_headers(url, date="yesterday"), body) is None
    for name, value in (("X-HMAC-ALGORITHM", "hmac-sha1"), ("X-HMAC-ACCESS-KEY", "other")):
        assert verify(settings, {**signed_headers(url), name: value}, body) is None
    assert verify(settings, {**signed_headers(url), "X-HMAC-SIGNED-HEADERS": "Date;x-missing"}, body) is None
    doubled = [*signed_headers(url).items(), ("date", formatdate(time.time() - 100, usegmt=True))]
    assert verify(settings, doubled, body) is None  # which Date was signed? refuse
    assert verify(settings, signed_headers(url), body, method="PUT") is None
    assert verify(settings, signed_headers(url), body, query="a=1") is None
    # Behind a proxy that strips /vidgate, Vidu signed the public path.
    proxied = Settings(vidu_api_key=KEY, public_url="https://gw.example.com/vidgate")
    headers = signed_headers("https://gw.example.com/vidgate/v1/callbacks/vidu")
    assert verify(proxied, headers, body) == ("task_1", "880001")
    assert verify(settings, headers, body) is None


def test_data_uris_fit_the_body_budget() -> None:
    noisy = Image.frombytes("RGB", (1600, 800), bytes(range(256)) * (1600 * 800 * 3 // 256))
    uris = data_uris([noisy, noisy], 200_000)
    for uri in uris:
        assert len(uri) <= 100_000
        shrunk = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
        assert min(shrunk.size) >= 128 and abs(shrunk.size[0] / shrunk.size[1] - 2) < 0.02
    # An impossible budget shrinks to Vidu's minimum side and no further.
    [tiny] = data_uris([Image.new("RGB", (130, 520))], 10)
    assert Image.open(io.BytesIO(base64.b64decode(tiny.split(",", 1)[1]))).size == (128, 512)


def test_cancel(vidu: tuple[Any, str], make_gateway: Gateway, image_server: ImageServer) -> None:
    app, base = vidu
    app.fake.configure(processing_base_s=10_000)
    with open_gateway(make_gateway, base) as (client, database):
        task_id = submit(client, image_server, duration=3)
        upstream_id = wait_row(database, task_id, lambda r: r.upstream_id).upstream_id
        settings = Settings(vidu_api_key=KEY, vidu_base_url=base)

        async def cancels() -> list[bool]:
            provider = ViduProvider(settings)
            try:
                return [await provider.cancel(i) for i in (upstream_id, upstream_id, "123")]
            finally:
                await provider.aclose()

        # Active job: cancelled; finished job and unknown id: refused.
        assert asyncio.run(cancels()) == [True, False, False]
        data = wait_for(client, task_id)
    assert_failed(data, "upstream_cancelled", "server_error")
    assert app.fake.stats.cancels == 3


def test_cancel_through_the_api_cancels_the_upstream_job(
    vidu: tuple[Any, str], make_gateway: Gateway, image_server: ImageServer
) -> None:
    app, base = vidu
    app.fake.configure(processing_base_s=10_000)
    with open_gateway(make_gateway, base) as (client, database):
        task_id = submit(client, image_server, duration=3)
        wait_row(database, task_id, lambda r: r.upstream_id)
        assert client.post(f"/v1/tasks/{task_id}/cancel").status_code == 200
        data = wait_for(client, task_id)
    assert data["status"] == "cancelled" and data["cost"] == 0, data
    [job] = jobs_of(app, task_id)
    assert (job.state, job.err_code, app.fake.stats.cancels) == ("failed", "UserCancelled", 1)
