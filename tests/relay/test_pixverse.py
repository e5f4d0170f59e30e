"""The `pixverse` relay over real HTTP to the fake PixVerse: every mode through the API, what each
call sent upstream, crash recovery in `submitting`, and the in-flight cap. Faults are in
`test_pixverse_faults.py`."""

from __future__ import annotations

import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tests.conftest import ImageServer, png_bytes
from tests.render.probe import Probe, probe
from vidgate import catalog, db, tasks
from vidgate.catalog.pixverse import PixverseV6
from vidgate.db import Database
from vidgate.providers import _relay
from vidgate.providers.pixverse import IMAGES_KEY, generate_call, with_mentions
from vidgate.status import Phase, Status

from .conftest import wait_for

KEY = "pixverse-test-key"
PIX = {"model": "pixverse-v6", "prompt": "a paper boat drifts down a rainy street", "duration": 1}

Gateway = Callable[..., Any]


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """The relay's backoff between ticks is seconds long; tests keep the jitter, not the wait."""

    def short(
        attempt: int, *, base: float = 2.0, cap: float = 60.0, retry_after: float | None = None
    ) -> float:
        return random.uniform(0.01, 0.05)

    monkeypatch.setattr(_relay, "backoff", short)


@pytest.fixture
def gateway(pixverse: tuple[Any, str], make_gateway: Gateway) -> Gateway:
    """`with gateway(**settings) as (client, database):` a vidgate that relays to the fake."""
    _app, base = pixverse

    def start(**overrides: Any) -> Any:
        values = {
            "pixverse_api_key": KEY,
            "pixverse_base_url": f"{base}/openapi/v2",
            "upstream_poll_seconds": 0.05,
            **overrides,
        }
        return make_gateway(**values)

    return start


@pytest.fixture
def images() -> Iterator[dict[str, str]]:
    server = ImageServer()
    yield {
        "wide": server.add("/wide.png", png_bytes((220, 30, 30), (400, 300))),
        "tall": server.add("/tall.jpg", png_bytes((30, 200, 60), (300, 400), fmt="JPEG"), "image/jpeg"),
        "square": server.add("/square.webp", png_bytes((30, 60, 220), (256, 256), fmt="WEBP"), "image/webp"),
    }
    server.close()


# --- helpers (also used by test_pixverse_faults.py) --------------------------------------------------


def submit(client: TestClient, body: dict[str, Any]) -> str:
    response = client.post("/v1/videos/generations", json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["data"][0]["task_id"])


def run(client: TestClient, body: dict[str, Any], timeout: float = 20) -> dict[str, Any]:
    return wait_for(client, submit(client, body), timeout=timeout)


def row_of(database: Database, task_id: str) -> Any:
    row = tasks.get(database, task_id)
    assert row is not None
    return row


def job_of(app: Any, database: Database, task_id: str) -> Any:
    """The fake's record of the job that served `task_id`."""
    return app.fake.jobs[int(row_of(database, task_id).upstream_id)]


def stats(app: Any) -> dict[str, Any]:
    snapshot: dict[str, Any] = app.fake.stats_snapshot()
    return snapshot


def served_video(client: TestClient, data: dict[str, Any], tmp_path: Path) -> Probe:
    """Assert the task completed at PixVerse, with vidgate's own signed URL; probe the MP4."""
    assert data["status"] == "completed", data
    assert data["provider"] == "pixverse"
    url = data["result"]["videos"][0]["url"][0]
    parts = urlsplit(url)
    assert parts.netloc == "testserver" and parts.path.startswith("/files/"), url
    assert "sig=" in parts.query and "expires=" in parts.query
    assert "thumbnail_url" not in data["result"]  # PixVerse has no cover image
    response = client.get(f"{parts.path}?{parts.query}", headers={"Authorization": ""})
    assert response.status_code == 200, response.text
    target = tmp_path / f"{data['id']}.mp4"
    target.write_bytes(response.content)
    return probe(target)


