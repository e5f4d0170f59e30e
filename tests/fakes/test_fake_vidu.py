"""The fake Vidu over real HTTP: behaviour of research/upstream-apis.md §1 and §3."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import av
import httpx
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from vidgate.testing.fake_serve import serve_in_thread, stop_server
from vidgate.testing.fake_vidu import (
    FakeViduConfig,
    create_app,
    verify_vidu_callback,
    vidu_signature,
)
from vidgate.testing.fake_vidu_spec import validate_reference2video

KEY = "vidu-test-key"
# time_factor 1: nothing moves on its own during a test; tests move time with advance().
BASE = FakeViduConfig(
    api_key=KEY,
    time_factor=1.0,
    seed=7,
    created_s=1,
    queueing_s=2,
    processing_base_s=60,
    processing_per_video_s=0,
)
PROCESSING = 60.0


def wait_until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


class Receiver:
    """A callback receiver that records requests and answers from a script of statuses."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.script: list[int] = []

        async def hook(request: Request) -> Response:
            self.calls.append(
                {"url": str(request.url), "headers": dict(request.headers), "body": await request.body()}
            )
            return Response("ok", status_code=self.script.pop(0) if self.script else 200)

        self.app = Starlette(routes=[Route("/{path:path}", hook, methods=["POST"])])
        self.base = serve_in_thread(self.app)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[Any, str]]:
    app = create_app(BASE)
    base = serve_in_thread(app)
    yield app, base
    stop_server(base)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    stop_server(rec.base)


@pytest.fixture
def fake(server: tuple[Any, str]) -> Any:
    server[0].fake.reset()
    return server[0].fake


@pytest.fixture
def client(server: tuple[Any, str], fake: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server[1], headers={"Authorization": f"Token {KEY}"}, timeout=10) as c:
        yield c


def body(**over: Any) -> dict[str, Any]:
    return {"model": "viduq3", "images": ["https://example.com/a.png"], "prompt": "a cat walks", **over}


def submit(client: httpx.Client, **over: Any) -> dict[str, Any]:
    r = client.post("/ent/v2/reference2video", json=body(**over))
    assert r.status_code == 200, r.text
    return dict(r.json())


def state(client: httpx.Client, task_id: str) -> dict[str, Any]:
    r = client.get(f"/ent/v2/tasks/{task_id}/creations")
    assert r.status_code == 200, r.text
    return dict(r.json())


def png_data_uri(width: int, height: int, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buf, format=fmt)
    mime = "png" if fmt == "PNG" else "jpeg"
    return f"data:image/{mime};base64," + base64.b64encode(buf.getvalue()).decode()


def assert_error(r: httpx.Response, status: int, reason: str, mentions: str | None = None) -> None:
    assert r.status_code == status, r.text
    data = r.json()
    assert data["code"] == status and data["reason"] == reason
    assert isinstance(data["message"], str) and data["metadata"]["trace_id"]
    if mentions:
        assert mentions in data["message"]


