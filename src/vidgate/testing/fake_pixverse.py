"""Fake PixVerse upstream (`/openapi/v2/...`, model v6), faithful to research/upstream-apis.md §2, §3.

    app = create_app(FakePixVerseConfig(time_factor=1000))   # app.fake is the live FakePixVerse
    python -m vidgate.testing.fake_pixverse --port 8702 --api-key K --time-factor 60

Every answer is `{"ErrCode", "ErrMsg", "Resp"}`. Requests need `API-KEY` and `Ai-trace-id`; a
reused trace id gets the earlier answer back verbatim and has no effect (counters prove it).
See docs/fake-upstreams.md for the knobs and counters.
"""

from __future__ import annotations

import io
import json
from collections.abc import Awaitable, Callable
from typing import Any

from PIL import Image, UnidentifiedImageError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from vidgate.testing.fake_common import FakeApp
from vidgate.testing.fake_faults import Reply, pick_fault
from vidgate.testing.fake_pixverse_jobs import FakePixVerse, PixVerseStats, pix_reply
from vidgate.testing.fake_pixverse_spec import (
    FakePixVerseConfig,
    FinalStatusFault,
    PixError,
    PixErrorFault,
    credits_for,
    pixverse_webhook_sign_string,
    pixverse_webhook_signature,
    validate_generate,
)
from vidgate.testing.fake_serve import run_cli

__all__ = [
    "FakePixVerse",
    "FakePixVerseConfig",
    "FinalStatusFault",
    "PixErrorFault",
    "PixVerseStats",
    "create_app",
    "main",
    "pixverse_webhook_sign_string",
    "pixverse_webhook_signature",
]

PREFIX = "/openapi/v2"
IMAGE_FORMATS = {"PNG", "JPEG", "WEBP"}

Reader = Callable[[Request], Awaitable[Any]]
Inner = Callable[[str, Any], Reply]


async def _read_body(request: Request) -> bytes:
    return await request.body()


async def _read_image(request: Request) -> bytes | None:
    try:
        form = await request.form()
    except (HTTPException, ValueError):  # a broken multipart body is "no image", not a bare 400
        return None
    part = form.get("image")
    return await part.read() if isinstance(part, UploadFile) else None


async def _read_nothing(_: Request) -> None:
    return None