def assert_one_job_per_task(app: Any, count: int = 1) -> None:
    snap = stats(app)
    assert snap["jobs_created"] == count, snap
    # Every trace id is a UUID; only retries of one generate call may share one.
    assert all(uuid.UUID(trace) for trace in snap["submits_by_trace_id"])


def key_id_of(database: Database) -> str:
    with database.read() as conn:
        return str(conn.execute(sa.select(db.api_keys.c.id)).scalar_one())


def staged_task(database: Database, body: dict[str, Any], **values: Any) -> str:
    """A task row in any state, written behind the worker's back: created for a provider nobody
    serves, then moved to its real state in one update, so no worker claims it half-written."""
    row, _ = tasks.create(
        database,
        key_id=key_id_of(database),
        request=catalog.parse(body),
        body=body,
        provider="nobody",
        estimated_time=5,
    )
    with database.write() as conn:
        conn.execute(db.tasks.update().where(db.tasks.c.id == row.id).values(**values))
    return str(row.id)


def dead_owner() -> str:
    pid = 999_999
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    return f"{socket.gethostname()}:{pid}:dead"


@contextmanager
def running(gateway: Gateway, **overrides: Any) -> Iterator[tuple[TestClient, Database]]:
    with gateway(**overrides) as (client, database):
        yield client, database


# --- what each mode sends (no server needed) ------------------------------------------------------------


def request(**fields: Any) -> PixverseV6:
    parsed = catalog.parse({**PIX, **fields})
    assert isinstance(parsed, PixverseV6)
    return parsed


def test_generate_body_per_mode() -> None:
    text = request(size="9:16", audio=True, generate_multi_clip_switch=True, seed=7, resolution="720p")
    assert generate_call(text, [], None) == (
        "/video/text/generate",
        {
            "model": "v6",
            "prompt": PIX["prompt"],
            "duration": 1,
            "quality": "720p",
            "generate_audio_switch": True,
            "seed": 7,
            "generate_multi_clip_switch": True,
            "aspect_ratio": "9:16",
        },
    )
    image = request(image_urls=["http://x/a.png", "http://x/b.png"], negative_prompt="blur", watermark=True)
    path, body = generate_call(image, [11], None)
    assert path == "/video/img/generate"
    assert body["img_id"] == 11 and "aspect_ratio" not in body
    assert body["negative_prompt"] == "blur" and body["water_mark"] is True
    assert body["generate_multi_clip_switch"] is False
    pair = {"first_frame_image": "http://x/a.png", "last_frame_image": "http://x/b.png"}
    path, body = generate_call(request(**pair, duration=5), [11, 12], None)
    assert path == "/video/transition/generate"
    assert (body["first_frame_img"], body["last_frame_img"]) == (11, 12)
    assert not {"aspect_ratio", "generate_multi_clip_switch", "water_mark", "seed"} & set(body)
    path, body = generate_call(request(extend_from_task_id="task_1"), [], 300)
    assert path == "/video/extend/generate"
    assert body["source_video_id"] == 300 and "aspect_ratio" not in body
    refs = request(img_references=["http://x/a.png"] * 3, size="1:1", prompt="@image2 waves at the others")
    path, body = generate_call(refs, [1, 2, 3], None)
    assert path == "/video/fusion/generate" and body["aspect_ratio"] == "1:1"
    assert body["image_references"] == [
        {"type": "subject", "img_id": n, "ref_name": f"image{n}"} for n in (1, 2, 3)
    ]
    assert body["prompt"] == "@image1 @image3 @image2 waves at the others"
    assert "motion_mode" not in body


def test_fusion_mentions_are_added_only_where_missing() -> None:
    assert with_mentions("@image1 and @image2 dance", 2) == "@image1 and @image2 dance"
    # A mention must be followed by a space; `@image1,` or a final `@image2` does not count.
    assert with_mentions("@image1, then @image2", 2) == "@image1 @image2 @image1, then @image2"
    assert with_mentions("two toys", 3) == "@image1 @image2 @image3 two toys"


