"""The in-process worker end to end: progress, results, flags, idempotency, crash recovery and shutdown.

Every test drives real tasks through the real worker (the `worker_client` app, or one built here
with settings the test controls) and polls `GET /v1/tasks/{id}` until the task is terminal. Result
files are downloaded through their signed URLs and probed with PyAV.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import io
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from PIL import Image

from vidgate import catalog, db, keys, leases, tasks
from vidgate.api import build_gateway, create_app
from vidgate.config import Settings
from vidgate.db import Database
from vidgate.status import Status

from .conftest import auth, png_bytes
from .render.probe import Probe, decode_rgb, diff, probe

POLL_SECONDS = 0.05
TERMINAL = ("completed", "failed", "cancelled")
NEW_VERSION = {"X-APIMart-Response-Version": "2026-07-27"}


# --- helpers (also used by test_worker_inputs.py) ---------------------------------------------------


@contextlib.contextmanager
def serve(settings: Settings, api_key: str, *, worker: bool = True) -> Iterator[TestClient]:
    """An app on `settings` (with its in-process worker unless told otherwise), as `vidgate serve`."""
    with TestClient(create_app(settings, run_worker=worker), headers=auth(api_key)) as c:
        yield c


def submit_task(client: TestClient, body: dict[str, Any], **headers: str) -> str:
    response = client.post("/v1/videos/generations", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return str(response.json()["data"][0]["task_id"])


def poll(client: TestClient, task_id: str, language: str | None = None) -> dict[str, Any]:
    query = f"?language={language}" if language else ""
    response = client.get(f"/v1/tasks/{task_id}{query}")
    assert response.status_code == 200, response.text
    return dict(response.json()["data"])


def wait_terminal(
    client: TestClient, task_id: str, *, timeout: float = 30.0
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Poll every 50 ms until the task is terminal; returns (final view, every view seen)."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        data = poll(client, task_id)
        seen.append(data)
        if data["status"] in TERMINAL:
            return data, seen
        if time.monotonic() > deadline:
            raise AssertionError(f"task {task_id} not terminal after {timeout} s: {data}")
        time.sleep(POLL_SECONDS)


def wait_until(predicate: Any, *, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def path_of(url: str) -> str:
    """Path and query of a signed URL, whatever host it names (the app answers them all)."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def download(client: TestClient, url: str) -> bytes:
    response = client.get(path_of(url), headers={"Authorization": ""})  # signed URLs need no key
    assert response.status_code == 200, response.text
    return bytes(response.content)


def video_file(client: TestClient, data: dict[str, Any], target: Path) -> Path:
    """Download a completed task's video to `target`."""
    assert data["status"] == "completed", data
    target.write_bytes(download(client, data["result"]["videos"][0]["url"][0]))
    return target


def probe_result(client: TestClient, data: dict[str, Any], tmp_path: Path) -> Probe:
    return probe(video_file(client, data, tmp_path / f"{data['id']}.mp4"))


def transitions(database: Database, task_id: str) -> list[tuple[str | None, str]]:
    return [(e.from_status, e.to_status) for e in tasks.events(database, task_id)]


def assert_completed_video(
    client: TestClient, data: dict[str, Any], tmp_path: Path, *, size: tuple[int, int], seconds: int
) -> Probe:
    """The task completed and its file is an H.264 clip of exactly this size and length."""
    assert data["status"] == "completed", data
    p = probe_result(client, data, tmp_path)
    assert (p.codec, p.pix_fmt) == ("h264", "yuv420p")
    assert (p.width, p.height) == size
    assert p.frames == seconds * 24
    video = data["result"]["videos"][0]
    assert (video["width"], video["height"]) == size
    assert video["duration"] == pytest.approx(seconds)
    assert video["has_audio"] is (p.audio_codec is not None)
    return p


def result_dirs(settings: Settings) -> list[str]:
    root = settings.files_dir / "results"
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


def row_of(database: Database, task_id: str) -> Any:
    row = tasks.get(database, task_id)
    assert row is not None
    return row


PIX = {"model": "pixverse-v6", "prompt": "a red kite over the sea"}


# --- 1. progress and the completed task ----------------------------------------------------------


