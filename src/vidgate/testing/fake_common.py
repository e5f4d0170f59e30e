"""What the Vidu and PixVerse fakes share: base config knobs, counters, the `/_fake/` control routes,
the `/_files/` route, transport fault handling and the background ticker.

Job state is advanced by an event heap that each fake processes lazily (`tick()`), both on every
request and from one background ticker, so thousands of in-flight jobs cost a heap entry each, not a
coroutine each. The ticker exists only so callbacks/webhooks fire when nobody is polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from vidgate.testing.fake_clock import Clock
from vidgate.testing.fake_delivery import Deliverer
from vidgate.testing.fake_faults import (
    HttpFault,
    MalformedFault,
    Reply,
    SlowFault,
    malformed_body,
    pick_fault,
)
from vidgate.testing.fake_files import FileBody, SignedFiles, file_response
from vidgate.testing.fake_serve import serve_in_thread, serving, stop_server

__all__ = [
    "BaseFakeConfig",
    "BaseStats",
    "FakeApp",
    "FakeUpstream",
    "Reply",
    "serve_in_thread",
    "serving",
    "stop_server",
]


class BaseFakeConfig(BaseModel):
    """Knobs every fake has. All durations are virtual seconds unless the name says real."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    api_key: str = "test-key"
    time_factor: float = Field(default=1.0, gt=0, description="virtual seconds per real second")
    seed: int | None = Field(default=None, description="seed for ids and probabilistic faults")
    public_base_url: str | None = Field(
        default=None, description="host for result URLs; default: request host"
    )
    url_ttl_s: float = Field(default=86400.0, gt=0, description="lifetime of result URLs")
    expired_url_status: Literal[403, 404, 410] = 403
    http_errors: list[HttpFault] = Field(default_factory=list)
    slow: list[SlowFault] = Field(default_factory=list)
    malformed: list[MalformedFault] = Field(default_factory=list)
    tick_real_s: float = Field(default=0.01, gt=0, description="real seconds between background ticks")
    notify_timeout_real_s: float = Field(default=5.0, gt=0, description="callback/webhook HTTP timeout")


