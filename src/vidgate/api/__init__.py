"""The HTTP API: `create_app(settings)` builds the FastAPI app (and, by default, its worker)."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import inspect
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool

import vidgate
from vidgate import logs, metrics, prices, ratelimit
from vidgate.api.responses import JsonResponse
from vidgate.config import Settings
from vidgate.db import Database
from vidgate.prices import PriceTable
from vidgate.providers import Router
from vidgate.signing import Signer, load_secret
from vidgate.storage import Storage, open_storage
from vidgate.worker import Worker


@dataclass
class Gateway:
    """Everything a request handler needs, built once per process."""

    settings: Settings
    database: Database
    storage: Storage
    #: Makes `/files/` URLs and checks them; its result links come from `storage`.
    signer: Signer
    router: Router
    prices: PriceTable
    worker: Worker | None = None
    started_at: float = field(default_factory=time.time)
    #: key id -> last time `last_used_at` was written (written at most once a minute per key).
    touched: dict[str, float] = field(default_factory=dict)
    #: Counts requests of keys with an rpm (`ratelimit.py`); None counts nothing.
    limiter: ratelimit.Limiter | None = None
    #: key hash -> (valid until, key id, rpm): the poll path's view of keys' rpm (`api/auth.py`).
    rpm_cache: dict[str, tuple[float, str | None, int | None]] = field(default_factory=dict)

    def wake_worker(self) -> None:
        if self.worker is not None:
            self.worker.wake()


def build_gateway(settings: Settings, *, run_worker: bool) -> Gateway:
    database = Database(
        settings.effective_database_url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
    )
    signer = Signer(load_secret(database, settings.secret_key))
    storage = open_storage(settings, signer)
    signer = signer.with_links(storage)
    router = Router(settings)
    price_table = prices.load(settings.prices_file)
    gateway = Gateway(settings, database, storage, signer, router, price_table)
    gateway.limiter = ratelimit.build(settings, database)
    if run_worker:
        gateway.worker = Worker(settings, database, storage, signer, router.build(), router, price_table)
    return gateway


async def _metrics_endpoint(request: Request) -> Response:
    """GET /metrics (VIDGATE_METRICS=true): Prometheus text; a bearer token when one is set."""
    gateway: Gateway = request.app.state.gateway
    token = gateway.settings.metrics_token
    if token:
        from vidgate.api.auth import parse_bearer
        from vidgate.errors import AuthenticationFailed

        given = parse_bearer(request.headers.get("authorization", "")) or ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise AuthenticationFailed()
    body = await run_in_threadpool(metrics.render, gateway.database)
    return Response(body, media_type=metrics.CONTENT_TYPE)


def create_app(settings: Settings, *, run_worker: bool = True) -> FastAPI:
    from starlette.routing import Route

    from vidgate.api import (
        admin,
        auth,
        callbacks,
        discovery,
        errors,
        files,
        tasks_routes,
        uploads,
        videos,
        webhooks_routes,
    )
    from vidgate.api.console import install_console, install_cors
    from vidgate.api.docs_ui import install as install_docs_ui
    from vidgate.api.openapi_docs import install as install_openapi

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gateway = build_gateway(settings, run_worker=run_worker)
        app.state.gateway = gateway
        stop = asyncio.Event()
        worker_task = asyncio.create_task(gateway.worker.run(stop)) if gateway.worker else None
        try:
            yield
        finally:
            stop.set()
            if worker_task is not None:
                await worker_task
            if gateway.limiter is not None:
                gateway.limiter.close()
            gateway.database.dispose()

    # We export our own metrics; FastAPI's OpenTelemetry hooks would cost time on every request.
    extra: dict[str, object] = {}
    if "telemetry" in inspect.signature(FastAPI).parameters:
        extra["telemetry"] = {"tracing": False, "metrics": False, "logs": False}
    app = FastAPI(
        title="vidgate",
        version=vidgate.__version__,
        description="Self-hosted gateway for asynchronous AI video generation (apimart video API).",
        lifespan=lifespan,
        default_response_class=JsonResponse,
        # Served offline by `docs_ui` instead (FastAPI's pages load their scripts from a CDN).
        docs_url=None,
        redoc_url=None,
        **extra,  # type: ignore[arg-type]
    )
    errors.install(app)
    app.add_middleware(auth.RateLimitHeaders)
    app.add_middleware(tasks_routes.PollFastLane)  # polls skip the layers below (see its docstring)
    if settings.metrics:
        app.add_middleware(metrics.RequestMetrics)
        app.router.routes.append(
            Route("/metrics", _metrics_endpoint, methods=["GET"], include_in_schema=False)
        )
    app.add_middleware(logs.RequestIds)  # outermost: every log line of a request carries its id
    install_cors(app, settings)  # when configured, around everything: errors carry CORS too
    # First in the list: polling is most of the traffic, so it should not wait on route matching.
    fast = tasks_routes.fast_route
    app.router.routes.insert(0, Route(fast.path, auth.LimitedPoll(fast.endpoint), methods=["GET"]))
    for module in (videos, tasks_routes, webhooks_routes, uploads, discovery, files, callbacks):
        app.include_router(module.router)
    install_console(app, settings)  # `/` and `/console/...`, unless VIDGATE_CONSOLE=false
    if settings.admin_token:
        # Without a token the admin API does not exist: /admin/... is a 404 like any unknown path.
        app.include_router(admin.router)
    install_openapi(app)  # the document's responses, security, catalog schemas
    install_docs_ui(app)  # /docs and /redoc without a CDN
    return app