def test_task_goes_pending_processing_completed_with_monotonic_progress(
    worker_client: TestClient, database: Database, tmp_path: Path
) -> None:
    body = {**PIX, "resolution": "540p", "duration": 8, "seed": 11}
    submitted = worker_client.post("/v1/videos/generations", json=body, headers=NEW_VERSION)
    assert submitted.status_code == 200, submitted.text
    first = submitted.json()["data"]
    assert (first["status"], first["progress"]) == ("pending", 0)
    task_id = first["id"]

    final, seen = wait_terminal(worker_client, task_id)
    views = [first, *seen]
    statuses = [v["status"] for v in views]
    assert statuses[0] == "pending" and statuses[-1] == "completed"
    assert "processing" in statuses
    # pending, then processing, then completed: never back.
    order = {"pending": 0, "processing": 1, "completed": 2}
    assert [order[s] for s in statuses] == sorted(order[s] for s in statuses)
    progress = [v["progress"] for v in views]
    assert all(type(p) is int for p in progress)
    assert progress == sorted(progress), progress
    assert all(0 <= v["progress"] <= 99 for v in views if v["status"] != "completed")
    assert final["progress"] == 100

    assert final["id"] == task_id and final["model"] == "pixverse-v6" and final["provider"] == "local"
    assert final["cost"] == 0 and "error" not in final
    row = row_of(database, task_id)
    assert final["created"] == int(row.created_at)
    assert final["completed"] == int(row.completed_at) >= final["created"]
    assert final["actual_time"] == max(0, round(row.completed_at - row.created_at))
    assert 0 <= final["actual_time"] <= 30
    video = final["result"]["videos"][0]
    assert video["expires_at"] == final["completed"] + 86400
    assert video["url"][0].startswith("http://testserver/files/results/")
    assert_completed_video(worker_client, final, tmp_path, size=(960, 540), seconds=8)

    thumb = worker_client.get(path_of(final["result"]["thumbnail_url"]), headers={"Authorization": ""})
    assert thumb.status_code == 200
    assert thumb.headers["content-type"] == "image/jpeg"
    assert thumb.content[:3] == b"\xff\xd8\xff"
    with Image.open(io.BytesIO(thumb.content)) as image:
        assert (image.format, image.size) == ("JPEG", (960, 540))

    assert transitions(database, task_id) == [
        (None, "pending"),
        ("pending", "processing"),
        ("processing", "completed"),
    ]
    events = tasks.events(database, task_id)
    worker = events[1].worker
    assert worker is not None and worker.startswith(f"{socket.gethostname()}:{os.getpid()}:")
    assert events[2].worker == worker
    assert (row.lease_owner, row.lease_until, row.next_run_at, row.attempts) == (None, None, None, 1)


class SlowImageServer:
    """Answers every GET with one PNG after `delay` seconds (a slow CDN)."""

    def __init__(self, data: bytes, delay: float) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                time.sleep(delay)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                return None

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/slow.png"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_progress_never_decreases_when_fetching_inputs_is_slow(worker_client: TestClient) -> None:
    # estimated_time is 5 s for a 720p 15 s clip; the image takes 2.5 s to arrive, so the elapsed-time
    # estimate passes 50 before the engine reports its first fraction.
    server = SlowImageServer(png_bytes((200, 40, 40), (320, 180)), delay=2.5)
    try:
        body = {**PIX, "resolution": "720p", "duration": 15, "image_urls": [server.url]}
        task_id = submit_task(worker_client, body)
        final, seen = wait_terminal(worker_client, task_id)
    finally:
        server.close()
    assert final["status"] == "completed"
    progress = [v["progress"] for v in seen]
    drops = [(a, b) for a, b in itertools.pairwise(progress) if b < a]
    assert drops == [], f"progress went down: {drops}"


# --- 6. audio and watermark flags reach the file ----------------------------------------------------


def test_audio_and_watermark_flags_reach_the_file(worker_client: TestClient, tmp_path: Path) -> None:
    base = {**PIX, "resolution": "360p", "duration": 1, "seed": 7}
    ids = {
        "audio": submit_task(worker_client, {**base, "audio": True}),
        "plain": submit_task(worker_client, {**base, "audio": False}),
        "marked": submit_task(worker_client, {**base, "watermark": True}),
    }
    done = {name: wait_terminal(worker_client, task_id)[0] for name, task_id in ids.items()}
    probes = {
        name: assert_completed_video(worker_client, data, tmp_path, size=(640, 360), seconds=1)
        for name, data in done.items()
    }
    audio = probes["audio"]
    assert (audio.audio_codec, audio.audio_channels, audio.audio_rate) == ("aac", 2, 48_000)
    assert audio.audio_duration == pytest.approx(1.0, abs=0.05)
    assert done["audio"]["result"]["videos"][0]["has_audio"] is True
    assert probes["plain"].audio_codec is None and probes["marked"].audio_codec is None
    assert done["plain"]["result"]["videos"][0]["has_audio"] is False

    # Same seed, same prompt: the frames differ only where the watermark is drawn (bottom right).
    marked = decode_rgb(tmp_path / f"{ids['marked']}.mp4")
    plain = decode_rgb(tmp_path / f"{ids['plain']}.mp4")
    assert len(marked) == len(plain) == 24
    for a, b in zip(marked, plain, strict=True):
        assert diff(a[-30:, -120:], b[-30:, -120:]) > 8.0
        assert diff(a[:180, :320], b[:180, :320]) < 1.0


