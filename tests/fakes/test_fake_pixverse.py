"""The fake PixVerse over real HTTP: behaviour of research/upstream-apis.md §2 and §3."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import time
import uuid
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

from vidgate.testing.fake_pixverse import FakePixVerseConfig, create_app, pixverse_webhook_signature
from vidgate.testing.fake_serve import serve_in_thread, stop_server

KEY = "pixverse-test-key"
BASE = FakePixVerseConfig(
    api_key=KEY, time_factor=1.0, seed=3, generation_base_s=30, generation_per_video_s=0
)
GEN = 30.0
V1 = "/openapi/v2"


def wait_until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


class Receiver:
    """A webhook receiver recording requests; answers from a script of (status, body)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.script: list[tuple[int, str]] = []

        async def hook(request: Request) -> Response:
            self.calls.append({"headers": dict(request.headers), "body": await request.body()})
            status, text = self.script.pop(0) if self.script else (200, "ok")
            return Response(text, status_code=status, media_type="text/plain")

        self.base = serve_in_thread(Starlette(routes=[Route("/{path:path}", hook, methods=["POST"])]))


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


class Pix:
    """A thin client adding API-KEY and a fresh Ai-trace-id per request (unless one is given)."""

    def __init__(self, base: str) -> None:
        self.http = httpx.Client(base_url=base, timeout=10)

    def headers(self, trace: str | None) -> dict[str, str]:
        return {"API-KEY": KEY, "Ai-trace-id": trace or str(uuid.uuid4())}

    def post(self, path: str, trace: str | None = None, **kw: Any) -> httpx.Response:
        return self.http.post(V1 + path, headers=self.headers(trace), **kw)

    def get(self, path: str, trace: str | None = None) -> httpx.Response:
        return self.http.get(V1 + path, headers=self.headers(trace))

    def upload(self, width: int = 640, height: int = 360, fmt: str = "PNG") -> int:
        r = self.post(
            "/image/upload", files={"image": ("a.png", image_bytes(width, height, fmt), "image/png")}
        )
        data = r.json()
        assert data["ErrCode"] == 0, data
        return int(data["Resp"]["img_id"])

    def generate(self, kind: str, trace: str | None = None, **over: Any) -> dict[str, Any]:
        return dict(self.post(f"/video/{kind}/generate", trace, json=gen_body(kind, **over)).json())

    def result(self, video_id: int) -> dict[str, Any]:
        return dict(self.get(f"/video/result/{video_id}").json())


@pytest.fixture
def pix(server: tuple[Any, str], fake: Any) -> Iterator[Pix]:
    client = Pix(server[1])
    yield client
    client.http.close()


def image_bytes(width: int, height: int, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (10, 120, 200)).save(buf, format=fmt)
    return buf.getvalue()


def gen_body(kind: str, **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "v6", "prompt": "a red fox runs", "duration": 5, "quality": "720p"}
    if kind in ("text", "fusion"):
        body["aspect_ratio"] = "16:9"
    body.update(over)
    return {k: v for k, v in body.items() if v is not None}


def ok(data: dict[str, Any]) -> dict[str, Any]:
    assert data["ErrCode"] == 0 and data["ErrMsg"] == "success", data
    return dict(data["Resp"])


def err(data: dict[str, Any], code: int) -> None:
    assert data["ErrCode"] == code, data
    assert isinstance(data["ErrMsg"], str) and data["ErrMsg"] and data["Resp"] == {}


def finished_video(pix: Pix, fake: Any, **over: Any) -> int:
    video_id = int(ok(pix.generate("text", **over))["video_id"])
    fake.advance(GEN)
    assert pix.result(video_id)["Resp"]["status"] == 1
    return video_id


