"""`apimart` relay: gateway A relays to an apimart-compatible upstream over real loopback HTTP.

The upstream is either a second vidgate (B, local renderer), which is what an apimart-compatible
gateway is, or a small scripted stub for the faults a real vidgate does not produce on demand.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.conftest import ImageServer, png_bytes
from tests.e2e.conftest import probe
from vidgate import catalog, db, ids, keys, migrations, tasks
from vidgate.api import create_app
from vidgate.config import Settings
from vidgate.db import Database
from vidgate.errors import TaskFailure
from vidgate.providers import TaskContext
from vidgate.providers.apimart import ApimartProvider
from vidgate.render.sizes import output_size
from vidgate.status import Phase, Status
from vidgate.testing.fake_serve import serving

from .conftest import wait_for

Gateway = Callable[..., Any]


# --- upstream B: a real vidgate ------------------------------------------------------------------


@dataclass
class Upstream:
    base: str
    key: str
    database: Database

    def tasks(self) -> list[Any]:
        with self.database.read() as conn:
            return list(conn.execute(sa.select(db.tasks)).all())


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Upstream]:
    settings = Settings(
        data_dir=tmp_path / "upstream",
        allow_private_urls=True,
        local_preset="ultrafast",
        local_concurrency=4,
        poll_interval_seconds=0.05,
    )
    settings.data_dir.mkdir(parents=True)
    database = Database(settings.effective_database_url)
    migrations.upgrade(database)
    secret = keys.create(database, "gateway-a")[1]
    try:
        with serving(create_app(settings)) as base:
            yield Upstream(base, secret, database)
    finally:
        database.dispose()


def relay_to(base: str, key: str, **extra: Any) -> dict[str, Any]:
    return {
        "apimart_api_key": key,
        "apimart_base_url": base,
        "upstream_poll_seconds": 0.05,
        "upstream_backoff_seconds": 0.05,
        **extra,
    }


def submit(client: TestClient, body: dict[str, Any]) -> str:
    response = client.post("/v1/videos/generations", json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["data"][0]["task_id"])


def row_of(database: Database, task_id: str) -> Any:
    row = tasks.get(database, task_id)
    assert row is not None
    return row


def test_chain_relays_every_model_to_another_vidgate(
    make_gateway: Gateway, upstream: Upstream, tmp_path: Path
) -> None:
    images = ImageServer()
    red = images.add("/red.png", png_bytes((220, 30, 30), (400, 300)))
    tall = images.add("/tall.png", png_bytes((30, 200, 60), (300, 400)))
    # (body, width, height, seconds)
    cases: list[tuple[dict[str, Any], int, int, int]] = [
        (
            {"model": "viduq3", "prompt": "a toy", "image_urls": [red], "duration": 3, "resolution": "540p"},
            *output_size("540p", "16:9"),
            3,
        ),
        (
            {
                "model": "viduq3-mix",
                "prompt": "two",
                "image_urls": [red, tall],
                "duration": 1,
                "aspect_ratio": "1:1",
            },
            *output_size("720p", "1:1"),
            1,
        ),
        (
            {"model": "pixverse-v6", "prompt": "a kite", "duration": 1, "resolution": "360p", "size": "4:3"},
            *output_size("360p", "4:3"),
            1,
        ),
        (
            {
                "model": "pixverse-v6",
                "prompt": "zoom",
                "image_urls": [tall],
                "duration": 1,
                "resolution": "360p",
            },
            *output_size("360p", "3:4"),
            1,
        ),
    ]
    try:
        with make_gateway(**relay_to(upstream.base, upstream.key)) as (client, database):
            submitted = [(submit(client, body), w, h, s) for body, w, h, s in cases]
            source = submitted[2][0]
            assert wait_for(client, source)["status"] == "completed"
            extension = {
                "model": "pixverse-v6",
                "prompt": "the kite flies on",
                "extend_from_task_id": source,
                "duration": 1,
                "resolution": "540p",
            }
            submitted.append((submit(client, extension), *output_size("540p", "4:3"), 1))

            finished = {task_id: wait_for(client, task_id) for task_id, *_ in submitted}
            upstream_rows = upstream.tasks()
            upstream_ids = {r.id for r in upstream_rows}
            # Exactly one upstream task per relayed task, found by our task id as Idempotency-Key.
            assert len(upstream_rows) == len(submitted)
            by_key = {r.idempotency_key: r for r in upstream_rows}
            assert set(by_key) == set(finished)
            # The extension reached B as an extension of B's own source task.
            b_source = by_key[source].id
            extended = tasks.decode_json(by_key[submitted[-1][0]].request)
            assert extended["extend_from_task_id"] == b_source

            for task_id, width, height, seconds in submitted:
                task = finished[task_id]
                assert task["status"] == "completed", task
                assert task["provider"] == "apimart" and task["progress"] == 100
                assert row_of(database, task_id).upstream_id == by_key[task_id].id
                # B's task ids never show at A, in the task or in the list.
                raw = client.get(f"/v1/tasks/{task_id}").text
                assert not any(upstream_id in raw for upstream_id in upstream_ids)
                url = task["result"]["videos"][0]["url"][0]
                assert url.startswith("http://testserver/files/results/" + task_id)
                assert upstream.base not in raw
                video = client.get(url)
                assert video.status_code == 200
                path = tmp_path / f"{task_id}.mp4"
                path.write_bytes(video.content)
                facts = probe(path)
                assert (facts.width, facts.height) == (width, height), task
                assert abs(facts.duration - seconds) < 0.1, task
                thumb = client.get(task["result"]["thumbnail_url"])
                assert thumb.status_code == 200 and thumb.content[:3] == b"\xff\xd8\xff"
            listing = client.get("/v1/tasks", params={"limit": 100}).text
            assert not any(upstream_id in listing for upstream_id in upstream_ids)
    finally:
        images.close()


def test_a_task_crashed_in_submitting_is_replayed_not_resubmitted(
    make_gateway: Gateway, upstream: Upstream
) -> None:
    body = {"model": "pixverse-v6", "prompt": "once", "duration": 1, "resolution": "360p"}
    with make_gateway(**relay_to(upstream.base, upstream.key)) as (client, database):
        secret = client.headers["authorization"].split()[1]
        key = keys.authenticate(database, secret)
        assert key is not None
        task_id = ids.new_task_id()
        request = catalog.parse(body)
        relayed = request.model_dump(mode="json", exclude_none=True)
        # The worker sent the submit, B accepted it, and the worker died before recording the id.
        first = _post_upstream(upstream, relayed, task_id)
        _insert_crashed(database, key.id, task_id, request, body)

        task = wait_for(client, task_id)
        assert task["status"] == "completed", task
        assert task["provider"] == "apimart"
        rows = upstream.tasks()
        assert [r.id for r in rows] == [first]
        assert row_of(database, task_id).upstream_id == first


def _post_upstream(upstream: Upstream, body: dict[str, Any], idempotency_key: str) -> str:
    response = httpx.post(
        f"{upstream.base}/v1/videos/generations",
        json=body,
        headers={"Authorization": f"Bearer {upstream.key}", "Idempotency-Key": idempotency_key},
    )
    assert response.status_code == 200, response.text
    return str(response.json()["data"][0]["task_id"])


def _insert_crashed(
    database: Database, key_id: str, task_id: str, request: Any, body: dict[str, Any]
) -> None:
    """A task as `submit` leaves it: processing, phase submitting, its key recorded, lease dead."""
    now = time.time()
    with database.write() as conn:
        conn.execute(
            db.tasks.insert().values(
                id=task_id,
                key_id=key_id,
                model=request.model,
                mode=request.mode,
                request=request.model_dump(mode="json", exclude_none=True),
                provider="apimart",
                status=Status.PROCESSING.value,
                phase=Phase.SUBMITTING.value,
                progress=0,
                estimated_time=30,
                cost=0,
                created_at=now,
                started_at=now,
                updated_at=now,
                next_run_at=now,
                deadline_at=now + 600,
                lease_owner="elsewhere:1:dead",
                lease_until=now - 1,
                lease_token=1,
                attempts=1,
                upstream_state={"idempotency_key": task_id},
                request_hash=tasks.request_hash(body),
            )
        )


# --- a scripted stub upstream --------------------------------------------------------------------


def _tiny_mp4() -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(12):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 20, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return buffer.getvalue()


VIDEO = _tiny_mp4()


@dataclass
class Stub:
    """apimart as its docs describe it. `answers` script the submit responses in order (status,
    body, headers; `None` body: accept), the last one repeating; `outcome` is what polls show."""

    answers: list[tuple[int, dict[str, Any] | None, dict[str, str]]] = field(
        default_factory=lambda: [(200, None, {})]
    )
    shape: str = "legacy"
    outcome: str = "completed"
    error: dict[str, Any] = field(default_factory=dict)
    cancellable: bool = True
    #: Submit number (1-based) -> seconds to wait after accepting, before answering.
    slow: dict[int, float] = field(default_factory=dict)
    received: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)
    created: dict[str, str] = field(default_factory=dict)
    polls: int = 0
    cancelled: list[str] = field(default_factory=list)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/videos/generations", self.submit, methods=["POST"]),
                Route("/v1/tasks/{task_id}", self.query, methods=["GET"]),
                Route("/v1/tasks/{task_id}/cancel", self.cancel, methods=["POST"]),
                Route("/media/{name}", self.media, methods=["GET"]),
            ]
        )

    async def submit(self, request: Request) -> Response:
        self.received.append((dict(request.headers), await request.json()))
        status, body, headers = self.answers[min(len(self.received), len(self.answers)) - 1]
        if body is not None:
            return JSONResponse(body, status_code=status, headers=headers)
        key = request.headers["idempotency-key"]
        task_id = self.created.setdefault(key, f"task_STUB{len(self.created):022d}")
        await asyncio.sleep(self.slow.get(len(self.received), 0))
        if self.shape == "legacy":
            return JSONResponse({"code": 200, "data": [{"status": "submitted", "task_id": task_id}]})
        data = {"object": "generation.task", "id": task_id, "status": "pending", "progress": 0}
        return JSONResponse({"code": 200, "data": data}, headers={"X-APIMart-Response-Version": "2026-07-27"})

    async def query(self, request: Request) -> Response:
        self.polls += 1
        task_id = request.path_params["task_id"]
        if task_id not in self.created.values() or self.outcome == "lost":
            error = {"code": 404, "message": "Task not found", "type": "not_found_error"}
            return JSONResponse({"error": error}, status_code=404)
        base = str(request.base_url).rstrip("/")
        data: dict[str, Any] = {"id": task_id, "status": self.outcome, "progress": 40, "created": 1}
        if self.outcome in ("completed", "completed-string", "expired"):
            url = f"{base}/media/{'gone' if self.outcome == 'expired' else 'video'}.mp4"
            data["status"] = "completed"
            data["result"] = {
                "videos": [{"url": url if self.outcome == "completed-string" else [url], "expires_at": 2}],
                "thumbnail_url": f"{base}/media/thumb.jpg",
            }
        elif self.outcome == "failed":
            data["error"] = self.error
        return JSONResponse({"code": 200, "data": data})

    async def cancel(self, request: Request) -> Response:
        if not self.cancellable:
            return JSONResponse({"error": {"code": 404, "message": "no", "type": "not_found_error"}}, 404)
        self.cancelled.append(request.path_params["task_id"])
        self.outcome = "cancelled"
        return JSONResponse(
            {"code": 200, "data": {"id": request.path_params["task_id"], "status": "cancelled"}}
        )

    async def media(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name == "video.mp4":
            return Response(VIDEO, media_type="video/mp4")
        if name == "thumb.jpg":
            return Response(png_bytes((1, 2, 3), (64, 48), fmt="JPEG"), media_type="image/jpeg")
        return Response(status_code=404)


@pytest.fixture
def stub() -> Iterator[tuple[Stub, str]]:
    fake = Stub()
    with serving(fake.app()) as base:
        yield fake, base


TEXT = {"model": "pixverse-v6", "prompt": "a lake", "duration": 1, "resolution": "360p"}


def _error(status: int, message: str, kind: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": status, "message": message, "type": kind, **extra}}


@pytest.mark.parametrize(
    ("status", "body", "code", "kind", "fragment", "param"),
    [
        (
            400,
            _error(400, "duration must be 5 or 8", "invalid_request_error", param="duration"),
            "upstream_rejected",
            "invalid_request_error",
            "duration must be 5 or 8",
            "duration",
        ),
        (
            402,
            _error(402, "Insufficient balance", "payment_required"),
            "upstream_quota_exceeded",
            "bad_gateway",
            "out of credits",
            None,
        ),
        (
            401,
            _error(401, "bad key", "authentication_error"),
            "upstream_auth_failed",
            "bad_gateway",
            "credentials",
            None,
        ),
        (
            403,
            _error(403, "forbidden", "permission_error"),
            "upstream_auth_failed",
            "bad_gateway",
            "credentials",
            None,
        ),
    ],
)
def test_submit_errors_map_to_task_errors(
    make_gateway: Gateway,
    stub: tuple[Stub, str],
    status: int,
    body: dict[str, Any],
    code: str,
    kind: str,
    fragment: str,
    param: str | None,
) -> None:
    fake, base = stub
    fake.answers = [(status, body, {})]
    with make_gateway(**relay_to(base, "k")) as (client, _):
        task = wait_for(client, submit(client, TEXT))
    assert task["status"] == "failed" and task["cost"] == 0
    assert task["error"]["code"] == code and task["error"]["type"] == kind
    assert fragment in task["error"]["message"] and "apimart" in task["error"]["message"]
    assert task["error"].get("param") == param
    assert len(fake.received) == 1 and not fake.created


def test_busy_upstream_is_retried_with_the_same_key(make_gateway: Gateway, stub: tuple[Stub, str]) -> None:
    fake, base = stub
    busy = _error(429, "Rate limit exceeded", "rate_limit_error")
    fake.answers = [(429, busy, {"Retry-After": "0"}), (200, None, {})]
    with make_gateway(**relay_to(base, "secret-k")) as (client, _):
        task_id = submit(client, TEXT)
        task = wait_for(client, task_id)
    assert task["status"] == "completed" and task["provider"] == "apimart", task
    assert len(fake.received) == 2 and len(fake.created) == 1
    for headers, body in fake.received:
        assert headers["idempotency-key"] == task_id
        assert headers["authorization"] == "Bearer secret-k"
        assert body["prompt"] == "a lake" and body["model"] == "pixverse-v6"


def test_unavailable_upstream_falls_back_to_the_next_provider(
    make_gateway: Gateway, stub: tuple[Stub, str]
) -> None:
    fake, base = stub
    fake.answers = [(500, _error(500, "Internal server error", "server_error"), {})]
    settings = relay_to(base, "k", routes={"pixverse-v6": ["apimart", "local"]})
    with make_gateway(**settings) as (client, _):
        task = wait_for(client, submit(client, TEXT))
    assert task["status"] == "completed" and task["provider"] == "local", task
    assert len(fake.received) == 1 and not fake.created


def test_an_unanswered_submit_is_replayed_and_never_moved_elsewhere(
    make_gateway: Gateway, stub: tuple[Stub, str]
) -> None:
    fake, base = stub
    # Accepted but answered too late; then a 500: either could hide an accepted task, so the
    # task stays with apimart (no fallback to local) and the same key replays the original.
    fake.slow = {1: 1.5}
    fake.answers = [(200, None, {}), (500, _error(500, "oops", "server_error"), {}), (200, None, {})]
    settings = relay_to(base, "k", upstream_timeout_seconds=0.5, routes={"pixverse-v6": ["apimart", "local"]})
    with make_gateway(**settings) as (client, _):
        task_id = submit(client, TEXT)
        task = wait_for(client, task_id)
    assert task["status"] == "completed" and task["provider"] == "apimart", task
    assert len(fake.received) == 3 and list(fake.created) == [task_id]


@pytest.mark.parametrize(
    ("error", "code", "fragment"),
    [
        (
            {"code": 500, "message": "The model crashed on frame 12", "type": "server_error"},
            "upstream_failed",
            "crashed on frame 12",
        ),
        (
            {"code": "content_policy_violation", "message": "refused", "type": "invalid_request_error"},
            "content_policy_violation",
            "content policy",
        ),
        (
            {
                "code": "image_too_small",
                "message": "image_urls[0] must be at least 128x128",
                "type": "invalid_request_error",
            },
            "invalid_image",
            "at least 128x128",
        ),
    ],
)
def test_failed_upstream_task_keeps_its_message(
    make_gateway: Gateway, stub: tuple[Stub, str], error: dict[str, Any], code: str, fragment: str
) -> None:
    fake, base = stub
    fake.outcome, fake.error = "failed", error
    with make_gateway(**relay_to(base, "k")) as (client, _):
        task = wait_for(client, submit(client, TEXT))
    assert task["status"] == "failed" and task["cost"] == 0
    assert task["error"]["code"] == code and fragment in task["error"]["message"], task


def test_expired_result_url_fails_clearly(make_gateway: Gateway, stub: tuple[Stub, str]) -> None:
    fake, base = stub
    fake.outcome = "expired"
    with make_gateway(**relay_to(base, "k")) as (client, _):
        task = wait_for(client, submit(client, TEXT))
    assert task["status"] == "failed" and task["error"]["code"] == "upstream_result_expired", task


@pytest.mark.parametrize(("shape", "outcome"), [("2026-07-27", "completed"), ("legacy", "completed-string")])
def test_both_answer_shapes_complete(
    make_gateway: Gateway, stub: tuple[Stub, str], shape: str, outcome: str
) -> None:
    fake, base = stub
    fake.shape, fake.outcome = shape, outcome
    with make_gateway(**relay_to(base, "k")) as (client, database):
        task_id = submit(client, TEXT)
        task = wait_for(client, task_id)
        assert task["status"] == "completed", task
        video = task["result"]["videos"][0]
        assert video["url"][0].startswith("http://testserver/files/") and base not in str(task)
        assert (video["width"], video["height"]) == (64, 48)
        assert client.get(video["url"][0]).content == VIDEO
        assert client.get(task["result"]["thumbnail_url"]).content[:3] == b"\xff\xd8\xff"
        assert row_of(database, task_id).upstream_id == fake.created[task_id]


def test_a_task_lost_upstream_fails_after_a_few_polls(make_gateway: Gateway, stub: tuple[Stub, str]) -> None:
    fake, base = stub
    fake.outcome = "lost"
    with make_gateway(**relay_to(base, "k")) as (client, _):
        task = wait_for(client, submit(client, TEXT))
    assert task["status"] == "failed" and task["error"]["code"] == "upstream_failed", task
    assert "HTTP 404" in task["error"]["message"] and fake.polls == 3


def test_cancel_is_forwarded_to_the_upstream(make_gateway: Gateway, stub: tuple[Stub, str]) -> None:
    fake, base = stub
    fake.outcome = "processing"
    with make_gateway(**relay_to(base, "k")) as (client, database):
        task_id = submit(client, TEXT)
        wait_for(client, task_id, until=("processing",))
        deadline = time.time() + 10
        while row_of(database, task_id).upstream_id is None and time.time() < deadline:
            time.sleep(0.02)
        assert client.post(f"/v1/tasks/{task_id}/cancel").status_code == 200
        task = wait_for(client, task_id)
    assert task["status"] == "cancelled" and task["cost"] == 0, task
    assert fake.cancelled == [fake.created[task_id]]


# --- the provider on its own ---------------------------------------------------------------------


def _context(tmp_path: Path, request: Any, result: dict[str, Any]) -> TaskContext:
    async def source_video(task_id: str) -> tuple[Path, dict[str, Any]]:
        return tmp_path / "source.mp4", result

    async def nothing(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("must not be called")

    return TaskContext(
        task_id="task_X",
        key_id="key_X",
        request=request,
        attempt=1,
        phase=Phase.FETCHING_INPUTS,
        upstream_id=None,
        upstream_state=None,
        started_at=None,
        estimated_time=30,
        deadline_at=None,
        scratch=tmp_path,
        load_images=nothing,
        source_video=source_video,
        store_file=lambda key, path: 0,
        set_phase=lambda phase: None,
        report_progress=lambda fraction: None,
        should_stop=lambda: False,
        checkpoint=nothing,
    )


@pytest.mark.parametrize(
    ("result", "served_by"),
    [
        ({"video": "v.mp4"}, "local"),
        ({"video": "v.mp4", "upstream_id": "123", "relay": "pixverse"}, "pixverse"),
    ],
)
def test_extension_of_a_source_made_elsewhere_fails_before_any_call(
    tmp_path: Path, result: dict[str, Any], served_by: str
) -> None:
    request = catalog.parse({"model": "pixverse-v6", "prompt": "on", "extend_from_task_id": "task_S"})
    provider = ApimartProvider(
        Settings(data_dir=tmp_path, apimart_api_key="k", apimart_base_url="http://127.0.0.1:9")
    )
    with pytest.raises(TaskFailure) as failure:
        asyncio.run(provider.submit(_context(tmp_path, request, result)))
    assert failure.value.code == "extend_source_provider"
    assert failure.value.params["provider"] == served_by


def test_provider_is_enabled_by_its_key_and_routes_after_a_models_own_upstream() -> None:
    assert not ApimartProvider.enabled(Settings())
    settings = Settings(apimart_api_key="k")
    assert ApimartProvider.enabled(settings)
    assert ApimartProvider(settings).in_flight_cap() == settings.apimart_max_in_flight
    assert (
        ApimartProvider.preference == 20 and {"viduq3", "viduq3-mix", "pixverse-v6"} <= ApimartProvider.models
    )