@dataclasses.dataclass
class BaseStats:
    """Counters shared by both fakes; `GET /_fake/stats` returns `snapshot()`."""

    requests: int = 0
    unauthorized: int = 0
    jobs_created: int = 0
    jobs_created_by_model: dict[str, int] = dataclasses.field(default_factory=dict)
    jobs_created_by_endpoint: dict[str, int] = dataclasses.field(default_factory=dict)
    submit_errors: dict[str, int] = dataclasses.field(default_factory=dict)
    polls: int = 0
    injected: dict[str, int] = dataclasses.field(default_factory=dict)
    max_in_flight: int = 0
    files_served: int = 0
    files_rejected: dict[str, int] = dataclasses.field(default_factory=dict)
    range_requests: int = 0

    def bump(self, name: str, key: str | int | None = None, n: int = 1) -> None:
        if key is None:
            setattr(self, name, getattr(self, name) + n)
        else:
            counter: dict[str, int] = getattr(self, name)
            counter[str(key)] = counter.get(str(key), 0) + n

    def snapshot(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


C = TypeVar("C", bound=BaseFakeConfig)
S = TypeVar("S", bound=BaseStats)
U = TypeVar("U", bound="FakeUpstream[Any, Any]")

Handler = Callable[[], Awaitable[Reply]]


class FakeUpstream(Generic[C, S]):
    """State, knobs and counters of one fake upstream; subclasses add the provider logic."""

    api_endpoints: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: C) -> None:
        self._initial = config.model_copy(deep=True)
        self.config: C = config.model_copy(deep=True)
        self.clock = Clock(config.time_factor)
        self.lock = threading.RLock()
        self.rng = random.Random(config.seed)
        self.files = SignedFiles(self.clock, os.urandom(16))
        self.deliverer = Deliverer(self.clock, lambda: self.config.notify_timeout_real_s)
        self.stats: S = self._new_stats()
        self._reset_jobs()

    # --- hooks for subclasses --------------------------------------------------------------------
    def _new_stats(self) -> S:
        raise NotImplementedError

    def _reset_jobs(self) -> None:
        raise NotImplementedError

    def _process_due(self, now: float) -> None:
        """Apply every state change due at or before `now` (called with the lock held)."""
        raise NotImplementedError

    def _extra_stats(self) -> dict[str, Any]:
        return {}

    def job_view(self, job_id: str) -> dict[str, Any] | None:
        raise NotImplementedError

    async def resolve_file(self, job_id: str, name: str) -> tuple[FileBody, float] | None:
        """The bytes behind `/_files/{job_id}/{name}` and their modification time."""
        raise NotImplementedError

    def http_fault_response(self, status: int) -> Response:
        raise NotImplementedError

    # --- control ---------------------------------------------------------------------------------
    def configure(self, **patch: Any) -> C:
        """Replace top-level knobs (validated as a whole); returns the new config."""
        with self.lock:
            merged = {**self.config.model_dump(), **patch}
            new = type(self.config).model_validate(merged)
            if new.time_factor != self.config.time_factor:
                self.clock.set_time_factor(new.time_factor)
            if new.seed != self.config.seed and new.seed is not None:
                self.rng.seed(new.seed)
            self.config = new
            return new

    def reset(self) -> None:
        """Forget every job and counter and restore the config the app was created with."""
        with self.lock:
            self.config = self._initial.model_copy(deep=True)
            self.clock.set_time_factor(self.config.time_factor)
            self.rng.seed(self.config.seed)
            self.stats = self._new_stats()
            self.deliverer.recent.clear()
            self._reset_jobs()

    def advance(self, seconds: float) -> float:
        """Jump virtual time forward and apply what became due; returns the new virtual now."""
        now = self.clock.advance(seconds)
        self.tick()
        return now

    def tick(self) -> None:
        with self.lock:
            self._process_due(self.clock.now())

    def stats_snapshot(self) -> dict[str, Any]:
        with self.lock:
            self._process_due(self.clock.now())
            snap = self.stats.snapshot()
            snap.update(self._extra_stats())
            snap["virtual_now"] = self.clock.now()
            snap["time_factor"] = self.clock.time_factor
            snap["notifications_in_flight"] = self.deliverer.in_flight
            return snap

    def base_url_for(self, request: Request) -> str:
        return (self.config.public_base_url or str(request.base_url)).rstrip("/")

    # --- request plumbing ------------------------------------------------------------------------
    async def guarded(self, endpoint: str, handler: Handler) -> Response:
        """Run an API handler under the transport faults: HTTP bursts before it, slow and
        malformed responses after it (so the request still had its effect)."""
        with self.lock:
            self.stats.requests += 1
            burst = pick_fault(self.config.http_errors, endpoint, self.api_endpoints, self.rng)
            if burst is not None:
                self.stats.bump("injected", f"http:{burst.status}:{endpoint}")
        self.deliverer.pump()
        if burst is not None:
            return self.http_fault_response(burst.status)
        reply = await handler()
        self.deliverer.pump()
        with self.lock:
            slow = pick_fault(self.config.slow, endpoint, self.api_endpoints, self.rng)
            bad = pick_fault(self.config.malformed, endpoint, self.api_endpoints, self.rng)
            if slow is not None:
                self.stats.bump("injected", f"slow:{endpoint}")
            if bad is not None:
                self.stats.bump("injected", f"malformed:{bad.mode}:{endpoint}")
        if slow is not None:
            await asyncio.sleep(slow.delay_s)
        if bad is not None:
            status, body, media = malformed_body(reply, bad.mode)
            return Response(body, status_code=status, headers=reply.headers, media_type=media)
        return Response(
            reply.encode(), status_code=reply.status, headers=reply.headers, media_type="application/json"
        )

    async def _serve_file(self, request: Request) -> Response:
        job_id, name = request.path_params["job_id"], request.path_params["name"]
        with self.lock:
            burst = pick_fault(self.config.http_errors, "files", self.api_endpoints, self.rng)
            slow = pick_fault(self.config.slow, "files", self.api_endpoints, self.rng)
            denied = self.files.check(
                job_id,
                name,
                request.query_params.get("expires", ""),
                request.query_params.get("sig", ""),
                self.config.expired_url_status,
            )
        if burst is not None:
            return self.http_fault_response(burst.status)
        if slow is not None:
            await asyncio.sleep(slow.delay_s)
        if denied is not None:
            with self.lock:
                self.stats.bump("files_rejected", str(denied.status_code))
            return denied
        found = await self.resolve_file(job_id, name)
        if found is None:
            with self.lock:
                self.stats.bump("files_rejected", "404")
            body = b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchKey</Code></Error>'
            return Response(body, status_code=404, media_type="application/xml")
        response, ranged = file_response(request, found[0], found[1])
        with self.lock:
            self.stats.files_served += 1
            self.stats.range_requests += int(ranged)
        return response

    # --- routes and lifecycle --------------------------------------------------------------------
    def common_routes(self) -> list[BaseRoute]:
        async def stats(_: Request) -> Response:
            return JSONResponse(self.stats_snapshot())

        async def get_config(_: Request) -> Response:
            return JSONResponse(self.config.model_dump(mode="json"))

        async def post_config(request: Request) -> Response:
            try:
                patch = await request.json()
                if not isinstance(patch, dict):
                    raise TypeError("body must be a JSON object")
                new = self.configure(**patch)
            except ValidationError as exc:
                return JSONResponse({"error": exc.errors(include_url=False, include_context=False)}, 422)
            except (ValueError, TypeError) as exc:
                return JSONResponse({"error": str(exc)}, 422)
            return JSONResponse(new.model_dump(mode="json"))

        async def reset(_: Request) -> Response:
            self.reset()
            return JSONResponse({"ok": True})

        async def advance(request: Request) -> Response:
            body = await request.json()
            now = self.advance(float(body.get("seconds", 0)))
            self.deliverer.pump()
            return JSONResponse({"virtual_now": now})

        async def job(request: Request) -> Response:
            with self.lock:
                self._process_due(self.clock.now())
                view = self.job_view(request.path_params["job_id"])
            return JSONResponse(view) if view is not None else JSONResponse({"error": "not found"}, 404)

        async def deliveries(_: Request) -> Response:
            return JSONResponse(list(self.deliverer.recent))

        return [
            Route("/_fake/stats", stats, methods=["GET"]),
            Route("/_fake/config", get_config, methods=["GET"]),
            Route("/_fake/config", post_config, methods=["POST"]),
            Route("/_fake/reset", reset, methods=["POST"]),
            Route("/_fake/advance", advance, methods=["POST"]),
            Route("/_fake/jobs/{job_id}", job, methods=["GET"]),
            Route("/_fake/deliveries", deliveries, methods=["GET"]),
            Route("/_files/{job_id}/{name}", self._serve_file, methods=["GET", "HEAD"]),
        ]

    @contextlib.asynccontextmanager
    async def lifespan(self, _: Starlette) -> AsyncIterator[None]:
        ticker = asyncio.get_running_loop().create_task(self._ticker())
        try:
            yield
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            await self.deliverer.aclose()

    async def _ticker(self) -> None:
        while True:
            self.tick()
            self.deliverer.pump()
            await asyncio.sleep(self.config.tick_real_s)


class FakeApp(Starlette, Generic[U]):
    """A Starlette app whose `fake` attribute is the live, inspectable fake upstream."""

    def __init__(self, fake: U, routes: list[BaseRoute]) -> None:
        super().__init__(routes=[*routes, *fake.common_routes()], lifespan=fake.lifespan)
        self.fake: U = fake
