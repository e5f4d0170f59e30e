"""Image inputs through the worker: real HTTP fetches, own uploads, and tasks that fail on their inputs."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from vidgate import tasks
from vidgate.config import Settings
from vidgate.db import Database

from .conftest import ImageServer, png_bytes
from .render.probe import colour_share, decode_rgb, diff
from .test_worker import (
    assert_completed_video,
    poll,
    result_dirs,
    serve,
    submit_task,
    transitions,
    wait_terminal,
)

RED = (220, 30, 30)
GREEN = (30, 190, 60)
BLUE = (30, 60, 220)


def _frames(tmp_path: Path, task_id: str) -> list[Any]:
    return decode_rgb(tmp_path / f"{task_id}.mp4")


# --- 2. inputs over real HTTP -------------------------------------------------------------------------


def test_viduq3_fetches_each_distinct_reference_once(
    worker_client: TestClient, image_server: ImageServer, tmp_path: Path
) -> None:
    a = image_server.add("/a.png", png_bytes(RED, (256, 256)))
    b = image_server.add("/b.jpg", png_bytes(BLUE, (300, 200), fmt="JPEG"), "image/jpeg")
    body = {
        "model": "viduq3",
        "prompt": "two friends meet",
        "image_urls": [a, b, a],
        "resolution": "540p",
        "duration": 3,
    }
    final, _ = wait_terminal(worker_client, submit_task(worker_client, body))
    p = assert_completed_video(worker_client, final, tmp_path, size=(960, 540), seconds=3)
    assert image_server.hits == {"/a.png": 1, "/b.jpg": 1}
    # viduq3 carries a soundtrack, as the upstream does.
    assert (p.audio_codec, p.audio_channels, p.audio_rate) == ("aac", 2, 48_000)
    assert final["result"]["videos"][0]["has_audio"] is True
    frames = _frames(tmp_path, final["id"])
    assert max(colour_share(f, RED) for f in frames) > 0.01
    assert max(colour_share(f, BLUE) for f in frames) > 0.01


def test_pixverse_image_to_video_takes_the_snapped_ratio_of_its_image(
    worker_client: TestClient, image_server: ImageServer, tmp_path: Path
) -> None:
    exact = image_server.add("/portrait.png", png_bytes(GREEN, (300, 400)))
    near = image_server.add("/near.png", png_bytes(GREEN, (310, 400)))
    base = {"model": "pixverse-v6", "prompt": "leaves sway", "resolution": "540p", "duration": 1}
    plain = submit_task(worker_client, {**base, "image_urls": [exact]})
    # `size` is for text and fusion only; 310x400 snaps to 3:4 as well.
    sized = submit_task(worker_client, {**base, "image_urls": [near, exact], "size": "16:9"})
    for task_id in (plain, sized):
        final, _ = wait_terminal(worker_client, task_id)
        assert_completed_video(worker_client, final, tmp_path, size=(540, 720), seconds=1)
        assert colour_share(_frames(tmp_path, task_id)[0], GREEN, tolerance=60) > 0.8
    # image-to-video uses the first image only.
    assert image_server.hits == {"/portrait.png": 1, "/near.png": 1}


def test_transition_goes_from_the_first_image_to_the_last(
    worker_client: TestClient, image_server: ImageServer, tmp_path: Path
) -> None:
    first = image_server.add("/first.png", png_bytes(RED, (400, 300)))
    last = image_server.add("/last.webp", png_bytes(BLUE, (400, 300), fmt="WEBP"), "image/webp")
    body = {
        "model": "pixverse-v6",
        "prompt": "day turns to night",
        "first_frame_image": first,
        "last_frame_image": last,
        "resolution": "360p",
        "duration": 5,
    }
    final, _ = wait_terminal(worker_client, submit_task(worker_client, body))
    assert_completed_video(worker_client, final, tmp_path, size=(480, 360), seconds=5)
    frames = _frames(tmp_path, final["id"])
    assert colour_share(frames[0], RED) > 0.8 and colour_share(frames[0], BLUE) < 0.05
    assert colour_share(frames[-1], BLUE) > 0.8 and colour_share(frames[-1], RED) < 0.05
    assert image_server.hits == {"/first.png": 1, "/last.webp": 1}


def test_fusion_shows_every_reference(
    worker_client: TestClient, image_server: ImageServer, database: Database, tmp_path: Path
) -> None:
    refs = [
        image_server.add(f"/ref{i}.png", png_bytes(c, (200, 200))) for i, c in enumerate((RED, GREEN, BLUE))
    ]
    body = {
        "model": "pixverse-v6",
        "prompt": "all three together",
        "img_references": refs,
        "size": "1:1",
        "resolution": "540p",
        "duration": 2,
    }
    task_id = submit_task(worker_client, body)
    final, _ = wait_terminal(worker_client, task_id)
    assert_completed_video(worker_client, final, tmp_path, size=(540, 540), seconds=2)
    row = tasks.get(database, task_id)
    assert row is not None and row.mode == "fusion"
    assert image_server.hits == {"/ref0.png": 1, "/ref1.png": 1, "/ref2.png": 1}
    frames = _frames(tmp_path, task_id)
    for colour in (RED, GREEN, BLUE):
        assert max(colour_share(f, colour) for f in frames) > 0.01, colour


# --- 3. own uploads ------------------------------------------------------------------------------------


def test_own_upload_urls_are_trusted_without_a_fetch(
    settings: Settings, database: Database, api_key: str, image_server: ImageServer, tmp_path: Path
) -> None:
    # Signed URLs name the image server's loopback address: a real fetch would be refused (and hit it).
    strict = settings.model_copy(update={"allow_private_urls": False, "public_url": image_server.base})
    with serve(strict, api_key) as client:
        uploads = []
        for name, data in (
            ("tall.png", png_bytes(GREEN, (300, 400))),
            ("b.jpg", png_bytes(BLUE, fmt="JPEG")),
        ):
            response = client.post("/v1/uploads/images", files={"file": (name, data)})
            assert response.status_code == 200, response.text
            url = response.json()["url"]
            assert url.startswith(f"{image_server.base}/files/uploads/")
            uploads.append(url)
        base = {"model": "pixverse-v6", "prompt": "leaves sway", "resolution": "360p", "duration": 1}
        image_task = submit_task(client, {**base, "image_urls": [uploads[0]]})
        vidu_body = {"model": "viduq3", "prompt": "a walk", "image_urls": uploads, "resolution": "540p"}
        vidu_task = submit_task(client, {**vidu_body, "duration": 3})
        tampered = submit_task(client, {**base, "image_urls": [uploads[0].replace("sig=", "sig=x")]})
        image_done, _ = wait_terminal(client, image_task)
        vidu_done, _ = wait_terminal(client, vidu_task)
        refused, _ = wait_terminal(client, tampered)
        assert_completed_video(client, image_done, tmp_path, size=(360, 480), seconds=1)
        assert_completed_video(client, vidu_done, tmp_path, size=(960, 540), seconds=3)
    # Only a valid signature is trusted: a tampered one is an ordinary URL, and loopback is refused.
    assert refused["status"] == "failed"
    assert refused["error"]["code"] == "image_url_refused"
    assert refused["error"]["param"] == "image_urls[0]"
    assert image_server.hits == {}


# --- 4. tasks that fail on their inputs ------------------------------------------------------------------

Body = Callable[[str, str], dict[str, Any]]


def _vidu(good: str, bad: str) -> dict[str, Any]:
    return {"model": "viduq3", "prompt": "x", "image_urls": [good, bad], "resolution": "540p", "duration": 3}


def _vidu_only(good: str, bad: str) -> dict[str, Any]:
    return {"model": "viduq3", "prompt": "x", "image_urls": [bad, good], "resolution": "540p", "duration": 3}


def _pix_image(good: str, bad: str) -> dict[str, Any]:
    return {"model": "pixverse-v6", "prompt": "x", "image_urls": [bad, good], "resolution": "360p"}


def _pix_transition(good: str, bad: str) -> dict[str, Any]:
    return {"model": "pixverse-v6", "prompt": "x", "first_frame_image": good, "last_frame_image": bad}


def _pix_fusion(good: str, bad: str) -> dict[str, Any]:
    return {"model": "pixverse-v6", "prompt": "x", "img_references": [good, good, bad], "resolution": "360p"}


FAILURES = [
    pytest.param(
        _vidu,
        png_bytes(RED, (64, 64)),
        "image/png",
        "image_too_small",
        "image_urls[1]",
        "image_urls[1] must be at least 128x128 pixels (got 64x64)",
        "至少需要 128x128 像素",
        id="too-small",
    ),
    pytest.param(
        _vidu_only,
        png_bytes(RED, fmt="GIF"),
        "image/gif",
        "image_format",
        "image_urls[0]",
        "image_urls[0] must be a JPEG/PNG/WebP image (detected: GIF)",
        "必须是 JPEG/PNG/WebP 图片",
        id="gif-for-viduq3",
    ),
    pytest.param(
        _pix_image,
        b"this is a text file, not a picture\n" * 20,
        "image/png",
        "image_format",
        "image_urls[0]",
        "image_urls[0] must be a JPEG/PNG/WebP image (detected: unknown)",
        "必须是 JPEG/PNG/WebP 图片",
        id="text-served-as-png",
    ),
    pytest.param(
        _pix_transition,
        png_bytes(RED, (128, 640)),
        "image/png",
        "image_aspect",
        "last_frame_image",
        "last_frame_image aspect ratio must be between 1:4 and 4:1 (got 128x640)",
        "宽高比必须在 1:4 与 4:1 之间",
        id="aspect-1-5",
    ),
    pytest.param(
        _pix_fusion,
        None,
        "",
        "image_fetch_failed",
        "img_references[2]",
        "Could not download img_references[2]: HTTP 404",
        "无法下载",
        id="404",
    ),
]


@pytest.mark.parametrize(("body", "data", "content_type", "code", "param", "message", "zh"), FAILURES)
def test_bad_input_fails_the_task_with_a_clear_error(
    worker_client: TestClient,
    image_server: ImageServer,
    database: Database,
    settings: Settings,
    body: Body,
    data: bytes | None,
    content_type: str,
    code: str,
    param: str,
    message: str,
    zh: str,
) -> None:
    good = image_server.add("/good.png", png_bytes(GREEN, (256, 256)))
    bad = image_server.add("/bad", data, content_type) if data is not None else f"{image_server.base}/bad"
    task_id = submit_task(worker_client, body(good, bad))
    final, _ = wait_terminal(worker_client, task_id)
    assert final["status"] == "failed", final
    assert final["cost"] == 0
    assert "result" not in final
    assert final["error"] == {
        "code": code,
        "message": message,
        "type": "invalid_request_error",
        "param": param,
    }
    localized = poll(worker_client, task_id, "zh")["error"]
    assert (localized["code"], localized["param"]) == (code, param)
    assert zh in localized["message"] and param in localized["message"]
    assert image_server.hits["/bad"] == 1  # fetched once, not retried
    assert transitions(database, task_id) == [
        (None, "pending"),
        ("pending", "processing"),
        ("processing", "failed"),
    ]
    assert tasks.events(database, task_id)[-1].detail == {"error": code}
    assert result_dirs(settings) == []


def test_loopback_url_is_refused_without_a_connection(
    settings: Settings, database: Database, api_key: str
) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    strict = settings.model_copy(update={"allow_private_urls": False, "fetch_timeout_seconds": 3.0})
    try:
        with serve(strict, api_key) as client:
            literal = submit_task(
                client, {"model": "viduq3", "prompt": "x", "image_urls": [f"http://127.0.0.1:{port}/a.png"]}
            )
            named = submit_task(
                client,
                {"model": "pixverse-v6", "prompt": "x", "image_urls": [f"http://localhost:{port}/b.png"]},
            )
            first, _ = wait_terminal(client, literal)
            second, _ = wait_terminal(client, named)
            zh = poll(client, literal, "zh")["error"]
        listener.settimeout(0.5)
        with pytest.raises(TimeoutError):
            listener.accept()
    finally:
        listener.close()
    assert first["status"] == "failed" and first["cost"] == 0 and "result" not in first
    assert first["error"] == {
        "code": "image_url_refused",
        "message": (
            "image_urls[0] was not fetched: loopback address 127.0.0.1; only public http(s) URLs are allowed"
        ),
        "type": "invalid_request_error",
        "param": "image_urls[0]",
    }
    assert zh["message"].startswith("未下载 image_urls[0]：") and zh["message"].endswith(
        "只允许公网 http(s) 链接"
    )
    assert second["status"] == "failed"
    assert second["error"]["code"] == "image_url_refused"
    assert second["error"]["param"] == "image_urls[0]"
    assert second["error"]["message"].startswith("image_urls[0] was not fetched: loopback address ")
    assert transitions(database, literal)[-1] == ("processing", "failed")
    assert result_dirs(settings) == []


# --- 5. extension: the source video is an input too -------------------------------------------------------

PIX = {"model": "pixverse-v6", "prompt": "a red kite over the sea"}


def test_extension_follows_the_source_ratio_at_the_requested_resolution(
    worker_client: TestClient, database: Database, tmp_path: Path
) -> None:
    source_id = submit_task(worker_client, {**PIX, "size": "9:16", "resolution": "540p", "duration": 2})
    source, _ = wait_terminal(worker_client, source_id)
    assert_completed_video(worker_client, source, tmp_path, size=(540, 960), seconds=2)

    # `size` belongs to text and fusion only: the extension keeps its source's 9:16.
    body = {**PIX, "extend_from_task_id": source_id, "resolution": "360p", "duration": 2, "size": "16:9"}
    extended_id = submit_task(worker_client, body)
    extended, _ = wait_terminal(worker_client, extended_id)
    assert_completed_video(worker_client, extended, tmp_path, size=(360, 640), seconds=2)
    row = tasks.get(database, extended_id)
    assert row is not None and row.mode == "extend"
    assert extended["result"]["videos"][0]["url"][0] != source["result"]["videos"][0]["url"][0]
    # The continuation starts where the source ends (both scaled to the same small size).
    source_last = Image.fromarray(_frames(tmp_path, source_id)[-1]).resize((90, 160))
    extended_first = Image.fromarray(_frames(tmp_path, extended_id)[0]).resize((90, 160))
    assert diff(np.asarray(source_last), np.asarray(extended_first)) < 12.0


def test_extension_of_a_source_whose_video_is_gone_fails(
    worker_client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    source_id = submit_task(worker_client, {**PIX, "resolution": "360p", "duration": 1})
    source, _ = wait_terminal(worker_client, source_id)
    assert source["status"] == "completed"
    (settings.files_dir / "results" / source_id / "video.mp4").unlink()
    task_id = submit_task(worker_client, {**PIX, "extend_from_task_id": source_id, "resolution": "360p"})
    final, _ = wait_terminal(worker_client, task_id)
    assert final["status"] == "failed" and final["cost"] == 0 and "result" not in final
    assert final["error"] == {
        "code": "extend_source_unavailable",
        "message": "The video of extend_from_task_id is no longer available",
        "type": "invalid_request_error",
        "param": "extend_from_task_id",
    }
    assert "extend_from_task_id" in poll(worker_client, task_id, "zh")["error"]["message"]
    assert result_dirs(settings) == [source_id]