# --- every mode through the API ----------------------------------------------------------------------


def test_text_to_video_with_size_audio_and_multi_clip(
    gateway: Gateway, pixverse: tuple[Any, str], tmp_path: Path
) -> None:
    app, _ = pixverse
    body = {
        **PIX,
        "duration": 3,
        "resolution": "720p",
        "size": "9:16",
        "audio": True,
        "generate_multi_clip_switch": True,
        "seed": 42,
        "negative_prompt": "blurry",
        "watermark": True,
    }
    with running(gateway) as (client, database):
        data = run(client, body)
        video = served_video(client, data, tmp_path)
        job = job_of(app, database, data["id"])
        result = tasks.decode_json(row_of(database, data["id"]).result)
    assert job.kind == "text"
    assert job.request == {
        "model": "v6",
        "prompt": body["prompt"],
        "negative_prompt": "blurry",
        "duration": 3,
        "quality": "720p",
        "seed": 42,
        "style": "",
        "generate_audio_switch": True,
        "generate_multi_clip_switch": True,
        "water_mark": True,
        "aspect_ratio": "9:16",
    }
    assert result["upstream_id"] == str(job.id)
    assert video.width < video.height  # 9:16
    assert video.audio_codec == "aac"
    assert data["result"]["videos"][0]["has_audio"] is True
    assert_one_job_per_task(app)
    snap = stats(app)
    assert snap["uploads"] == 0 and snap["replays"] == 0  # every poll had a fresh trace id
    assert snap["polls"] >= 1


def test_image_to_video_uploads_the_first_image_once(
    gateway: Gateway, pixverse: tuple[Any, str], images: dict[str, str], tmp_path: Path
) -> None:
    app, _ = pixverse
    body = {**PIX, "image_urls": [images["tall"], images["wide"]], "generate_multi_clip_switch": True}
    with running(gateway) as (client, database):
        data = run(client, body)
        video = served_video(client, data, tmp_path)
        job = job_of(app, database, data["id"])
        state = row_of(database, data["id"]).upstream_state
    assert job.kind == "img" and job.request["quality"] == "540p" and job.request["duration"] == 1
    assert "aspect_ratio" not in job.request and job.request["generate_multi_clip_switch"] is True
    uploaded = app.fake.images[job.request["img_id"]]
    assert (uploaded.width, uploaded.height, uploaded.format) == (300, 400, "JPEG")
    assert state[IMAGES_KEY] == [job.request["img_id"]]
    assert video.width < video.height  # follows the 3:4 image
    assert video.audio_codec is None
    assert stats(app)["uploads"] == 1
    assert_one_job_per_task(app)


def test_transition_uploads_first_and_last_frame(
    gateway: Gateway, pixverse: tuple[Any, str], images: dict[str, str], tmp_path: Path
) -> None:
    app, _ = pixverse
    body = {**PIX, "duration": 5, "first_frame_image": images["wide"], "last_frame_image": images["tall"]}
    with running(gateway) as (client, database):
        data = run(client, body)
        served_video(client, data, tmp_path)
        job = job_of(app, database, data["id"])
    assert job.kind == "transition" and job.request["duration"] == 5
    first, last = (app.fake.images[job.request[k]] for k in ("first_frame_img", "last_frame_img"))
    assert (first.width, first.height) == (400, 300) and (last.width, last.height) == (300, 400)
    assert "aspect_ratio" not in job.request
    assert stats(app)["uploads"] == 2
    assert_one_job_per_task(app)


