"""Fake Vidu upstream (`/ent/v2/...`), faithful to research/upstream-apis.md §1 and §3.

    app = create_app(FakeViduConfig(time_factor=1000))   # app.fake is the live FakeVidu
    python -m vidgate.testing.fake_vidu --port 8701 --api-key K --time-factor 60

Every error uses Vidu's body `{"code", "reason", "message", "metadata": {"trace_id"}}`.
See docs/fake-upstreams.md for the knobs and counters.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from vidgate.testing.fake_common import FakeApp
from vidgate.testing.fake_faults import Reply, pick_fault
from vidgate.testing.fake_media import nearest_ratio
from vidgate.testing.fake_serve import run_cli
from vidgate.testing.fake_vidu_spec import (
    MODEL_VERSION,
    FakeViduConfig,
    ViduError,
    ViduErrorFault,
    check_image,
    credits_for,
    decode_data_uri,
    validate_reference2video,
    verify_vidu_callback,
    vidu_signature,
    vidu_signing_string,
)
from vidgate.testing.fake_vidu_tasks import FakeVidu, ViduStats, ViduTask, vidu_error

__all__ = [
    "FakeVidu",
    "FakeViduConfig",
    "ViduErrorFault",
    "ViduStats",
    "create_app",
    "main",
    "verify_vidu_callback",
    "vidu_signature",
    "vidu_signing_string",
]

WEEK_S = 7 * 86400


class ViduApi:
    """Route handlers; all state lives in `fake`."""

    def __init__(self, fake: FakeVidu) -> None:
        self.fake = fake

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/ent/v2/reference2video", self.submit, methods=["POST"]),
            Route("/ent/v2/tasks/{task_id}/creations", self.poll, methods=["GET"]),
            Route("/ent/v2/tasks/{task_id}/cancel", self.cancel, methods=["POST"]),
            Route("/ent/v2/tasks", self.list_tasks, methods=["GET"]),
        ]

    def _auth(self, request: Request) -> Reply | None:
        if request.headers.get("authorization", "") == f"Token {self.fake.config.api_key}":
            return None
        with self.fake.lock:
            self.fake.stats.unauthorized += 1
        return vidu_error("Unauthorized")

    def _refuse(self, reason: str, message: str | None = None) -> Reply:
        with self.fake.lock:
            self.fake.stats.bump("submit_errors", reason)
        return vidu_error(reason, message)

    # --- create ----------------------------------------------------------------------------------
    async def submit(self, request: Request) -> Response:
        async def handle() -> Reply:
            fake = self.fake
            denied = self._auth(request)
            if denied is not None:
                return denied
            with fake.lock:
                fake.stats.submits += 1
                cfg = fake.config
            raw = await request.body()
            if len(raw) > cfg.max_body_bytes:
                return self._refuse("BadRequest", "request body exceeds 20MB")
            try:
                body = json.loads(raw)
                req = validate_reference2video(body, cfg)
                ratio = await self._check_images(req, cfg)
            except json.JSONDecodeError:
                return self._refuse("BadRequest", "request body is not valid JSON")
            except ViduError as exc:
                return self._refuse(exc.reason, exc.message)
            with fake.lock:
                fake.tick()
                cfg = fake.config  # re-read: the knobs may have changed while the body was read
                fault = pick_fault(cfg.submit_errors, "submit", ("submit",), fake.rng)
                if fault is not None:
                    fake.stats.bump("injected", f"submit:{fault.code}")
                    return self._refuse(fault.code, fault.message)
                credits = credits_for(req)
                if cfg.credits_balance is not None and cfg.credits_balance < credits:
                    return self._refuse("CreditInsufficient")
                if cfg.max_active_tasks is not None and fake.active_count() >= cfg.max_active_tasks:
                    return self._refuse("QuotaExceeded")
                doom = pick_fault(cfg.task_failures, "submit", ("submit",), fake.rng)
                if doom is not None:
                    fake.stats.bump("injected", f"task:{doom.code}")
                if cfg.credits_balance is not None:
                    cfg.credits_balance -= credits
                task = fake.new_task(
                    req, credits, fake.base_url_for(request), doom.code if doom else "", ratio
                )
                fake.stats.jobs_created += 1
                fake.stats.bump("jobs_created_by_model", req["model"])
                fake.stats.bump("jobs_created_by_endpoint", "reference2video")
                fake.stats.bump("submits_by_payload", req["payload"])
                return Reply(200, fake.create_view(task), essential=("task_id", "state"))

        return await self.fake.guarded("submit", handle)

    async def _check_images(self, req: dict[str, Any], cfg: FakeViduConfig) -> str:
        """Check each image per §1.3 (data URIs always, URLs when `fetch_images`); returns the
        aspect ratio of the file to serve (`auto` follows the first image when it is known)."""
        sizes: list[tuple[int, int] | None] = []
        for index, image in enumerate(req["images"]):
            data = decode_data_uri(image, index)
            if data is None and cfg.fetch_images:
                try:
                    async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
                        got = await client.get(image, follow_redirects=True)
                    got.raise_for_status()
                    data = got.content
                except httpx.HTTPError as exc:
                    raise ViduError("ImageDownloadFailure", f"failed to download images[{index}]") from exc
            sizes.append(check_image(data, index) if data is not None and cfg.validate_images else None)
        if req["aspect_ratio"] != "auto":
            return str(req["aspect_ratio"])
        first = sizes[0] if sizes else None
        return nearest_ratio(*first) if first else "16:9"

    # --- query, list, cancel ---------------------------------------------------------------------
    def _find(self, task_id: str) -> ViduTask | Reply:
        task = self.fake.tasks.get(task_id)
        return task if task is not None else vidu_error("TaskNotFound", f"task {task_id} not found")

    async def poll(self, request: Request) -> Response:
        async def handle() -> Reply:
            denied = self._auth(request)
            if denied is not None:
                return denied
            with self.fake.lock:
                self.fake.tick()
                self.fake.stats.polls += 1
                found = self._find(request.path_params["task_id"])
                if isinstance(found, Reply):
                    return found
                return Reply(200, self.fake.query_view(found), essential=("state", "creations"))

        return await self.fake.guarded("poll", handle)

    async def cancel(self, request: Request) -> Response:
        async def handle() -> Reply:
            denied = self._auth(request)
            if denied is not None:
                return denied
            with self.fake.lock:
                self.fake.tick()
                self.fake.stats.cancels += 1
                found = self._find(request.path_params["task_id"])
                if isinstance(found, Reply):
                    return found
                if not self.fake.cancel(found):
                    return vidu_error("BadRequest", f"task {found.id} has already finished")
                return Reply(200, {})

        return await self.fake.guarded("cancel", handle)

    async def list_tasks(self, request: Request) -> Response:
        async def handle() -> Reply:
            denied = self._auth(request)
            if denied is not None:
                return denied
            try:
                return self._list(request)
            except ViduError as exc:
                return vidu_error(exc.reason, exc.message)

        return await self.fake.guarded("list", handle)

    def _list(self, request: Request) -> Reply:
        params = request.query_params

        def many(name: str) -> set[str]:
            # Array encoding is undocumented: accept repeated keys, `name[]` and comma lists.
            values = params.getlist(name) + params.getlist(name + "[]")
            return {v.strip() for raw in values for v in raw.split(",") if v.strip()}

        def one(*names: str) -> str | None:
            return next((params[n] for n in names if n in params), None)

        def when(name: str) -> float | None:
            value = params.get(name)
            if not value:
                return None
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError as exc:
                raise ViduError("FieldInvalid", f"field {name} must be an ISO 8601 time") from exc

        size_s, page_s = one("pager.pagesz", "paper.pagesz"), one("pager.page", "paper.page")
        token = one("pager.page_token", "paper.page_token")
        if (size_s and not size_s.isdigit()) or (page_s and not page_s.isdigit()):
            raise ViduError("FieldInvalid", "pager fields must be integers")
        size, page = int(size_s or 10), int(page_s or 0)
        if not 1 <= size <= 100:
            raise ViduError("PageSizeOutOfRange", "page size must be between 1 and 100")
        before = None
        if token:
            try:
                before = int(base64.urlsafe_b64decode(token.encode()).decode().removeprefix("seq:"))
            except (ValueError, binascii.Error) as exc:
                raise ViduError("FieldInvalid", "field pager.page_token is invalid") from exc
        ids, states = many("task_ids"), {"queueing" if s == "queuing" else s for s in many("states")}
        versions, resolutions = many("model_versions"), many("resolutions")
        with self.fake.lock:
            self.fake.tick()
            self.fake.stats.lists += 1
            now = self.fake.clock.now()
            start, end = when("created_at.from") or now - WEEK_S, when("created_at.to") or now + 1
            matches = [
                t
                for t in reversed(self.fake.tasks.values())
                if (before is None or t.seq < before)
                and start <= t.created_at <= end
                and (not ids or t.id in ids)
                and (not states or t.state in states)
                and (not versions or {t.request["model"], MODEL_VERSION[t.request["model"]]} & versions)
                and (not resolutions or t.request["resolution"] in resolutions)
            ]
            offset = 0 if token else page * size
            chunk = matches[offset : offset + size]
            more = len(matches) > offset + size
            next_token = (
                base64.urlsafe_b64encode(f"seq:{chunk[-1].seq}".encode()).decode() if chunk and more else ""
            )
            body = {"tasks": [self.fake.list_view(t) for t in chunk], "next_page_token": next_token}
        return Reply(200, body, essential=("tasks",))


def create_app(config: FakeViduConfig | None = None) -> FakeApp[FakeVidu]:
    """A Starlette app serving the fake Vidu; `app.fake` exposes state, knobs and counters."""
    fake = FakeVidu(config or FakeViduConfig())
    return FakeApp(fake, ViduApi(fake).routes())


def main(argv: list[str] | None = None) -> None:
    run_cli(
        argv,
        prog="python -m vidgate.testing.fake_vidu",
        description="Fake Vidu upstream",
        default_port=8701,
        config_cls=FakeViduConfig,
        create_app=create_app,
    )


if __name__ == "__main__":
    main()