# --- auth and validation ------------------------------------------------------------------------
@pytest.mark.parametrize("header", [None, "Token wrong", f"Bearer {KEY}", KEY])
def test_unauthorized(server: tuple[Any, str], fake: Any, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    r = httpx.post(server[1] + "/ent/v2/reference2video", json=body(), headers=headers)
    assert_error(r, 401, "Unauthorized")
    assert fake.stats.unauthorized == 1 and fake.stats.jobs_created == 0


@pytest.mark.parametrize(
    ("over", "reason", "field"),
    [
        ({"model": None}, "FieldLacking", "model"),
        ({"model": "viduq2"}, "FieldInvalid", "model"),
        ({"images": None}, "FieldLacking", "images"),
        ({"images": []}, "FieldItemCountOutOfRange", "images"),
        ({"images": ["https://e.com/x.png"] * 8}, "FieldItemCountOutOfRange", "images"),
        ({"images": "https://e.com/x.png"}, "FieldInvalid", "images"),
        ({"prompt": ""}, "FieldLacking", "prompt"),
        ({"prompt": "x" * 5001}, "FieldInvalid", "prompt"),
        ({"duration": 2}, "FieldInvalid", "duration"),
        ({"duration": 17, "model": "viduq3-mix"}, "FieldInvalid", "duration"),
        ({"duration": "5"}, "FieldInvalid", "duration"),
        ({"resolution": "540p", "model": "viduq3-mix"}, "FieldInvalid", "resolution"),
        ({"resolution": "480p"}, "FieldInvalid", "resolution"),
        ({"aspect_ratio": "21:9"}, "FieldInvalid", "aspect_ratio"),
        ({"seed": -1}, "FieldInvalid", "seed"),
        ({"callback_url": "ftp://x"}, "FieldInvalid", "callback_url"),
        ({"subjects": [{"name": "a", "images": []}]}, "FieldUnwanted", "subjects"),
        ({"images": [png_data_uri(64, 64)]}, "PageSizeOutOfRange", "images[0]"),
        ({"images": [png_data_uri(600, 128)]}, "PageSizeOutOfRange", "images[0]"),
        ({"images": ["data:image/png;base64,bm90IGFuIGltYWdl"]}, "ImageFormatInvalid", None),
        ({"images": ["file:///etc/passwd"]}, "FieldInvalid", "images[0]"),
    ],
)
def test_validation_errors(
    client: httpx.Client, fake: Any, over: dict[str, Any], reason: str, field: str
) -> None:
    payload = {k: v for k, v in body(**over).items() if v is not None}
    assert_error(client.post("/ent/v2/reference2video", json=payload), 400, reason, field)
    assert fake.stats.jobs_created == 0 and fake.stats.submit_errors == {reason: 1}


def test_invalid_json_is_bad_request(client: httpx.Client) -> None:
    r = client.post("/ent/v2/reference2video", content=b"{nope", headers={"Content-Type": "application/json"})
    assert_error(r, 400, "BadRequest")


@pytest.mark.parametrize(
    "over",
    [
        {"model": "viduq3-mix", "duration": 1, "resolution": "1080p"},
        {"duration": 16, "resolution": "540p", "aspect_ratio": "3:4"},
        {"images": [png_data_uri(256, 256, "JPEG")] * 7, "aspect_ratio": "auto"},
    ],
)
def test_valid_edges_accepted(client: httpx.Client, over: dict[str, Any]) -> None:
    assert submit(client, **over)["state"] == "created"


def test_fetch_images_knob(client: httpx.Client, fake: Any) -> None:
    big = io.BytesIO()
    Image.new("RGB", (300, 200)).save(big, format="PNG")
    files = {"/ok.png": big.getvalue(), "/junk.png": b"not an image"}

    async def serve(request: Request) -> Response:
        data = files.get(request.url.path)
        return Response(data, media_type="image/png") if data else Response("no", status_code=404)

    images = serve_in_thread(Starlette(routes=[Route("/{p:path}", serve)]))
    try:
        fake.configure(fetch_images=True)
        assert submit(client, images=[images + "/ok.png"], aspect_ratio="auto")["state"] == "created"
        bad = client.post("/ent/v2/reference2video", json=body(images=[images + "/missing.png"]))
        assert_error(bad, 400, "ImageDownloadFailure", "images[0]")
        junk = client.post("/ent/v2/reference2video", json=body(images=[images + "/junk.png"]))
        assert_error(junk, 400, "ImageFormatInvalid")
        fake.configure(fetch_images=False)
        assert submit(client, images=[images + "/missing.png"])["state"] == "created"
    finally:
        stop_server(images)
    task = next(iter(fake.tasks.values()))
    assert task.file_ratio == "3:2"  # `auto` follows the first image


def test_strict_mix_ratios_knob(client: httpx.Client, fake: Any) -> None:
    fake.configure(strict_mix_aspect_ratios=True)
    r = client.post("/ent/v2/reference2video", json=body(model="viduq3-mix", aspect_ratio="4:3"))
    assert_error(r, 400, "FieldInvalid", "aspect_ratio")


def test_create_body(client: httpx.Client, fake: Any) -> None:
    created = submit(client, payload="gw-task-1", duration=8, resolution="1080p", watermark=True)
    assert re.fullmatch(r"\d{15,20}", created["task_id"])
    assert created["state"] == "created" and created["payload"] == "gw-task-1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", created["created_at"])
    assert isinstance(created["credits"], int) and created["credits"] > 0
    assert created["seed"] > 0  # 0/absent means random; the actual seed is reported
    for key in ("model", "images", "prompt", "duration", "aspect_ratio", "resolution", "movement_amplitude"):
        assert key in created
    assert fake.stats.jobs_created_by_model == {"viduq3": 1}
    assert fake.stats.jobs_created_by_endpoint == {"reference2video": 1}
    assert fake.stats.submits_by_payload == {"gw-task-1": 1}


