"""Every mode of every model through a real `vidgate serve`, to an MP4 probed with PyAV."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ImageServer, png_bytes

from .conftest import Server, download, probe, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def images() -> Iterator[dict[str, str]]:
    server = ImageServer()
    urls = {
        "red": server.add("/red.png", png_bytes((220, 30, 30), (400, 300))),
        "green": server.add("/green.jpg", png_bytes((30, 200, 60), (300, 400), fmt="JPEG"), "image/jpeg"),
        "blue": server.add("/blue.webp", png_bytes((30, 60, 220), (256, 256), fmt="WEBP"), "image/webp"),
        "tall": server.add("/tall.png", png_bytes((200, 200, 30), (300, 400))),
    }
    yield urls
    server.close()


# (name, body, expected width, height, seconds, audio codec or None)
def cases(img: dict[str, str]) -> list[tuple[str, dict[str, Any], int, int, int, str | None]]:
    return [
        (
            "viduq3 reference",
            {
                "model": "viduq3",
                "prompt": "the two toys dance",
                "image_urls": [img["red"], img["green"]],
                "duration": 3,
                "resolution": "540p",
            },
            960,
            540,
            3,
            "aac",
        ),
        (
            "viduq3 reference 9:16",
            {
                "model": "viduq3",
                "prompt": "a toy",
                "image_urls": [img["blue"]],
                "duration": 3,
                "resolution": "540p",
                "aspect_ratio": "9:16",
                "seed": 7,
            },
            540,
            960,
            3,
            "aac",
        ),
        (
            "viduq3-mix reference",
            {
                "model": "viduq3-mix",
                "prompt": "three toys",
                "duration": 1,
                "image_urls": [img["red"], img["green"], img["blue"]],
                "aspect_ratio": "1:1",
            },
            720,
            720,
            1,
            "aac",
        ),
        (
            "pixverse text",
            {
                "model": "pixverse-v6",
                "prompt": "a kite at dawn",
                "duration": 2,
                "resolution": "360p",
                "size": "21:9",
                "audio": True,
                "watermark": True,
                "generate_multi_clip_switch": True,
            },
            840,
            360,
            2,
            "aac",
        ),
        (
            "pixverse text silent",
            {"model": "pixverse-v6", "prompt": "quiet lake", "duration": 1, "resolution": "540p"},
            960,
            540,
            1,
            None,
        ),
        (
            "pixverse image",
            {
                "model": "pixverse-v6",
                "prompt": "zoom in",
                "image_urls": [img["tall"]],
                "duration": 2,
                "resolution": "540p",
                "size": "16:9",
            },
            540,
            720,
            2,
            None,
        ),
        (
            "pixverse transition",
            {
                "model": "pixverse-v6",
                "prompt": "morph",
                "first_frame_image": img["red"],
                "last_frame_image": img["green"],
                "duration": 5,
                "resolution": "360p",
            },
            480,
            360,
            5,
            None,
        ),
        (
            "pixverse fusion",
            {
                "model": "pixverse-v6",
                "prompt": "@image1 meets @image2",
                "resolution": "360p",
                "img_references": [img["red"], img["green"], img["blue"]],
                "size": "9:16",
                "duration": 2,
                "audio": True,
            },
            360,
            640,
            2,
            "aac",
        ),
    ]


def test_every_mode_renders_a_real_mp4(server: Server, images: dict[str, str], tmp_path: Path) -> None:
    with server.client() as client:
        submitted = []
        for name, body, width, height, seconds, audio in cases(images):
            response = client.post("/v1/videos/generations", json=body)
            assert response.status_code == 200, (name, response.text)
            submitted.append((name, response.json()["data"][0]["task_id"], width, height, seconds, audio))
        for name, task_id, width, height, seconds, audio in submitted:
            task = wait_for(client, task_id)
            assert task["status"] == "completed", (name, task)
            assert task["provider"] == "local" and task["progress"] == 100
            video = task["result"]["videos"][0]
            path = download(client, video["url"][0], tmp_path / f"{task_id}.mp4")
            facts = probe(path)
            assert (facts.width, facts.height) == (width, height), name
            assert facts.fps == 24, name
            assert facts.frames == seconds * 24, name
            assert abs(facts.duration - seconds) < 0.1, name
            assert facts.codec == "h264" and facts.pix_fmt == "yuv420p", name
            assert facts.audio == audio, name
            if audio:
                assert facts.audio_channels == 2, name
            assert (video["width"], video["height"], video["has_audio"]) == (width, height, audio is not None)
            thumb = httpx.get(task["result"]["thumbnail_url"], timeout=30)
            assert thumb.status_code == 200 and thumb.content[:3] == b"\xff\xd8\xff", name


def test_extension_continues_a_finished_task(server: Server, tmp_path: Path) -> None:
    with server.client() as client:
        source = client.post(
            "/v1/videos/generations",
            json={
                "model": "pixverse-v6",
                "prompt": "a boat",
                "size": "4:3",
                "duration": 1,
                "resolution": "360p",
            },
        ).json()["data"][0]["task_id"]
        assert wait_for(client, source)["status"] == "completed"
        extended = client.post(
            "/v1/videos/generations",
            json={
                "model": "pixverse-v6",
                "prompt": "the boat sails on",
                "extend_from_task_id": source,
                "duration": 2,
                "resolution": "540p",
                "size": "16:9",
            },
        ).json()["data"][0]["task_id"]
        task = wait_for(client, extended)
        assert task["status"] == "completed", task
        facts = probe(download(client, task["result"]["videos"][0]["url"][0], tmp_path / "ext.mp4"))
        # The source's ratio (4:3) at the requested tier; `size` does not apply to extension.
        assert (facts.width, facts.height, facts.frames) == (720, 540, 48)


def test_same_seed_same_video(server: Server, tmp_path: Path) -> None:
    body = {"model": "pixverse-v6", "prompt": "same", "duration": 1, "resolution": "360p", "seed": 42}
    with server.client() as client:
        ids = [
            client.post("/v1/videos/generations", json=body).json()["data"][0]["task_id"] for _ in range(2)
        ]
        files = [
            download(client, wait_for(client, t)["result"]["videos"][0]["url"][0], tmp_path / f"{t}.mp4")
            for t in ids
        ]
    assert files[0].read_bytes() == files[1].read_bytes()


def test_cli_generate_with_local_image_file(server: Server, tmp_path: Path) -> None:
    from .conftest import run_cli

    image = tmp_path / "ref.png"
    image.write_bytes(png_bytes((10, 120, 240), (320, 240)))
    out = tmp_path / "cli.mp4"
    env = {**server.env, "VIDGATE_BASE_URL": server.base, "VIDGATE_API_KEY": server.key}
    result = run_cli(
        env,
        "generate",
        "--model",
        "viduq3-mix",
        "--prompt",
        "a blue card",
        "--image",
        str(image),
        "--param",
        "duration=1",
        "--param",
        'aspect_ratio="4:3"',
        "--wait",
        "-o",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("task_")
    facts = probe(out)
    assert (facts.width, facts.height, facts.frames) == (960, 720, 24)
    bad = run_cli(env, "generate", "--model", "pixverse-v6", "--prompt", "x", "--param", "duration=99")
    assert bad.returncode == 1 and "duration" in bad.stderr and "Traceback" not in bad.stderr