class PixVerseApi:
    """Route handlers; all state lives in `fake`."""

    def __init__(self, fake: FakePixVerse) -> None:
        self.fake = fake

    def routes(self) -> list[BaseRoute]:
        routes: list[BaseRoute] = [
            Route(f"{PREFIX}/image/upload", self.upload, methods=["POST"]),
            Route(f"{PREFIX}/video/result/{{video_id}}", self.result, methods=["GET"]),
        ]
        for kind in ("text", "img", "transition", "fusion", "extend"):
            routes.append(
                Route(f"{PREFIX}/video/{kind}/generate", self._generate_route(kind), methods=["POST"])
            )
        return routes

    def _error(self, code: int, message: str | None = None) -> Reply:
        return pix_reply(code, None, self.fake.config.error_http_status, message)

    async def _api(self, request: Request, endpoint: str, reader: Reader, inner: Inner) -> Response:
        """Auth and trace-id handling shared by every endpoint. The body is read first; the check
        for a replayed trace id and the work then happen under one lock hold, so two concurrent
        requests with the same trace id still have exactly one effect."""

        async def handle() -> Reply:
            fake = self.fake
            if request.headers.get("api-key") != fake.config.api_key:
                with fake.lock:
                    fake.stats.unauthorized += 1
                return self._error(400012)
            trace = request.headers.get("ai-trace-id", "").strip()
            if not trace:
                with fake.lock:
                    fake.stats.missing_trace_id += 1
                return self._error(400011, "Ai-trace-id is empty")
            payload = await reader(request)
            with fake.lock:
                fake.tick()
                if endpoint == "generate":
                    fake.stats.submits += 1
                    fake.stats.bump("submits_by_trace_id", trace)
                cached = fake.replay(trace, endpoint)
                if cached is not None:
                    return cached
                reply = inner(trace, payload)
                fake.remember(trace, reply)
                return reply

        return await self.fake.guarded(endpoint, handle)

    # --- upload ----------------------------------------------------------------------------------
    async def upload(self, request: Request) -> Response:
        return await self._api(request, "upload", _read_image, self._upload)

    def _upload(self, _trace: str, data: bytes | None) -> Reply:
        fake, cfg = self.fake, self.fake.config
        try:
            if not data:
                raise PixError(400011, "image is empty")
            fault = pick_fault(cfg.submit_errors, "upload", (), fake.rng)  # only when scoped to "upload"
            if fault is not None:
                fake.stats.bump("injected", f"upload:{fault.code}")
                raise PixError(fault.code, fault.message)
            if len(data) > cfg.max_image_bytes:
                raise PixError(500030)
            try:
                with Image.open(io.BytesIO(data)) as img:
                    fmt, width, height = str(img.format), img.width, img.height
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                raise PixError(500032) from exc
            if fmt not in IMAGE_FORMATS:
                raise PixError(500032, f"Invalid image format {fmt}: use png, webp, jpeg or jpg")
            if width > cfg.max_image_px or height > cfg.max_image_px:
                raise PixError(500030)
            if width < 1 or height < 1:
                raise PixError(500033)
        except PixError as exc:
            fake.stats.bump("upload_errors", exc.code)
            return self._error(exc.code, exc.message)
        image = fake.add_image(width, height, fmt, len(data))
        fake.stats.uploads += 1
        reply = pix_reply(0, {"img_id": image.id}, cfg.error_http_status)
        reply.essential = ("Resp.img_id",)
        return reply

    # --- generate --------------------------------------------------------------------------------
    def _generate_route(self, kind: str) -> Callable[[Request], Awaitable[Response]]:
        async def route(request: Request) -> Response:
            def inner(trace: str, raw: bytes) -> Reply:
                return self._generate(kind, trace, raw, self.fake.base_url_for(request))

            return await self._api(request, "generate", _read_body, inner)

        return route

    def _generate(self, kind: str, trace: str, raw: bytes, base_url: str) -> Reply:
        fake, cfg = self.fake, self.fake.config
        try:
            try:
                body = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise PixError(400013, "request body is not valid JSON") from exc
            req = validate_generate(kind, body, lambda i: i in fake.images, fake.video_status)
            fault = pick_fault(cfg.submit_errors, "generate", ("generate",), fake.rng)
            if fault is not None:
                fake.stats.bump("injected", f"generate:{fault.code}")
                raise PixError(fault.code, fault.message)
            if fake.in_flight >= cfg.concurrency:
                raise PixError(500044)
            credits = credits_for(req)
            if cfg.credits_balance is not None and cfg.credits_balance < credits:
                raise PixError(cfg.insufficient_credits_errcode, "Insufficient credits")
        except PixError as exc:
            fake.stats.bump("submit_errors", exc.code)
            return self._error(exc.code, exc.message)
        final = pick_fault(cfg.final_status, "generate", ("generate",), fake.rng)
        if final is not None:
            fake.stats.bump("injected", f"final_status:{final.status}")
        if cfg.credits_balance is not None:
            cfg.credits_balance -= credits
        job = fake.new_job(kind, req, credits, base_url, trace, final.status if final else 1)
        fake.stats.jobs_created += 1
        fake.stats.bump("jobs_created_by_model", "v6")
        fake.stats.bump("jobs_created_by_endpoint", kind)
        reply = pix_reply(0, {"video_id": job.id, "credits": credits}, cfg.error_http_status)
        reply.essential = ("Resp.video_id",)
        return reply

    # --- result ----------------------------------------------------------------------------------
    async def result(self, request: Request) -> Response:
        def inner(_trace: str, _payload: None) -> Reply:
            fake = self.fake
            fake.stats.polls += 1
            raw_id = request.path_params["video_id"]
            if not raw_id.isdigit():
                return self._error(400013, "video_id must be an integer")
            job = fake.jobs.get(int(raw_id))
            if job is None:
                return self._error(500008)
            reply = pix_reply(0, fake.result_view(job), fake.config.error_http_status)
            reply.essential = ("Resp.status", "Resp.url")
            return reply

        return await self._api(request, "result", _read_nothing, inner)


def create_app(config: FakePixVerseConfig | None = None) -> FakeApp[FakePixVerse]:
    """A Starlette app serving the fake PixVerse; `app.fake` exposes state, knobs and counters."""
    fake = FakePixVerse(config or FakePixVerseConfig())
    return FakeApp(fake, PixVerseApi(fake).routes())


def main(argv: list[str] | None = None) -> None:
    run_cli(
        argv,
        prog="python -m vidgate.testing.fake_pixverse",
        description="Fake PixVerse",
        default_port=8702,
        config_cls=FakePixVerseConfig,
        create_app=create_app,
    )


if __name__ == "__main__":
    main()