# --- progression and queue ----------------------------------------------------------------------
def test_state_progression(client: httpx.Client, fake: Any) -> None:
    task_id = submit(client, payload="p")["task_id"]
    q = state(client, task_id)
    assert (q["state"], q["creations"], q["err_code"], q["payload"]) == ("created", [], "", "p")
    fake.advance(1.0)
    assert state(client, task_id)["state"] == "queueing"
    fake.advance(2.0)
    assert state(client, task_id)["state"] == "processing"
    fake.advance(PROCESSING - 0.5)
    assert state(client, task_id)["state"] == "processing"
    fake.advance(1.0)
    q = state(client, task_id)
    assert q["state"] == "success" and q["err_code"] == "" and q["credits"] > 0
    (creation,) = q["creations"]
    assert set(creation) == {"id", "url", "cover_url"}  # no watermarked_url without watermark
    assert creation["url"].startswith(str(client.base_url).rstrip("/") + "/_files/")
    assert fake.stats.polls == 5


def test_queueing_beyond_five(client: httpx.Client, fake: Any) -> None:
    ids = [submit(client)["task_id"] for _ in range(7)]
    fake.advance(3.0)
    states = [state(client, i)["state"] for i in ids]
    assert states == ["processing"] * 5 + ["queueing"] * 2
    fake.advance(PROCESSING)
    states = [state(client, i)["state"] for i in ids]
    assert states == ["success"] * 5 + ["processing"] * 2
    fake.advance(PROCESSING)
    assert {state(client, i)["state"] for i in ids} == {"success"}
    assert fake.stats.max_in_flight == 5


def test_queuing_spelling_knob(client: httpx.Client, fake: Any) -> None:
    fake.configure(queueing_spelling="queuing")
    task_id = submit(client)["task_id"]
    fake.advance(1.5)
    assert state(client, task_id)["state"] == "queuing"
    listed = client.get("/ent/v2/tasks", params={"states": "queuing"}).json()["tasks"]
    assert [t["id"] for t in listed] == [task_id]


def test_time_factor_runs_minutes_in_milliseconds(client: httpx.Client, fake: Any) -> None:
    fake.configure(time_factor=5000.0)  # 63 virtual seconds ~ 13 ms
    task_id = submit(client)["task_id"]
    wait_until(lambda: state(client, task_id)["state"] == "success", timeout=3)


def test_many_jobs_are_cheap(fake: Any) -> None:
    req = validate_reference2video(body(), fake.config)
    started = time.perf_counter()
    with fake.lock:
        for _ in range(3000):
            fake.new_task(dict(req), 80, "http://127.0.0.1:1", "", "16:9")
    fake.advance(3.0)
    assert fake.stats_snapshot()["tasks_by_state"] == {"processing": 5, "queueing": 2995}
    fake.advance(PROCESSING * 10)
    assert fake.stats_snapshot()["tasks_by_state"] == {"success": 50, "processing": 5, "queueing": 2945}
    assert time.perf_counter() - started < 3.0


# --- injected failures --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("CreditInsufficient", 400),
        ("QuotaExceeded", 429),
        ("TooManyRequests", 429),
        ("AuditSubmitIllegal", 400),
        ("InternalServiceFailure", 500),
    ],
)
def test_submit_error_injection(client: httpx.Client, fake: Any, code: str, status: int) -> None:
    r = client.post("/_fake/config", json={"submit_errors": [{"code": code, "count": 2}]})
    assert r.status_code == 200 and r.json()["submit_errors"][0]["count"] == 2
    for _ in range(2):
        assert_error(client.post("/ent/v2/reference2video", json=body()), status, code)
    submit(client)
    stats = client.get("/_fake/stats").json()
    assert stats["jobs_created"] == 1 and stats["submit_errors"] == {code: 2}
    assert stats["injected"] == {f"submit:{code}": 2}