# --- auth, trace ids, replay --------------------------------------------------------------------
def test_auth_and_trace_header_required(server: tuple[Any, str], fake: Any) -> None:
    url = server[1] + V1 + "/video/text/generate"
    r = httpx.post(url, json=gen_body("text"), headers={"Ai-trace-id": "t1"})
    assert r.status_code == 200
    err(r.json(), 400012)
    err(
        httpx.post(url, json=gen_body("text"), headers={"API-KEY": "bad", "Ai-trace-id": "t1"}).json(), 400012
    )
    err(httpx.post(url, json=gen_body("text"), headers={"API-KEY": KEY}).json(), 400011)
    assert fake.stats.unauthorized == 2 and fake.stats.missing_trace_id == 1 and fake.stats.jobs_created == 0
    fake.configure(error_http_status=400)
    assert httpx.post(url, json=gen_body("text"), headers={"API-KEY": KEY}).status_code == 400


def test_repeated_trace_id_replays_and_creates_nothing(pix: Pix, fake: Any) -> None:
    first = pix.post("/video/text/generate", "trace-A", json=gen_body("text"))
    again = pix.post("/video/text/generate", "trace-A", json=gen_body("text", prompt="something else"))
    assert again.content == first.content
    other = pix.post("/video/text/generate", "trace-B", json=gen_body("text"))
    assert ok(other.json())["video_id"] != ok(first.json())["video_id"]
    stats = pix.http.get("/_fake/stats").json()
    assert stats["jobs_created"] == 2 and stats["replays"] == 1
    assert stats["submits_by_trace_id"] == {"trace-A": 2, "trace-B": 1}
    # A reused trace id on a poll returns the stale earlier answer: the classic "stuck" bug.
    video_id = ok(first.json())["video_id"]
    stale = pix.get(f"/video/result/{video_id}", "poll-1").json()
    fake.advance(GEN)
    assert pix.get(f"/video/result/{video_id}", "poll-1").json() == stale
    assert pix.result(video_id)["Resp"]["status"] == 1


def test_concurrent_duplicates_have_one_effect(server: tuple[Any, str], fake: Any) -> None:
    async def go() -> list[bytes]:
        headers = {"API-KEY": KEY, "Ai-trace-id": "dup-1"}
        async with httpx.AsyncClient(base_url=server[1]) as c:
            calls = [
                c.post(V1 + "/video/text/generate", json=gen_body("text"), headers=headers) for _ in range(8)
            ]
            return [r.content for r in await asyncio.gather(*calls)]

    bodies = asyncio.run(go())
    assert len(set(bodies)) == 1 and fake.stats.jobs_created == 1 and fake.stats.replays == 7


def test_errors_are_not_replayed_unless_asked(pix: Pix, fake: Any) -> None:
    err(pix.post("/video/text/generate", "t-err", json=gen_body("text", duration=99)).json(), 400017)
    ok(pix.post("/video/text/generate", "t-err", json=gen_body("text")).json())
    fake.configure(replay_errors=True)
    err(pix.post("/video/text/generate", "t-err2", json=gen_body("text", duration=99)).json(), 400017)
    err(pix.post("/video/text/generate", "t-err2", json=gen_body("text")).json(), 400017)
    assert fake.stats.jobs_created == 1


# --- uploads ------------------------------------------------------------------------------------
def test_upload_returns_int_img_id_and_replays(pix: Pix, fake: Any) -> None:
    files = {"image": ("a.webp", image_bytes(300, 200, "WEBP"), "image/webp")}
    first = ok(pix.post("/image/upload", "up-1", files=files).json())
    assert isinstance(first["img_id"], int)
    assert ok(pix.post("/image/upload", "up-1", files=files).json()) == first
    assert fake.stats.uploads == 1 and fake.stats.replays_by_endpoint == {"upload": 1}


@pytest.mark.parametrize(
    ("payload", "knobs", "code"),
    [
        (b"definitely not an image", {}, 500032),
        (image_bytes(20, 20, "GIF"), {}, 500032),
        (image_bytes(300, 100), {"max_image_px": 200}, 500030),
        (image_bytes(300, 100), {"max_image_bytes": 100}, 500030),
    ],
)
def test_upload_rejects(pix: Pix, fake: Any, payload: bytes, knobs: dict[str, Any], code: int) -> None:
    fake.configure(**knobs)
    err(pix.post("/image/upload", files={"image": ("x", payload, "application/octet-stream")}).json(), code)
    assert fake.stats.upload_errors == {str(code): 1} and fake.images == {}


