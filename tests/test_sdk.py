"""The Python SDK against real vidgate servers on loopback, and through a fault-injecting proxy."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import vidgate
from tests.conftest import png_bytes
from tests.e2e.conftest import Server, make_server
from tests.test_webhooks import dispatch_until
from tests.webhook_receiver import Receiver
from vidgate import (
    AsyncClient,
    AuthenticationError,
    BadRequestError,
    Client,
    ConflictError,
    InternalServerError,
    NotFoundError,
    RateLimitError,
    Task,
    TaskFailedError,
    VidgateError,
    WaitTimeoutError,
)
from vidgate.api import create_app
from vidgate.config import Settings
from vidgate.db import Database
from vidgate.sdk import APIConnectionError, DeliveryAttempt, WebhookDelivery
from vidgate.testing.fake_serve import free_port, serving

SHORT: dict[str, Any] = {"duration": 1, "resolution": "360p"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = make_server(tmp_path_factory.mktemp("sdk"), VIDGATE_ALLOW_PRIVATE_URLS="true")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def sdk(server: Server) -> Iterator[Client]:
    with Client(api_key=server.key, base_url=server.base) as client:
        yield client


@pytest.fixture
def idle(settings: Settings, database: Any, api_key: str) -> Iterator[Client]:
    """A vidgate on loopback without a worker: tasks stay pending."""
    with serving(create_app(settings, run_worker=False)) as base, Client(api_key=api_key, base_url=base) as c:
        yield c


def test_importing_the_sdk_never_imports_server_code() -> None:
    code = (
        "import vidgate; from vidgate import Client, AsyncClient; import sys; "
        "bad = [m for m in sys.modules if m.startswith(('vidgate.api', 'vidgate.worker', 'vidgate.tasks', "
        "'vidgate.db', 'fastapi', 'sqlalchemy'))]; assert not bad, bad"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_create_wait_download(sdk: Client, tmp_path: Path) -> None:
    task = sdk.videos.create(model="pixverse-v6", prompt="a red kite", **SHORT)
    assert isinstance(task, Task) and task.id.startswith("task_")
    assert task.status in ("pending", "processing", "completed")
    seen: list[int] = []
    done = sdk.tasks.wait(task.id, timeout=120, on_progress=lambda t: seen.append(t.progress))
    assert done.status == "completed" and done.progress == 100 and seen[-1] == 100
    assert done.result is not None and done.result.videos[0].width == 640
    assert done.result.videos[0].expires_at and done.result.thumbnail_url
    assert sdk.tasks.retrieve(task.id).status == "completed"
    path = sdk.videos.download(done, tmp_path / "kite.mp4")
    assert path.read_bytes()[4:8] == b"ftyp"
    assert not (tmp_path / "kite.mp4.part").exists()


def test_create_and_wait_uses_prefer_wait(sdk: Client) -> None:
    started = time.monotonic()
    task = sdk.videos.create_and_wait(model="pixverse-v6", prompt="held", timeout=60, **SHORT)
    assert task.status == "completed" and task.video_url
    assert time.monotonic() - started < 60


def test_upload_then_generate_from_it(sdk: Client, tmp_path: Path) -> None:
    image = tmp_path / "ref.png"
    image.write_bytes(png_bytes((200, 30, 30), (320, 240)))
    upload = sdk.uploads.create(image)
    assert upload.content_type == "image/png" and upload.filename == "ref.png" and upload.bytes
    from_bytes = sdk.uploads.create(png_bytes((1, 2, 3)), filename="raw.png")
    assert from_bytes.url != upload.url
    task = sdk.videos.create_and_wait(
        model="viduq3-mix", prompt="from an image", image_urls=[upload.url], duration=1, timeout=120
    )
    assert task.status == "completed", task


def test_list_paginates_across_pages(sdk: Client) -> None:
    created = {sdk.videos.create(model="pixverse-v6", prompt=f"p{i}", **SHORT).id for i in range(3)}
    page = sdk.tasks.list(limit=2)
    assert len(page.data) == 2 and page.has_more and page.next_cursor
    second = page.next_page()
    assert second is not None and second.data[0].id != page.data[0].id
    everything = [t.id for t in page]
    assert created <= set(everything) and len(everything) == len(set(everything))
    assert all(t.model == "pixverse-v6" for t in sdk.tasks.list(model="pixverse-v6", limit=100).data)


def test_failed_task_is_returned_or_raised(sdk: Client, server: Server) -> None:
    missing = f"{server.base}/no-such-image.png"
    task = sdk.videos.create(model="viduq3-mix", prompt="x", image_urls=[missing], duration=1)
    failed = sdk.tasks.wait(task, timeout=120)
    assert failed.status == "failed" and failed.error is not None and failed.error.message
    with pytest.raises(TaskFailedError) as info:
        sdk.tasks.wait(task.id, timeout=120, raise_on_failure=True)
    assert info.value.task.id == task.id


def test_errors_are_typed(sdk: Client, server: Server) -> None:
    with pytest.raises(BadRequestError) as bad:
        sdk.videos.create(model="pixverse-v6", prompt="x", duration=99)
    assert bad.value.status == 400 and bad.value.type == "invalid_request_error"
    assert bad.value.param == "duration" and "duration" in str(bad.value)
    with pytest.raises(NotFoundError) as missing:
        sdk.tasks.retrieve("task_01ARZ3NDEKTSV4RRFFQ69G5FAV")
    assert missing.value.status == 404 and missing.value.type == "not_found_error"
    assert missing.value.headers["content-type"].startswith("application/json")
    with pytest.raises(AuthenticationError), Client(api_key="sk-wrong", base_url=server.base) as wrong:
        wrong.balance.retrieve()
    sdk.videos.create(model="pixverse-v6", prompt="a", idempotency_key="k-conflict", **SHORT)
    with pytest.raises(ConflictError) as conflict:
        sdk.videos.create(model="pixverse-v6", prompt="b", idempotency_key="k-conflict", **SHORT)
    assert isinstance(conflict.value, BadRequestError) and conflict.value.status == 409


def test_balance(sdk: Client) -> None:
    balance = sdk.balance.retrieve()
    assert balance.success and balance.unlimited_quota and balance.remain_balance == -1


def test_cancel_and_wait_timeout(idle: Client) -> None:
    task = idle.videos.create(model="pixverse-v6", prompt="never runs", **SHORT)
    with pytest.raises(WaitTimeoutError) as info:
        idle.tasks.wait(task, timeout=0.3, poll_interval=0.1)
    assert info.value.task.status == "pending"
    cancelled = idle.tasks.cancel(task.id)
    assert cancelled.status == "cancelled"
    assert idle.tasks.wait(task.id, timeout=1).status == "cancelled"
    with pytest.raises(TaskFailedError):
        idle.tasks.wait(task.id, timeout=1, raise_on_failure=True)
    held = idle.videos.create(model="pixverse-v6", prompt="held", wait=1, **SHORT)
    assert held.status == "pending" and held.object == "generation.task"


def test_delivery_log_and_redeliver(idle: Client, settings: Settings, database: Database) -> None:
    receiver = Receiver()
    try:
        task = idle.videos.create(model="pixverse-v6", prompt="hooked", callback_url=receiver.url(), **SHORT)
        assert idle.tasks.deliveries(task.id) == []  # `pending` is no event
        idle.tasks.cancel(task.id)
        [queued] = idle.tasks.deliveries(task.id)
        assert isinstance(queued, WebhookDelivery) and queued.object == "webhook.delivery"
        assert (queued.task_id, queued.event, queued.url) == (task.id, "task.cancelled", receiver.url())
        assert (queued.status, queued.attempt_count, queued.attempts) == ("pending", 0, [])
        dispatch_until(settings, database, lambda: len(receiver.delivered()) == 1)
        [sent] = idle.tasks.deliveries(task.id)
        assert sent.status == "delivered" and sent.delivered_at and sent.next_attempt_at is None
        [attempt] = sent.attempts
        assert isinstance(attempt, DeliveryAttempt)
        assert (attempt.attempt, attempt.status_code, attempt.error, attempt.response) == (1, 200, None, "ok")

        again = idle.tasks.redeliver(task.id, sent.id)
        assert (again.id, again.status, again.attempt_count) == (sent.id, "pending", 1)
        assert again.next_attempt_at is not None and again.delivered_at is None
        with pytest.raises(NotFoundError) as missing:
            idle.tasks.redeliver(task.id, "msg_nope")
        assert missing.value.param == "delivery_id"
        with pytest.raises(NotFoundError) as unknown:
            idle.tasks.deliveries("task_01ARZ3NDEKTSV4RRFFQ69G5FAV")
        assert unknown.value.param == "task_id"

        async def via_async() -> tuple[list[WebhookDelivery], WebhookDelivery]:
            async with AsyncClient(api_key=idle._settings.api_key, base_url=idle.base_url) as client:
                return await client.tasks.deliveries(task.id), await client.tasks.redeliver(task.id, sent.id)

        listed, requeued = asyncio.run(via_async())
        assert [(d.id, d.status) for d in listed] == [(sent.id, "pending")]
        assert requeued.id == sent.id and requeued.status == "pending"
        dispatch_until(settings, database, lambda: len(receiver.delivered()) == 2)
        assert [a.attempt for a in idle.tasks.deliveries(task.id)[0].attempts] == [1, 2]
    finally:
        receiver.close()


def test_environment_fallbacks(monkeypatch: pytest.MonkeyPatch, idle: Client) -> None:
    monkeypatch.setenv("VIDGATE_API_KEY", idle._settings.api_key)
    monkeypatch.setenv("VIDGATE_BASE_URL", idle.base_url + "/")
    with Client() as client:
        assert client.base_url == idle.base_url and client.max_retries == 2
        assert client.balance.retrieve().success
    monkeypatch.delenv("VIDGATE_API_KEY")
    with pytest.raises(VidgateError, match="VIDGATE_API_KEY"):
        Client()


def test_connection_errors_are_retried_then_raised() -> None:
    with Client(api_key="k", base_url=f"http://127.0.0.1:{free_port()}", max_retries=2) as client:
        delays: list[float] = []
        client._sleep = delays.append
        with pytest.raises(APIConnectionError):
            client.tasks.retrieve("task_x")
    assert len(delays) == 2 and 0.375 <= delays[0] <= 0.5 and 0.75 <= delays[1] <= 1.0


def test_async_client(server: Server, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with AsyncClient(api_key=server.key, base_url=server.base) as client:
            seen: list[str] = []

            async def note(task: Task) -> None:
                seen.append(task.status)

            task = await client.videos.create(model="pixverse-v6", prompt="async", **SHORT)
            done = await client.tasks.wait(task.id, timeout=120, on_progress=note)
            assert done.status == "completed" and seen[-1] == "completed"
            path = await client.videos.download(done, tmp_path / "async.mp4")
            assert path.read_bytes()[4:8] == b"ftyp"
            page = await client.tasks.list(limit=1)
            ids = [t.id async for t in page]
            assert task.id in ids and len(ids) > 1
            with pytest.raises(NotFoundError):
                await client.tasks.retrieve("task_missing")

    asyncio.run(scenario())


# --- retries, through a proxy that injects 429/503 in front of a real server --------------------


@dataclass
class FaultProxy:
    """Forwards to `upstream`; `script[(method, path)]` lists faults to answer first, in order:
    "429" (Retry-After: 1), "503", or "forward-503" (forward, then drop the answer and say 503)."""

    upstream: str
    script: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    seen: list[tuple[str, str, str | None, float]] = field(default_factory=list)

    def app(self) -> Starlette:
        async def handle(request: Request) -> Response:
            key = (request.method, request.url.path)
            self.seen.append((*key, request.headers.get("idempotency-key"), time.monotonic()))
            faults = self.script.get(key) or []
            fault = faults.pop(0) if faults else None
            if fault == "429":
                body = {"error": {"code": 429, "message": "slow down", "type": "rate_limit_error"}}
                return JSONResponse(body, status_code=429, headers={"Retry-After": "1"})
            if fault == "503":
                return JSONResponse({"error": {"code": 503, "message": "busy", "type": "server_error"}}, 503)
            upstream = await self._forward(request)
            if fault == "forward-503":
                return JSONResponse({"error": {"code": 503, "message": "lost", "type": "server_error"}}, 503)
            return upstream

        return Starlette(routes=[Route("/{path:path}", handle, methods=["GET", "POST"])])

    async def _forward(self, request: Request) -> Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with httpx.AsyncClient(base_url=self.upstream, timeout=90) as http:
            answer = await http.request(
                request.method,
                request.url.path,
                params=request.query_params,
                content=await request.body(),
                headers=headers,
            )
        keep = {
            k: v
            for k, v in answer.headers.items()
            if k.lower() not in ("content-length", "transfer-encoding")
        }
        return Response(answer.content, status_code=answer.status_code, headers=keep)

    def attempts(self, method: str, path: str) -> list[tuple[str, str, str | None, float]]:
        return [s for s in self.seen if s[0] == method and s[1] == path]


@pytest.fixture
def proxy(server: Server) -> Iterator[tuple[FaultProxy, str]]:
    fault = FaultProxy(server.base)
    with serving(fault.app()) as base:
        yield fault, base


SUBMIT = ("POST", "/v1/videos/generations")


def test_submit_retries_429_then_503_honouring_retry_after(
    proxy: tuple[FaultProxy, str], server: Server
) -> None:
    fault, base = proxy
    fault.script[SUBMIT] = ["429", "503"]
    with Client(api_key=server.key, base_url=base) as client:
        started = time.monotonic()
        task = client.videos.create(model="pixverse-v6", prompt="retried", **SHORT)
        elapsed = time.monotonic() - started
    attempts = fault.attempts(*SUBMIT)
    assert len(attempts) == 3
    assert attempts[1][3] - attempts[0][3] >= 1.0  # Retry-After: 1 was honoured
    assert elapsed >= 1.3  # plus a backoff after the 503
    keys = {a[2] for a in attempts}
    assert len(keys) == 1 and next(iter(keys))
    assert task.status in ("pending", "processing", "completed")


def test_submit_lost_answer_is_retried_without_a_duplicate_task(
    proxy: tuple[FaultProxy, str], server: Server
) -> None:
    fault, base = proxy
    fault.script[SUBMIT] = ["forward-503"]  # the server creates the task, the answer is lost
    with Client(api_key=server.key, base_url=server.base) as direct:
        before = {t.id for t in direct.tasks.list(limit=100)}
        with Client(api_key=server.key, base_url=base) as client:
            task = client.videos.create(model="pixverse-v6", prompt="exactly once", **SHORT)
        after = {t.id for t in direct.tasks.list(limit=100)}
    attempts = fault.attempts(*SUBMIT)
    assert len(attempts) == 2 and attempts[0][2] == attempts[1][2]  # one Idempotency-Key
    assert after - before == {task.id}  # the retry replayed the task instead of creating another


def test_reads_retry_503_and_rate_limit_surfaces_when_retries_run_out(
    proxy: tuple[FaultProxy, str], server: Server
) -> None:
    fault, base = proxy
    with Client(api_key=server.key, base_url=base) as client:
        fault.script[("GET", "/v1/balance")] = ["503", "503"]
        assert client.balance.retrieve().success
        assert len(fault.attempts("GET", "/v1/balance")) == 3
    with Client(api_key=server.key, base_url=base, max_retries=0) as client:
        fault.script[("GET", "/v1/balance")] = ["429"]
        with pytest.raises(RateLimitError) as info:
            client.balance.retrieve()
        assert info.value.status == 429 and info.value.retry_after == 1.0
    with Client(api_key=server.key, base_url=base) as client:
        # An upload carries no idempotency key: a 503 is not retried (it may have been stored).
        fault.script[("POST", "/v1/uploads/images")] = ["503"]
        with pytest.raises(InternalServerError):
            client.uploads.create(png_bytes((9, 9, 9)))
        assert len(fault.attempts("POST", "/v1/uploads/images")) == 1


def test_package_exports() -> None:
    for name in ("Client", "AsyncClient", "VidgateError", "RateLimitError", "Task", "TaskPage"):
        assert getattr(vidgate, name) is getattr(__import__("vidgate.sdk", fromlist=[name]), name)
    with pytest.raises(AttributeError):
        _ = vidgate.NoSuchThing  # type: ignore[attr-defined]