def test_submit_error_probability(client: httpx.Client, fake: Any) -> None:
    fake.configure(submit_errors=[{"code": "QuotaExceeded", "probability": 1.0}])
    for _ in range(3):
        assert_error(client.post("/ent/v2/reference2video", json=body()), 429, "QuotaExceeded")
    fake.configure(submit_errors=[{"code": "QuotaExceeded", "probability": 0.5}], seed=1)
    outcomes = {client.post("/ent/v2/reference2video", json=body()).status_code for _ in range(40)}
    assert outcomes == {200, 429}


def test_unknown_error_code_knob_rejected(client: httpx.Client) -> None:
    r = client.post("/_fake/config", json={"submit_errors": [{"code": "NoSuchCode"}]})
    assert r.status_code == 422
    assert client.post("/_fake/config", json={"no_such_knob": 1}).status_code == 422


def test_credit_balance_and_active_limit(client: httpx.Client, fake: Any) -> None:
    fake.configure(credits_balance=100)
    submit(client)  # 80 credits
    assert_error(client.post("/ent/v2/reference2video", json=body()), 400, "CreditInsufficient")
    assert fake.config.credits_balance == 20
    fake.configure(credits_balance=None, max_active_tasks=2)
    submit(client)
    assert_error(client.post("/ent/v2/reference2video", json=body()), 429, "QuotaExceeded")


def test_task_failure_injection(client: httpx.Client, fake: Any) -> None:
    fake.configure(task_failures=[{"code": "CreationPolicyViolation", "count": 1}], failure_at=0.5)
    doomed, fine = submit(client)["task_id"], submit(client)["task_id"]
    fake.advance(3 + PROCESSING * 0.5)
    q = state(client, doomed)
    assert (q["state"], q["err_code"], q["creations"], q["credits"]) == (
        "failed",
        "CreationPolicyViolation",
        [],
        0,
    )
    assert state(client, fine)["state"] == "processing"
    fake.advance(PROCESSING)
    assert state(client, fine)["state"] == "success"


def test_unknown_task_is_404(client: httpx.Client) -> None:
    assert_error(client.get("/ent/v2/tasks/123/creations"), 404, "TaskNotFound", "123")
    assert_error(client.post("/ent/v2/tasks/123/cancel", json={"id": "123"}), 404, "TaskNotFound")


def test_cancel(client: httpx.Client, fake: Any) -> None:
    task_id = submit(client)["task_id"]
    r = client.post(f"/ent/v2/tasks/{task_id}/cancel", json={"id": task_id})
    assert r.status_code == 200 and r.json() == {}
    q = state(client, task_id)
    assert (q["state"], q["err_code"]) == ("failed", "UserCancelled")
    assert_error(client.post(f"/ent/v2/tasks/{task_id}/cancel", json={"id": task_id}), 400, "BadRequest")


def test_cancel_processing_frees_a_slot(client: httpx.Client, fake: Any) -> None:
    ids = [submit(client)["task_id"] for _ in range(6)]
    fake.advance(3.0)
    assert state(client, ids[5])["state"] == "queueing"
    client.post(f"/ent/v2/tasks/{ids[0]}/cancel", json={"id": ids[0]})
    assert state(client, ids[5])["state"] == "processing"


# --- transport faults ---------------------------------------------------------------------------
def test_poll_http_bursts(client: httpx.Client, fake: Any) -> None:
    task_id = submit(client)["task_id"]
    fake.configure(
        http_errors=[
            {"status": 429, "count": 2, "endpoints": ["poll"]},
            {"status": 503, "count": 1, "endpoints": ["poll"]},
        ]
    )
    assert_error(client.get(f"/ent/v2/tasks/{task_id}/creations"), 429, "TooManyRequests")
    assert_error(client.get(f"/ent/v2/tasks/{task_id}/creations"), 429, "TooManyRequests")
    r = client.get(f"/ent/v2/tasks/{task_id}/creations")
    assert r.status_code == 503 and "nginx" in r.text and r.headers["content-type"].startswith("text/html")
    submit(client)  # submits are outside the burst's scope
    assert state(client, task_id)["state"] == "created"
    fake.configure(http_errors=[{"status": 500, "count": 1}])
    assert_error(client.post("/ent/v2/reference2video", json=body()), 500, "InternalServiceFailure")
    assert fake.stats.jobs_created == 2