def test_upload_without_image_field(pix: Pix) -> None:
    err(pix.post("/image/upload", files={"file": ("a.png", image_bytes(10, 10), "image/png")}).json(), 400011)
    err(pix.post("/image/upload", json={"image_url": "https://x/a.png"}).json(), 400011)


# --- generate validation ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "over", "code"),
    [
        ("text", {"model": "v5"}, 400017),
        ("text", {"model": None}, 400011),
        ("text", {"duration": None}, 400011),
        ("text", {"duration": 16}, 400017),
        ("text", {"duration": 0}, 400017),
        ("text", {"duration": "5"}, 400013),
        ("text", {"quality": "480p"}, 400017),
        ("text", {"aspect_ratio": None}, 400011),
        ("text", {"aspect_ratio": "5:4"}, 400017),
        ("text", {"prompt": "x" * 2049}, 400018),
        ("text", {"negative_prompt": "x" * 2049}, 400019),
        ("text", {"seed": 2147483648}, 400017),
        ("text", {"motion_mode": "fast"}, 400017),
        ("text", {"generate_audio_switch": "yes"}, 400013),
        ("img", {"img_id": None}, 400011),
        ("img", {"img_id": 123}, 400032),
        ("transition", {"first_frame_img": 1, "last_frame_img": 2}, 400032),
        ("fusion", {"image_references": []}, 400017),
        ("extend", {"source_video_id": 999}, 500008),
        ("extend", {"video_media_id": 5}, 500008),
        ("extend", {}, 400011),
    ],
)
def test_generate_validation(pix: Pix, fake: Any, kind: str, over: dict[str, Any], code: int) -> None:
    err(pix.generate(kind, **over), code)
    assert fake.stats.jobs_created == 0 and fake.stats.submit_errors == {str(code): 1}


def test_generate_ok_at_the_edges(pix: Pix) -> None:
    ok(pix.generate("text", prompt="x" * 2048, duration=15, quality="1080p", aspect_ratio="21:9", seed=0))
    ok(pix.generate("text", duration=1, quality="360p", generate_multi_clip_switch=True, style="anime"))


def test_multi_clip_not_allowed_on_transition_and_extend(pix: Pix, fake: Any) -> None:
    a, b = pix.upload(), pix.upload()
    err(
        pix.generate("transition", first_frame_img=a, last_frame_img=b, generate_multi_clip_switch=True),
        400017,
    )
    source = finished_video(pix, fake)
    err(pix.generate("extend", source_video_id=source, generate_multi_clip_switch=True), 400017)
    ok(pix.generate("img", img_id=a, generate_multi_clip_switch=True))


def test_fusion_rules(pix: Pix) -> None:
    ids = [pix.upload() for _ in range(8)]
    refs = [{"type": "subject", "img_id": i, "ref_name": f"image{n}"} for n, i in enumerate(ids, 1)]
    prompt = " ".join(f"@image{n} " for n in range(1, 9))
    err(pix.generate("fusion", image_references=refs, prompt=prompt), 400017)  # 8 > 7
    err(pix.generate("fusion", image_references=refs[:2], prompt="@image1 walks"), 400017)  # @image2 missing
    bad_type = [{**refs[0], "type": "scene"}]
    err(pix.generate("fusion", image_references=bad_type, prompt="@image1 x"), 400017)
    unknown = [{**refs[0], "img_id": 42}]
    err(pix.generate("fusion", image_references=unknown, prompt="@image1 x"), 400032)
    resp = ok(pix.generate("fusion", image_references=refs[:7], prompt=prompt.replace("@image8 ", "")))
    assert isinstance(resp["video_id"], int) and isinstance(resp["credits"], int)