def test_fusion_with_three_references(
    gateway: Gateway, pixverse: tuple[Any, str], images: dict[str, str], tmp_path: Path
) -> None:
    app, _ = pixverse
    refs = [images["wide"], images["tall"], images["square"]]
    body = {**PIX, "img_references": refs, "size": "1:1", "prompt": "@image1 juggles", "resolution": "360p"}
    with running(gateway) as (client, database):
        data = run(client, body)
        video = served_video(client, data, tmp_path)
        job = job_of(app, database, data["id"])
    assert job.kind == "fusion" and job.request["aspect_ratio"] == "1:1" and job.request["quality"] == "360p"
    assert job.request["prompt"] == "@image2 @image3 @image1 juggles"
    references = job.request["image_references"]
    assert [(r["type"], r["ref_name"]) for r in references] == [("subject", f"image{n}") for n in (1, 2, 3)]
    sizes = [(app.fake.images[r["img_id"]].width, app.fake.images[r["img_id"]].height) for r in references]
    assert sizes == [(400, 300), (300, 400), (256, 256)]
    assert video.width == video.height
    assert stats(app)["uploads"] == 3
    assert_one_job_per_task(app)


def test_extension_of_a_pixverse_task_reuses_its_video_id(
    gateway: Gateway, pixverse: tuple[Any, str], tmp_path: Path
) -> None:
    app, _ = pixverse
    with running(gateway) as (client, database):
        source = run(client, {**PIX, "size": "4:3"})
        assert source["status"] == "completed"
        data = run(client, {**PIX, "extend_from_task_id": source["id"], "duration": 2, "prompt": "it sinks"})
        video = served_video(client, data, tmp_path)
        source_job = job_of(app, database, source["id"])
        job = job_of(app, database, data["id"])
    assert job.kind == "extend" and job.id != source_job.id
    assert job.request["source_video_id"] == source_job.id
    assert job.request["duration"] == 2 and job.request["prompt"] == "it sinks"
    assert "aspect_ratio" not in job.request and job.ratio == "4:3"
    assert abs(video.width / video.height - 4 / 3) < 0.1
    assert_one_job_per_task(app, count=2)


def test_extension_of_a_local_task_is_refused_at_submit(gateway: Gateway, pixverse: tuple[Any, str]) -> None:
    app, _ = pixverse
    with running(gateway) as (client, database):
        source = staged_task(
            database,
            PIX,
            provider="local",
            status=Status.COMPLETED.value,
            phase=Phase.DONE.value,
            result={"video": "results/x/video.mp4"},
            progress=100,
            completed_at=time.time(),
        )
        response = client.post("/v1/videos/generations", json={**PIX, "extend_from_task_id": source})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "extend_from_task_id" and error["type"] == "invalid_request_error"
    assert "local" in error["message"] and "pixverse" in error["message"]
    assert stats(app)["requests"] == 0


def test_identical_reference_urls_are_uploaded_once(
    gateway: Gateway, pixverse: tuple[Any, str], images: dict[str, str], tmp_path: Path
) -> None:
    app, _ = pixverse
    body = {**PIX, "img_references": [images["wide"], images["wide"]], "prompt": "@image1 @image2 twins"}
    with running(gateway) as (client, database):
        data = run(client, body)
        served_video(client, data, tmp_path)
        job = job_of(app, database, data["id"])
    ids = [r["img_id"] for r in job.request["image_references"]]
    assert ids[0] == ids[1] and stats(app)["uploads"] == 1


# --- slots ------------------------------------------------------------------------------------------------


def test_in_flight_cap_holds_at_the_upstream(gateway: Gateway, pixverse: tuple[Any, str]) -> None:
    app, _ = pixverse
    with running(gateway, pixverse_max_in_flight=3) as (client, _database):
        ids = [submit(client, {**PIX, "seed": n}) for n in range(6)]
        finals = [wait_for(client, task_id, timeout=30) for task_id in ids]
    assert [d["status"] for d in finals] == ["completed"] * 6
    assert {d["provider"] for d in finals} == {"pixverse"}
    snap = stats(app)
    assert snap["max_in_flight"] == 3  # the cap was reached, never passed
    assert snap["jobs_created"] == 6 and snap["submit_errors"] == {}