def test_slow_submit_still_creates_the_task(client: httpx.Client, fake: Any) -> None:
    fake.configure(slow=[{"delay_s": 0.5, "count": 1, "endpoints": ["submit"]}])
    with pytest.raises(httpx.ReadTimeout):
        client.post("/ent/v2/reference2video", json=body(payload="gw-1"), timeout=0.1)
    wait_until(lambda: fake.stats.jobs_created == 1)
    started = time.monotonic()
    submit(client)
    assert time.monotonic() - started < 0.4


def test_malformed_responses(client: httpx.Client, fake: Any) -> None:
    task_id = submit(client)["task_id"]
    fake.configure(
        malformed=[
            {"mode": "invalid_json", "count": 1, "endpoints": ["poll"]},
            {"mode": "missing_fields", "count": 1, "endpoints": ["poll"]},
        ]
    )
    r = client.get(f"/ent/v2/tasks/{task_id}/creations")
    assert r.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        r.json()
    data = client.get(f"/ent/v2/tasks/{task_id}/creations").json()
    assert "state" not in data and "creations" not in data and data["id"] == task_id
    assert "state" in state(client, task_id)


def test_malformed_submit_is_recoverable_via_list_by_payload(client: httpx.Client, fake: Any) -> None:
    fake.configure(malformed=[{"mode": "empty_body", "count": 1, "endpoints": ["submit"]}])
    r = client.post("/ent/v2/reference2video", json=body(payload="gw-42"))
    assert r.status_code == 200 and r.content == b""
    tasks = client.get("/ent/v2/tasks", params={"pager.pagesz": 100}).json()["tasks"]
    assert [t["payload"] for t in tasks] == ["gw-42"]


# --- listing ------------------------------------------------------------------------------------
def test_list_filters_and_paging(client: httpx.Client, fake: Any) -> None:
    ids = [submit(client, payload=f"gw-{n}")["task_id"] for n in range(23)]
    seen: list[str] = []
    token = ""
    while True:
        params: dict[str, Any] = {"pager.pagesz": 10}
        if token:
            params["pager.page_token"] = token
        page = client.get("/ent/v2/tasks", params=params).json()
        seen += [t["id"] for t in page["tasks"]]
        token = page["next_page_token"]
        if not token:
            break
    assert seen == list(reversed(ids))  # newest first, each exactly once
    picked = client.get("/ent/v2/tasks", params=[("task_ids", ids[0]), ("task_ids", ids[1])]).json()["tasks"]
    assert {t["id"] for t in picked} == {ids[0], ids[1]}
    picked = client.get("/ent/v2/tasks", params={"task_ids": f"{ids[2]},{ids[3]}"}).json()["tasks"]
    assert {t["payload"] for t in picked} == {"gw-2", "gw-3"}
    fake.advance(3.0)
    processing = client.get("/ent/v2/tasks", params={"states": "processing", "pager.pagesz": 100}).json()
    assert len(processing["tasks"]) == 5 and processing["next_page_token"] == ""
    assert client.get("/ent/v2/tasks", params={"model_versions": "q3-mix"}).json()["tasks"] == []
    assert_error(client.get("/ent/v2/tasks", params={"pager.pagesz": 101}), 400, "PageSizeOutOfRange")


def test_list_reports_video_metadata(client: httpx.Client, fake: Any) -> None:
    task_id = submit(client, aspect_ratio="9:16", resolution="1080p", duration=4)["task_id"]
    fake.advance(3 + PROCESSING)
    (task,) = client.get("/ent/v2/tasks", params={"task_ids": task_id}).json()["tasks"]
    video = task["creations"][0]["video"]
    assert video["resolution"] == {"width": 1080, "height": 1920} and video["duration"] == 4.0
    assert task["state"] == "success" and re.fullmatch(r".*Z", task["created_at"])


# --- result files -------------------------------------------------------------------------------
def finished(client: httpx.Client, fake: Any, **over: Any) -> dict[str, Any]:
    task_id = submit(client, **over)["task_id"]
    fake.advance(3 + PROCESSING)
    q = state(client, task_id)
    assert q["state"] == "success"
    return q