def test_extend_needs_a_finished_source(pix: Pix, fake: Any) -> None:
    running = ok(pix.generate("text"))["video_id"]
    err(pix.generate("extend", source_video_id=running), 400017)
    fake.advance(GEN)
    resp = ok(pix.generate("extend", source_video_id=running, quality="360p"))
    assert fake.stats.jobs_created_by_endpoint == {"text": 1, "extend": 1}
    assert resp["video_id"] != running


# --- results ------------------------------------------------------------------------------------
def test_result_progression_and_fields(pix: Pix, fake: Any) -> None:
    video_id = ok(pix.generate("text", generate_audio_switch=True, seed=77))["video_id"]
    resp = ok(pix.result(video_id))
    assert (resp["status"], resp["url"], resp["id"]) == (5, "", video_id)
    fake.advance(GEN - 1)
    assert ok(pix.result(video_id))["status"] == 5
    fake.advance(1)
    resp = ok(pix.result(video_id))
    assert resp["status"] == 1 and resp["seed"] == 77 and resp["has_audio"] is True
    assert (resp["outputWidth"], resp["outputHeight"]) == (1280, 720)  # short-side rule, not the tiny file
    assert resp["credits"] > 0
    video = pix.http.get(resp["url"])
    assert video.status_code == 200 and len(video.content) == resp["size"]
    with av.open(io.BytesIO(video.content), mode="r") as container:
        assert container.duration is not None
        assert abs(container.duration / 1e6 - 5.0) < 0.05 and container.streams.audio
        assert container.streams.video[0].width > container.streams.video[0].height


@pytest.mark.parametrize(
    ("kind", "quality", "size", "expected"),
    [
        ("text", "1080p", None, (1080, 1920)),
        ("img", "540p", (400, 600), (540, 810)),
        ("img", "720p", (1000, 1000), (720, 720)),
        ("transition", "360p", (1920, 1080), (640, 360)),
    ],
)
def test_output_size_short_side_rule(
    pix: Pix, fake: Any, kind: str, quality: str, size: tuple[int, int] | None, expected: tuple[int, int]
) -> None:
    over: dict[str, Any] = {"quality": quality}
    if kind == "text":
        over["aspect_ratio"] = "9:16"
    elif kind == "img":
        over["img_id"] = pix.upload(*size) if size else None
    else:
        over.update(first_frame_img=pix.upload(*size) if size else 0, last_frame_img=pix.upload())
    video_id = ok(pix.generate(kind, **over))["video_id"]
    fake.advance(GEN)
    resp = ok(pix.result(video_id))
    assert (resp["outputWidth"], resp["outputHeight"]) == expected


def test_unknown_video_is_500008(pix: Pix) -> None:
    err(pix.result(123456), 500008)
    err(pix.get("/video/result/abc").json(), 400013)


@pytest.mark.parametrize(("status", "refunded"), [(7, True), (8, False), (6, False)])
def test_final_status_injection(pix: Pix, fake: Any, status: int, refunded: bool) -> None:
    fake.configure(final_status=[{"status": status, "count": 1}])
    doomed, fine = ok(pix.generate("text"))["video_id"], ok(pix.generate("text"))["video_id"]
    fake.advance(GEN)
    resp = ok(pix.result(doomed))
    assert resp["status"] == status and resp["url"] == "" and (resp["credits"] == 0) is refunded
    assert ok(pix.result(fine))["status"] == 1


# --- limits and injected errors -----------------------------------------------------------------
def test_concurrency_limit_500044(pix: Pix, fake: Any) -> None:
    fake.configure(concurrency=2)
    ok(pix.generate("text"))
    ok(pix.generate("text"))
    err(pix.generate("text"), 500044)
    fake.advance(GEN)
    ok(pix.generate("text"))
    assert fake.stats.max_in_flight == 2 and fake.stats.submit_errors == {"500044": 1}


