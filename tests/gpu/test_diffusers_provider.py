"""The `diffusers` provider on the CPU: tiny random-weight Wan, Wan I2V/FLF2V and Wan VACE pipelines,
built in code and saved to local directories, drive every mode through vidgate's API to a finished
MP4 of the requested size and duration. Skipped when the `gpu` extra is not installed."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from fastapi.testclient import TestClient

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from tests.conftest import ImageServer, png_bytes, wait_finished  # noqa: E402
from tests.gpu import tiny_wan  # noqa: E402
from tests.render.probe import Probe, probe  # noqa: E402
from vidgate import keys, migrations  # noqa: E402
from vidgate.api import create_app  # noqa: E402
from vidgate.config import Settings  # noqa: E402
from vidgate.db import Database  # noqa: E402
from vidgate.errors import TaskFailure  # noqa: E402
from vidgate.providers import Router  # noqa: E402
from vidgate.providers import _wan_engine as engine  # noqa: E402
from vidgate.providers import diffusers_wan as dw  # noqa: E402
from vidgate.render import RenderCancelled  # noqa: E402

PIX = {
    "model": "pixverse-v6",
    "prompt": "a red boat on the sea at night",
    "duration": 1,
    "resolution": "360p",
}
TINY = {"diffusers_size": "48x32", "diffusers_max_frames": 9, "diffusers_steps": 2, "diffusers_device": "cpu"}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return tiny_wan.save_all(tmp_path_factory.mktemp("wan"))


def all_modes(checkpoints: dict[str, Path]) -> dict[str, Any]:
    return {f"diffusers_{name}_model": str(path) for name, path in checkpoints.items()} | TINY


@pytest.fixture(scope="module")
def images() -> Iterator[dict[str, str]]:
    server = ImageServer()
    yield {
        "wide": server.add("/wide.png", png_bytes((220, 30, 30), (400, 300))),
        "tall": server.add("/tall.jpg", png_bytes((30, 200, 60), (300, 400), fmt="JPEG"), "image/jpeg"),
        "square": server.add("/square.png", png_bytes((30, 60, 220), (256, 256))),
    }
    server.close()


@pytest.fixture
def gateway(tmp_path: Path) -> Callable[..., Any]:
    """`with gateway(**settings) as client:` an API with its worker in-process (as `vidgate serve`)."""

    @contextmanager
    def factory(**overrides: Any) -> Iterator[TestClient]:
        settings = Settings(
            data_dir=tmp_path / "data",
            allow_private_urls=True,
            poll_interval_seconds=0.05,
            lease_seconds=5,
            local_preset="ultrafast",
            **overrides,
        )
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        database = Database(settings.effective_database_url)
        migrations.upgrade(database)
        secret = keys.create(database, "gpu")[1]
        try:
            with TestClient(create_app(settings), headers={"Authorization": f"Bearer {secret}"}) as client:
                yield client
        finally:
            database.dispose()

    return factory


def run(client: TestClient, body: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    response = client.post("/v1/videos/generations", json=body)
    assert response.status_code == 200, response.text
    return wait_finished(client, response.json()["data"][0]["task_id"], timeout=timeout)


def video_of(client: TestClient, data: dict[str, Any], tmp_path: Path) -> Probe:
    assert data["status"] == "completed", data
    assert data["provider"] == "diffusers", data
    parts = urlsplit(data["result"]["videos"][0]["url"][0])
    response = client.get(f"{parts.path}?{parts.query}", headers={"Authorization": ""})
    assert response.status_code == 200, response.text
    target = tmp_path / f"{data['id']}.mp4"
    target.write_bytes(response.content)
    return probe(target)


# (request, expected width, height, seconds, audio)
CASES: dict[str, tuple[dict[str, Any], int, int, int, bool]] = {
    "text": ({**PIX, "size": "16:9", "audio": True, "seed": 3}, 640, 360, 1, True),
    "image": ({**PIX, "image_urls": ["{tall}"], "duration": 2}, 360, 480, 2, False),
    "transition": (
        {**PIX, "first_frame_image": "{wide}", "last_frame_image": "{square}", "duration": 5},
        480,
        360,
        5,
        False,
    ),
    "fusion": ({**PIX, "img_references": ["{wide}", "{tall}"], "size": "1:1"}, 360, 360, 1, False),
    "reference": (
        {
            "model": "viduq3-mix",
            "prompt": "a cat and a dog",
            "image_urls": ["{square}", "{wide}"],
            "duration": 1,
        },
        1280,
        720,
        1,
        True,
    ),
}


def fill(body: dict[str, Any], images: dict[str, str]) -> dict[str, Any]:
    def sub(value: Any) -> Any:
        if isinstance(value, str) and value.startswith("{"):
            return images[value.strip("{}")]
        if isinstance(value, list):
            return [sub(v) for v in value]
        return value

    return {key: sub(value) for key, value in body.items()}


@pytest.mark.parametrize("mode", list(CASES))
def test_every_mode_through_the_api(
    mode: str, checkpoints: dict[str, Path], images: dict[str, str], gateway: Any, tmp_path: Path
) -> None:
    body, width, height, seconds, audio = CASES[mode]
    with gateway(**all_modes(checkpoints)) as client:
        data = run(client, fill(body, images))
        video = video_of(client, data, tmp_path)
    assert (video.width, video.height) == (width, height)
    assert video.codec == "h264" and video.pix_fmt == "yuv420p" and video.fps == 24
    assert video.frames == seconds * 24
    assert abs(video.video_duration - seconds) < 0.05
    assert (video.audio_codec == "aac") is audio
    assert data["result"]["thumbnail_url"]


def test_extension_continues_a_diffusers_video(
    checkpoints: dict[str, Path], gateway: Any, tmp_path: Path
) -> None:
    with gateway(**all_modes(checkpoints)) as client:
        source = run(client, {**PIX, "size": "4:3"})
        assert source["status"] == "completed", source
        data = run(client, {**PIX, "extend_from_task_id": source["id"], "duration": 2, "prompt": "it sinks"})
        video = video_of(client, data, tmp_path)
    assert (video.width, video.height) == (480, 360)
    assert video.frames == 48


def test_a_mode_without_a_checkpoint_fails_fast_and_is_not_routed(
    checkpoints: dict[str, Path], images: dict[str, str], gateway: Any
) -> None:
    only_text = {"diffusers_t2v_model": str(checkpoints["t2v"]), **TINY}
    router = Router(Settings(**only_text))
    assert router.pick("pixverse-v6") == "diffusers"
    assert "diffusers" not in router.route("viduq3")  # needs VACE
    with gateway(**only_text) as client:
        data = run(client, {**PIX, "image_urls": [images["wide"]]})
    assert data["status"] == "failed", data
    assert "VIDGATE_DIFFUSERS_I2V_MODEL" in str(data["error"]), data


def test_disabled_without_a_checkpoint() -> None:
    assert not dw.DiffusersWanProvider.enabled(Settings())
    assert "diffusers" not in Router(Settings()).enabled


def job(mode: str = "text", seed: int = 5) -> engine.Job:
    return engine.Job(
        mode=mode,
        prompt="a boat",
        negative_prompt="",
        seed=seed,
        width=64,
        height=36,
        gen_width=48,
        gen_height=32,
        gen_frames=9,
        duration=1,
        audio=False,
        watermark=False,
    )


def test_same_seed_same_video(checkpoints: dict[str, Path]) -> None:
    settings = Settings(**all_modes(checkpoints))
    first = engine.generate(settings, job(seed=5), lambda f: None, lambda: False)
    again = engine.generate(settings, job(seed=5), lambda f: None, lambda: False)
    other = engine.generate(settings, job(seed=6), lambda f: None, lambda: False)
    assert first.shape == (9, 32, 48, 3)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_progress_per_step_and_cancel_between_steps(checkpoints: dict[str, Path]) -> None:
    settings = Settings(**{**all_modes(checkpoints), "diffusers_steps": 4})
    seen: list[float] = []
    with pytest.raises(RenderCancelled, match="after 2 of 4 steps"):
        engine.generate(settings, job(), seen.append, lambda: len(seen) >= 2)
    assert seen == [pytest.approx(0.9 * 1 / 4), pytest.approx(0.9 * 2 / 4)]
    assert engine.device_lock("cpu").acquire(blocking=False)  # freed for the next task
    engine.device_lock("cpu").release()


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (torch.cuda.OutOfMemoryError("CUDA out of memory"), "engine_out_of_memory"),
        (RuntimeError("boom"), "engine_failed"),
    ],
)
def test_engine_errors_fail_the_task_and_free_the_device(
    error: Exception, code: str, checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch, gateway: Any
) -> None:
    def broken(*args: Any) -> Any:
        raise error

    monkeypatch.setattr(engine, "_generate_locked", broken)
    with pytest.raises(TaskFailure) as failure:
        engine.generate(Settings(**all_modes(checkpoints)), job(), lambda f: None, lambda: False)
    assert failure.value.code == code
    assert engine.device_lock("cpu").acquire(blocking=False)
    engine.device_lock("cpu").release()
    with gateway(**all_modes(checkpoints)) as client:
        data = run(client, PIX)
    assert data["status"] == "failed" and data["error"]["code"] == code, data


def test_native_size_frames_and_retiming() -> None:
    settings = Settings()
    assert engine.native_size(settings, 16 / 9) == (832, 480)
    assert engine.native_size(settings, 9 / 16) == (480, 832)
    assert engine.native_size(settings, 1.0) == (624, 624)
    assert engine.native_frames(settings, 5) == 81 and engine.native_frames(settings, 2) == 33
    assert engine.native_frames(settings, 15) == 81
    assert engine.retime(9, 24)[0] == 0 and engine.retime(9, 24)[-1] == 8 and len(engine.retime(9, 24)) == 24