def test_result_is_a_real_mp4(client: httpx.Client, fake: Any) -> None:
    q = finished(client, fake, duration=7, aspect_ratio="9:16", watermark=True)
    creation = q["creations"][0]
    video = client.get(creation["url"])
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(video.content), mode="r") as container:
        assert container.duration is not None
        assert abs(container.duration / 1e6 - 7.0) < 0.05
        stream = container.streams.video[0]
        assert stream.height > stream.width  # 9:16
        assert container.streams.audio  # audio defaults to true on reference2video
    cover = client.get(creation["cover_url"])
    assert cover.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(cover.content)).size == (stream.width, stream.height)
    assert client.get(creation["watermarked_url"]).status_code == 200


def test_range_requests(client: httpx.Client, fake: Any) -> None:
    url = finished(client, fake)["creations"][0]["url"]
    full = client.get(url).content
    r = client.get(url, headers={"Range": "bytes=0-99"})
    assert r.status_code == 206 and r.content == full[:100]
    assert r.headers["content-range"] == f"bytes 0-99/{len(full)}"
    assert client.get(url, headers={"Range": "bytes=-50"}).content == full[-50:]
    assert client.get(url, headers={"Range": "bytes=100-"}).content == full[100:]
    r = client.get(url, headers={"Range": f"bytes={len(full)}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(full)}"
    head = client.head(url)
    assert (
        head.status_code == 200 and int(head.headers["content-length"]) == len(full) and head.content == b""
    )
    assert fake.stats.range_requests == 4


def test_file_faults_only_when_scoped(client: httpx.Client, fake: Any) -> None:
    url = finished(client, fake)["creations"][0]["url"]
    fake.configure(http_errors=[{"status": 502, "probability": 1.0}])  # default scope: API endpoints only
    assert client.get(url).status_code == 200
    fake.configure(http_errors=[{"status": 502, "count": 1, "endpoints": ["files"]}])
    assert client.get(url).status_code == 502
    assert client.get(url).status_code == 200


def test_result_urls_expire(client: httpx.Client, fake: Any) -> None:
    fake.configure(url_ttl_s=600)
    task_id = finished(client, fake)["id"]
    url = state(client, task_id)["creations"][0]["url"]
    assert client.get(url).status_code == 200
    fake.advance(601)
    r = client.get(url)
    assert r.status_code == 403 and "AccessDenied" in r.text
    fresh = state(client, task_id)["creations"][0]["url"]  # every query re-signs
    assert fresh != url and client.get(fresh).status_code == 200
    assert client.get(fresh.replace("sig=", "sig=0")).status_code == 403
    fake.configure(expired_url_status=404)
    fake.advance(601)
    assert client.get(fresh).status_code == 404


# --- callbacks (§1.8) ---------------------------------------------------------------------------
def test_signature_matches_documented_example() -> None:
    date, nonce = "Tue, 06 May 2025 12:09:42 GMT", "123e4567-e89b-12d3-a456-426614174000"
    url = "http://127.0.0.1:8080/vidu/callback?name=james&age=36"
    expected_string = (
        f"POST\n/vidu/callback\nname=james&age=36\nvidu\n{date}\nDate:{date}\nx-request-nonce:{nonce}\n"
    )
    expected = base64.b64encode(hmac.new(b"k", expected_string.encode(), hashlib.sha256).digest()).decode()
    assert vidu_signature("post", url, date, [("Date", date), ("x-request-nonce", nonce)], "k") == expected
    no_path = vidu_signature("POST", "http://h", date, [], "k")
    want = base64.b64encode(hmac.new(b"k", f"POST\n/\n\nvidu\n{date}\n".encode(), hashlib.sha256).digest())
    assert no_path == want.decode()


def test_callbacks_are_signed_and_ordered(client: httpx.Client, fake: Any, receiver: Receiver) -> None:
    receiver.calls.clear()
    callback = receiver.base + "/hooks/vidu?tenant=a&x=1"
    task_id = submit(client, callback_url=callback, payload="gw-cb")["task_id"]
    fake.advance(3.0)
    fake.advance(PROCESSING)
    wait_until(lambda: fake.stats.callbacks_sent == 2)
    states = [json.loads(c["body"])["state"] for c in receiver.calls]
    assert states == ["processing", "success"]
    for call in receiver.calls:
        assert call["url"] == callback
        headers = call["headers"]
        assert headers["x-hmac-signed-headers"] == "Date;x-request-nonce"
        assert headers["x-hmac-algorithm"] == "hmac-sha256" and headers["x-hmac-access-key"] == "vidu"
        signed = [("Date", headers["date"]), ("x-request-nonce", headers["x-request-nonce"])]
        assert headers["x-hmac-signature"] == vidu_signature("POST", callback, headers["date"], signed, KEY)
        assert verify_vidu_callback("POST", callback, headers, KEY)
        assert not verify_vidu_callback("POST", callback, headers, "other-key")
        assert not verify_vidu_callback("POST", callback, {**headers, "x-request-nonce": "replayed"}, KEY)
        assert not verify_vidu_callback("POST", receiver.base + "/hooks/other", headers, KEY)
    final = json.loads(receiver.calls[-1]["body"])
    assert final["id"] == task_id and final["payload"] == "gw-cb" and final["creations"][0]["url"]
    # §1.8 signs neither the body nor a digest of it, so a tampered body still verifies: receivers
    # must re-query the task instead of trusting the callback body.
    assert verify_vidu_callback("POST", callback, receiver.calls[-1]["headers"], KEY)


def test_failed_callbacks_are_retried_three_times(
    client: httpx.Client, fake: Any, receiver: Receiver
) -> None:
    receiver.calls.clear()
    fake.configure(
        callback_retry_delay_s=0.001, task_failures=[{"code": "CreationPolicyViolation", "count": 1}]
    )
    receiver.script = [500] * 10  # processing: 1 attempt; failed: 1 + 3 retries
    submit(client, callback_url=receiver.base + "/cb")
    fake.advance(3.0)
    fake.advance(PROCESSING)
    wait_until(lambda: fake.stats.callbacks_failed == 2)
    assert fake.stats.callback_attempts == 5 and fake.stats.callbacks_sent == 0
    labels = [json.loads(c["body"])["state"] for c in receiver.calls]
    assert labels == ["processing"] + ["failed"] * 4
    assert json.loads(receiver.calls[-1]["body"])["err_code"] == "CreationPolicyViolation"


def test_callback_retry_recovers(client: httpx.Client, fake: Any, receiver: Receiver) -> None:
    receiver.calls.clear()
    fake.configure(callback_retry_delay_s=0.001, callback_states=["success"])
    receiver.script = [503, 503]
    submit(client, callback_url=receiver.base + "/cb")
    fake.advance(3.0 + PROCESSING)
    wait_until(lambda: fake.stats.callbacks_sent == 1)
    assert fake.stats.callback_attempts == 3 and fake.stats.callbacks_by_state == {"success": 1}


# --- control plane and CLI ----------------------------------------------------------------------
def test_control_routes(client: httpx.Client, fake: Any) -> None:
    task_id = submit(client)["task_id"]
    assert client.post("/_fake/advance", json={"seconds": 3}).status_code == 200
    job = client.get(f"/_fake/jobs/{task_id}").json()
    assert job["state"] == "processing" and "token" not in job
    stats = client.get("/_fake/stats").json()
    assert stats["tasks_by_state"] == {"processing": 1} and stats["jobs_created"] == 1
    assert client.get("/_fake/config").json()["concurrency"] == 5
    assert client.post("/_fake/reset").json() == {"ok": True}
    assert client.get("/_fake/stats").json()["jobs_created"] == 0
    assert client.get(f"/ent/v2/tasks/{task_id}/creations").status_code == 404


def test_cli_prints_base_url_and_serves() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vidgate.testing.fake_vidu",
            "--port",
            "0",
            "--api-key",
            "k",
            "--time-factor",
            "50",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        base = proc.stdout.readline().strip()
        assert base.startswith("http://127.0.0.1:")
        for _ in range(200):
            try:
                stats = httpx.get(base + "/_fake/stats").json()
                break
            except httpx.TransportError:
                time.sleep(0.02)
        assert stats["time_factor"] == 50.0
        assert httpx.get(base + "/ent/v2/tasks", headers={"Authorization": "Token k"}).status_code == 200
    finally:
        proc.terminate()
        proc.wait(5)


def test_in_process_asgi_without_server() -> None:
    async def go() -> int:
        app = create_app(BASE)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://fake") as c:
            r = await c.post(
                "/ent/v2/reference2video", json=body(), headers={"Authorization": f"Token {KEY}"}
            )
            return int(r.status_code)

    assert asyncio.run(go()) == 200