@pytest.mark.parametrize("code", [500044, 500054, 500063, 400017])
def test_submit_error_injection(pix: Pix, fake: Any, code: int) -> None:
    r = pix.http.post("/_fake/config", json={"submit_errors": [{"code": code, "count": 1}]})
    assert r.status_code == 200
    pix.upload()  # uploads are outside the default scope
    err(pix.generate("text"), code)
    ok(pix.generate("text"))
    assert fake.stats.jobs_created == 1 and fake.stats.injected == {f"generate:{code}": 1}


def test_upload_scoped_error_injection(pix: Pix, fake: Any) -> None:
    fake.configure(submit_errors=[{"code": 500054, "count": 1, "endpoints": ["upload"]}])
    files = {"image": ("a.png", image_bytes(64, 64), "image/png")}
    err(pix.post("/image/upload", files=files).json(), 500054)
    ok(pix.generate("text"))


def test_insufficient_credits(pix: Pix, fake: Any) -> None:
    fake.configure(credits_balance=50)
    spent = ok(pix.generate("text"))["credits"]  # 720p 5 s = 45
    assert fake.config.credits_balance == 50 - spent
    err(pix.generate("text"), 500090)
    fake.configure(insufficient_credits_errcode=400099)
    assert pix.generate("text")["ErrCode"] == 400099


# --- transport faults, files --------------------------------------------------------------------
def test_http_bursts_on_polls(pix: Pix, fake: Any) -> None:
    video_id = ok(pix.generate("text"))["video_id"]
    fake.configure(
        http_errors=[
            {"status": 429, "count": 1, "endpoints": ["result"]},
            {"status": 502, "count": 1, "endpoints": ["result"]},
        ]
    )
    first = pix.get(f"/video/result/{video_id}")
    assert first.status_code == 429 and "<html>" in first.text
    assert pix.get(f"/video/result/{video_id}").status_code == 502
    assert ok(pix.result(video_id))["status"] == 5
    assert fake.stats.injected == {"http:429:result": 1, "http:502:result": 1}


def test_slow_and_malformed(pix: Pix, fake: Any) -> None:
    video_id = ok(pix.generate("text"))["video_id"]
    fake.configure(slow=[{"delay_s": 0.4, "count": 1}])
    with pytest.raises(httpx.ReadTimeout):
        pix.http.get(f"{V1}/video/result/{video_id}", headers=pix.headers(None), timeout=0.1)
    fake.configure(
        malformed=[
            {"mode": "invalid_json", "count": 1},
            {"mode": "missing_fields", "count": 1},
            {"mode": "html", "count": 1},
        ]
    )
    with pytest.raises(json.JSONDecodeError):
        pix.get(f"/video/result/{video_id}").json()
    resp = pix.result(video_id)["Resp"]
    assert "status" not in resp and "url" not in resp and resp["id"] == video_id
    assert pix.get(f"/video/result/{video_id}").headers["content-type"].startswith("text/html")
    assert ok(pix.result(video_id))["status"] == 5


def test_malformed_generate_still_creates_job(pix: Pix, fake: Any) -> None:
    fake.configure(malformed=[{"mode": "missing_fields", "count": 1, "endpoints": ["generate"]}])
    resp = pix.post("/video/text/generate", "retry-me", json=gen_body("text")).json()
    assert resp["ErrCode"] == 0 and "video_id" not in resp["Resp"]
    # Retrying with the same trace id recovers the id without a second job.
    again = ok(pix.post("/video/text/generate", "retry-me", json=gen_body("text")).json())
    assert isinstance(again["video_id"], int) and fake.stats.jobs_created == 1