# --- 7. idempotent replay under the worker -------------------------------------------------------------


def test_idempotent_replay_renders_once(
    worker_client: TestClient, database: Database, settings: Settings, tmp_path: Path
) -> None:
    body = {**PIX, "resolution": "360p", "duration": 2}
    headers = {"Idempotency-Key": "render-once-1"}
    first = worker_client.post("/v1/videos/generations", json=body, headers=headers)
    again = worker_client.post("/v1/videos/generations", json=body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.headers["Idempotency-Replayed"] == "true"
    task_id = first.json()["data"][0]["task_id"]
    assert again.json()["data"][0]["task_id"] == task_id
    final, _ = wait_terminal(worker_client, task_id)
    assert_completed_video(worker_client, final, tmp_path, size=(640, 360), seconds=2)
    # A replay after completion answers the same finished task and renders nothing new.
    late = worker_client.post("/v1/videos/generations", json=body, headers=headers)
    assert late.json()["data"][0]["task_id"] == task_id
    time.sleep(0.3)
    with database.read() as conn:
        count = conn.execute(sa.select(sa.func.count()).select_from(db.tasks)).scalar_one()
    assert count == 1
    assert result_dirs(settings) == [task_id]
    assert sorted(p.name for p in (settings.files_dir / "results" / task_id).iterdir()) == [
        "thumbnail.jpg",
        "video.mp4",
    ]
    assert [t for t in transitions(database, task_id) if t[1] == "completed"] == [("processing", "completed")]
    assert row_of(database, task_id).attempts == 1


# --- 8. crash recovery ------------------------------------------------------------------------------------


def _dead_owner() -> str:
    pid = 999_999
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    return f"{socket.gethostname()}:{pid}:dead"


def _enqueue(database: Database, api_key: str, body: dict[str, Any]) -> str:
    owner = keys.authenticate(database, api_key)
    assert owner is not None
    row, _ = tasks.create(
        database,
        key_id=owner.id,
        request=catalog.parse(body),
        body=body,
        provider="local",
        estimated_time=5,
    )
    return str(row.id)


def test_task_of_a_dead_same_host_worker_is_taken_over_at_once(
    settings: Settings, database: Database, api_key: str, tmp_path: Path
) -> None:
    task_id = _enqueue(database, api_key, {**PIX, "resolution": "360p", "duration": 1})
    dead = _dead_owner()
    (claimed,) = leases.claim(
        database, owner=dead, providers=frozenset({"local"}), limit=1, lease_seconds=3600
    )
    assert claimed.id == task_id and claimed.lease_owner == dead
    assert claimed.lease_until > time.time() + 3500

    started = time.monotonic()
    with serve(settings, api_key) as client:
        final, _ = wait_terminal(client, task_id, timeout=20)
        elapsed = time.monotonic() - started
        assert_completed_video(client, final, tmp_path, size=(640, 360), seconds=1)
    assert elapsed < 20  # the lease had an hour left
    events = tasks.events(database, task_id)
    assert [(e.from_status, e.to_status) for e in events] == [
        (None, "pending"),
        ("pending", "processing"),
        ("processing", "processing"),
        ("processing", "completed"),
    ]
    assert events[1].worker == dead
    takeover = events[2]
    assert takeover.worker != dead and takeover.worker.startswith(f"{socket.gethostname()}:{os.getpid()}:")
    assert takeover.detail == {"took_over_from": dead}
    assert events[3].worker == takeover.worker
    row = row_of(database, task_id)
    assert (row.status, row.lease_owner, row.lease_token, row.attempts) == ("completed", None, 2, 2)


def test_a_task_past_max_attempts_fails_with_worker_lost(
    settings: Settings, database: Database, api_key: str, tmp_path: Path
) -> None:
    assert settings.max_attempts == 3
    body = {**PIX, "resolution": "360p", "duration": 1}
    worn_out = _enqueue(database, api_key, body)
    one_left = _enqueue(database, api_key, {**body, "seed": 5})
    # worn_out has been claimed 3 times already (3 crashes); one_left twice, so it gets its third try.
    with database.write() as conn:
        conn.execute(db.tasks.update().where(db.tasks.c.id == worn_out).values(attempts=3))
        conn.execute(db.tasks.update().where(db.tasks.c.id == one_left).values(attempts=2))

    with serve(settings, api_key) as client:
        failed, _ = wait_terminal(client, worn_out)
        completed, _ = wait_terminal(client, one_left)
        zh = poll(client, worn_out, "zh")
        assert_completed_video(client, completed, tmp_path, size=(640, 360), seconds=1)

    assert failed["status"] == "failed" and failed["cost"] == 0
    assert "result" not in failed
    assert failed["error"]["code"] == "worker_lost"
    assert failed["error"]["type"] == "server_error"
    assert "param" not in failed["error"]
    assert failed["error"]["message"] == "The task was interrupted 3 times and was stopped"
    assert zh["error"]["message"] == "任务已被中断 3 次，已停止"
    assert transitions(database, worn_out) == [
        (None, "pending"),
        ("pending", "processing"),
        ("processing", "failed"),
    ]
    assert tasks.events(database, worn_out)[-1].detail == {"error": "worker_lost"}
    assert row_of(database, worn_out).attempts == 4
    assert row_of(database, one_left).attempts == 3
    assert result_dirs(settings) == [one_left]


# --- 9. graceful shutdown -----------------------------------------------------------------------------------


def test_shutdown_hands_a_running_render_back_and_the_next_start_finishes_it(
    settings: Settings, database: Database, api_key: str, tmp_path: Path
) -> None:
    body = {**PIX, "resolution": "1080p", "duration": 15, "seed": 3}
    with serve(settings, api_key) as client:
        task_id = submit_task(client, body)
        wait_until(lambda: poll(client, task_id)["status"] == "processing", what="processing")
        time.sleep(0.3)  # well into the render (a text clip has no inputs to fetch)
        assert poll(client, task_id)["status"] == "processing"
    # The lifespan has ended: the render stopped and the task is due again, unleased, not failed.
    row = row_of(database, task_id)
    assert row.status in (Status.PROCESSING, Status.PENDING)
    assert (row.lease_owner, row.lease_until, row.error, row.result) == (None, None, None, None)
    assert row.next_run_at is not None and row.next_run_at <= time.time()
    assert row.attempts == 0  # a graceful hand-back is not a crash
    assert result_dirs(settings) == []
    scratch = settings.files_dir / ".scratch"
    assert not scratch.exists() or list(scratch.iterdir()) == []
    handed_back = [t[1] for t in transitions(database, task_id)]
    assert handed_back[:2] == ["pending", "processing"]
    # Back in the queue (pending again) is a recorded status change; staying processing is not.
    assert handed_back[2:] == (["pending"] if row.status == Status.PENDING else [])

    with serve(settings, api_key) as client:
        final, _ = wait_terminal(client, task_id, timeout=60)
        assert_completed_video(client, final, tmp_path, size=(1920, 1080), seconds=15)
    resumed = transitions(database, task_id)
    assert resumed[:2] == [(None, "pending"), ("pending", "processing")]
    # Completed exactly once, never failed; a resumed claim may or may not be logged as an event.
    settled = [t for t in resumed if t[1] != "processing" and t != ("processing", "pending")]
    assert settled == [(None, "pending"), ("processing", "completed")]
    assert result_dirs(settings) == [task_id]


def test_a_task_claimed_as_shutdown_begins_is_handed_back_at_once(
    settings: Settings, database: Database, api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    task_id = _enqueue(database, api_key, {**PIX, "resolution": "1080p", "duration": 15, "seed": 4})
    gateway = build_gateway(settings, run_worker=True)
    worker = gateway.worker
    assert worker is not None
    claim = leases.claim

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def claim_then_stop(*args: Any, **kwargs: Any) -> list[Any]:
            rows = claim(*args, **kwargs)
            if rows:  # the stop signal arrives while this claim is in flight
                loop.call_soon_threadsafe(stop.set)
            return rows

        monkeypatch.setattr(leases, "claim", claim_then_stop)
        started = time.monotonic()
        await worker.run(stop)
        return time.monotonic() - started

    try:
        elapsed = asyncio.run(scenario())
    finally:
        gateway.database.dispose()
    row = row_of(database, task_id)
    assert row.status in ("processing", "pending"), (row.status, elapsed)
    assert (row.lease_owner, row.result) == (None, None)
    assert row.attempts == 0
    assert elapsed < 3.0