def test_result_url_expiry_and_range(pix: Pix, fake: Any) -> None:
    fake.configure(url_ttl_s=100)
    video_id = finished_video(pix, fake)
    url = ok(pix.result(video_id))["url"]
    part = pix.http.get(url, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and len(part.content) == 10
    fake.advance(101)
    assert pix.http.get(url).status_code == 403
    assert pix.http.get(ok(pix.result(video_id))["url"]).status_code == 200


def test_time_factor(pix: Pix, fake: Any) -> None:
    fake.configure(time_factor=2000.0)
    video_id = ok(pix.generate("text"))["video_id"]
    wait_until(lambda: pix.result(video_id)["Resp"]["status"] == 1, timeout=3)


def test_many_jobs_are_cheap(fake: Any) -> None:
    fake.configure(concurrency=100_000)
    req = {
        "prompt": "p",
        "negative_prompt": "",
        "duration": 5,
        "quality": "540p",
        "seed": 1,
        "style": "",
        "generate_audio_switch": False,
        "aspect_ratio": "16:9",
    }
    started = time.perf_counter()
    with fake.lock:
        for n in range(5000):
            fake.new_job("text", dict(req), 20, "http://127.0.0.1:1", f"t{n}", 1)
    assert fake.in_flight == 5000
    fake.advance(GEN)
    assert fake.in_flight == 0 and fake.stats_snapshot()["jobs_by_status"] == {"1": 5000}
    assert time.perf_counter() - started < 3.0


# --- webhooks (§2.9) ----------------------------------------------------------------------------
def test_webhook_signed_and_accepted_only_on_ok(pix: Pix, fake: Any, receiver: Receiver) -> None:
    receiver.calls.clear()
    receiver.script = [(200, "OK"), (500, "ok")]  # both wrong: exactly `ok` with 200 is required
    fake.configure(
        webhook_url=receiver.base + "/pv",
        webhook_secret="s3cret",
        webhook_retry_delays_s=[0.001, 0.001, 0.001],
    )
    video_id = ok(pix.post("/video/text/generate", "wh-1", json=gen_body("text")).json())["video_id"]
    fake.advance(GEN)
    wait_until(lambda: fake.stats.webhooks_sent == 1)
    assert fake.stats.webhook_attempts == 3 and len(receiver.calls) == 3
    call = receiver.calls[-1]
    payload = json.loads(call["body"])
    assert payload["id"] == str(video_id) and payload["status"] == 1 and payload["url"]
    headers = call["headers"]
    assert len(headers["webhook-nonce"]) == 32 and headers["ai-trace-id"] == "wh-1"
    expected = pixverse_webhook_signature(
        headers["webhook-timestamp"], headers["webhook-nonce"], payload, "s3cret"
    )
    assert headers["webhook-signature"] == expected
    tampered = {**payload, "status": 8}
    assert pixverse_webhook_signature(
        headers["webhook-timestamp"], headers["webhook-nonce"], tampered, "s3cret"
    ) != (expected)


def test_webhook_gives_up_and_respects_endpoint_list(pix: Pix, fake: Any, receiver: Receiver) -> None:
    receiver.calls.clear()
    receiver.script = [(503, "")] * 3
    fake.configure(webhook_url=receiver.base + "/pv", webhook_retry_delays_s=[0.001, 0.001])
    a, b = pix.upload(), pix.upload()
    ok(pix.generate("transition", first_frame_img=a, last_frame_img=b))  # not in webhook_endpoints
    ok(pix.generate("img", img_id=a))
    fake.advance(GEN)
    wait_until(lambda: fake.stats.webhooks_failed == 1)
    assert fake.stats.webhook_attempts == 3 and fake.stats.webhooks_sent == 0


# --- CLI ----------------------------------------------------------------------------------------
def test_cli_prints_base_url_and_serves() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "vidgate.testing.fake_pixverse", "--port", "0", "--api-key", "k"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        base = proc.stdout.readline().strip()
        assert base.startswith("http://127.0.0.1:")
        for _ in range(200):
            try:
                r = httpx.get(base + V1 + "/video/result/1", headers={"API-KEY": "k", "Ai-trace-id": "x"})
                break
            except httpx.TransportError:
                time.sleep(0.02)
        assert r.json()["ErrCode"] == 500008
    finally:
        proc.terminate()
        proc.wait(5)
