"""Prometheus metrics: `GET /metrics` in the text exposition format (on with `VIDGATE_METRICS=true`).

Two kinds of figures:

- counted in this process: HTTP requests and their latencies by method, route template and status
  (`RequestMetrics`, a pure ASGI middleware), task failures by provider and error code
  (`task_failed`, called by the worker where it fails a task), upstream outages, and webhook
  attempts by outcome (`webhook_attempt`, called by the dispatcher);
- read from the database at scrape time (`DatabaseCollector`): tasks by status and provider, queue
  depth (pending tasks that are due), the age of the oldest pending task and the queue lag (how
  long the longest-waiting due task has been due), webhook deliveries by status and their lag,
  and ledger totals by kind. These are the same whichever process is scraped, so with many API
  processes scrape one, or sum the counters only.

API processes serve both at `/metrics` (`render`). A standalone `vidgate worker` serves its own
counters only (`WorkerMetricsServer`, with `VIDGATE_WORKER_METRICS_PORT`): the database figures
would be the same as the API's, and a worker should not pay a scan of `tasks` per scrape.
"""

from __future__ import annotations

import hmac
import json
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vidgate import db
from vidgate.errors import AuthenticationFailed
from vidgate.status import Status

#: Counters of this process (requests, failures). Not the prometheus_client default registry, so
#: that importing vidgate never adds to (or clashes with) a host application's metrics.
REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "vidgate_http_requests_total",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "vidgate_http_request_duration_seconds",
    "Time from request to the end of the response body, by method and route template.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
    registry=REGISTRY,
)
TASK_FAILURES = Counter(
    "vidgate_task_failures_total",
    "Tasks this process failed, by provider and error code (upstream_*, render_failed, ...).",
    ["provider", "code"],
    registry=REGISTRY,
)
UPSTREAM_UNAVAILABLE = Counter(
    "vidgate_upstream_unavailable_total",
    "Ticks in which an upstream was unreachable or refused work (the task was retried or moved).",
    ["provider"],
    registry=REGISTRY,
)
WEBHOOK_OUTCOMES = ("delivered", "retry", "failed")
WEBHOOK_ATTEMPTS = Counter(
    "vidgate_webhook_attempts_total",
    "Webhook attempts this process finished, by outcome: delivered (a 2xx), retry (due again "
    "later) or failed (given up).",
    ["outcome"],
    registry=REGISTRY,
)
for _outcome in WEBHOOK_OUTCOMES:  # every series from the start, so that rate() sees the first one
    WEBHOOK_ATTEMPTS.labels(outcome=_outcome)

#: Label for requests that matched no route: raw paths would let any client create series.
UNMATCHED = "unmatched"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def task_failed(provider: str, code: str) -> None:
    TASK_FAILURES.labels(provider=provider, code=code).inc()


def upstream_unavailable(provider: str) -> None:
    UPSTREAM_UNAVAILABLE.labels(provider=provider).inc()


def webhook_attempt(outcome: str) -> None:
    WEBHOOK_ATTEMPTS.labels(outcome=outcome).inc()


class RequestMetrics:
    """Counts every HTTP request and times it, labelled by the route template (`/v1/tasks/{task_id}`,
    never the raw path). Costs two dict lookups and two lock-protected additions per request: the
    labelled children are cached, so `labels()` runs once per series."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._timers: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            template = _template(scope)
            method = scope.get("method", "")
            counter = self._counters.get((method, template, status))
            if counter is None:
                counter = REQUESTS.labels(method=method, route=template, status=str(status))
                self._counters[(method, template, status)] = counter
            timer = self._timers.get((method, template))
            if timer is None:
                timer = LATENCY.labels(method=method, route=template)
                self._timers[(method, template)] = timer
            counter.inc()
            timer.observe(time.perf_counter() - start)


def _template(scope: Scope) -> str:
    """The matched route's path template. FastAPI records its own routes in `scope["route"]`; a
    plain Starlette route (the bare polling endpoint) is known by the endpoint the router chose."""
    route = scope.get("route")
    if route is not None:
        return getattr(route, "path", None) or UNMATCHED
    endpoint = scope.get("endpoint")
    if endpoint is None:
        return UNMATCHED
    known = _BY_ENDPOINT.get(endpoint)
    if known is None:
        known = UNMATCHED
        app = scope.get("app")
        for candidate in getattr(getattr(app, "router", None), "routes", ()):
            if (
                getattr(candidate, "endpoint", None) is endpoint
                or getattr(candidate, "app", None) is endpoint
            ):
                known = getattr(candidate, "path", None) or UNMATCHED
                break
        if len(_BY_ENDPOINT) < 1000:
            _BY_ENDPOINT[endpoint] = known
    return known


#: endpoint -> path template of the plain routes seen so far (a handful per app).
_BY_ENDPOINT: dict[Any, str] = {}


class DatabaseCollector(Collector):
    """Figures read from the database when scraped: one grouped query over tasks, one over
    webhook deliveries, one over the ledger."""

    def __init__(self, database: db.Database) -> None:
        self.database = database

    def collect(self) -> Iterator[Any]:
        now = time.time()
        t, ledger, d = db.tasks, db.ledger, db.webhook_deliveries
        pending = t.c.status == Status.PENDING.value
        due = sa.and_(pending, t.c.next_run_at <= now)
        task_query = sa.select(
            t.c.status,
            t.c.provider,
            sa.func.count(),
            sa.func.sum(sa.case((due, 1), else_=0)),
            sa.func.min(sa.case((pending, t.c.created_at), else_=None)),
            sa.func.min(sa.case((due, t.c.next_run_at), else_=None)),
        ).group_by(t.c.status, t.c.provider)
        # Due as the dispatcher claims (webhooks._due): a leased row is in flight, not waiting.
        hook_due = sa.and_(
            d.c.status == "pending",
            d.c.next_attempt_at <= now,
            sa.or_(d.c.lease_until.is_(None), d.c.lease_until < now),
        )
        hook_query = sa.select(
            d.c.status, sa.func.count(), sa.func.min(sa.case((hook_due, d.c.next_attempt_at), else_=None))
        ).group_by(d.c.status)
        ledger_query = sa.select(ledger.c.kind, sa.func.count(), sa.func.sum(ledger.c.amount)).group_by(
            ledger.c.kind
        )
        with self.database.read() as conn:
            task_rows = conn.execute(task_query).all()
            hook_rows = conn.execute(hook_query).all()
            ledger_rows = conn.execute(ledger_query).all()

        by_state = GaugeMetricFamily(
            "vidgate_tasks", "Tasks in the database, by status and provider.", labels=["status", "provider"]
        )
        depth = GaugeMetricFamily(
            "vidgate_queue_depth", "Pending tasks that are due now, by provider.", labels=["provider"]
        )
        oldest = GaugeMetricFamily(
            "vidgate_queue_oldest_pending_age_seconds",
            "Age of the oldest pending task (0 when none), by provider.",
            labels=["provider"],
        )
        lag = GaugeMetricFamily(
            "vidgate_queue_lag_seconds",
            "How long the longest-waiting due task has been due (0 when none), by provider.",
            labels=["provider"],
        )
        providers: set[str] = set()
        for status, provider, count, due_count, first_created, first_due in task_rows:
            by_state.add_metric([status, provider], float(count))
            providers.add(provider)
            if status == Status.PENDING.value:
                depth.add_metric([provider], float(due_count or 0))
                oldest.add_metric([provider], max(0.0, now - first_created) if first_created else 0.0)
                lag.add_metric([provider], max(0.0, now - first_due) if first_due else 0.0)
        yield by_state
        yield depth
        yield oldest
        yield lag

        deliveries = GaugeMetricFamily(
            "vidgate_webhook_deliveries",
            "Webhook deliveries in the database, by status (pending, delivered, failed).",
            labels=["status"],
        )
        hook_lag = GaugeMetricFamily(
            "vidgate_webhook_lag_seconds",
            "How long the longest-waiting due webhook delivery has been due (0 when none): "
            "the dispatchers' backlog. A delivery waiting for its retry time is not due yet.",
        )
        counts = dict.fromkeys(("pending", "delivered", "failed"), 0.0)  # 0, not absent: alertable
        first_hook_due: float | None = None
        for status, count, first in hook_rows:
            counts[status] = float(count)
            if first is not None:
                first_hook_due = first
        for status, count in counts.items():
            deliveries.add_metric([status], count)
        hook_lag.add_metric([], max(0.0, now - first_hook_due) if first_hook_due is not None else 0.0)
        yield deliveries
        yield hook_lag

        amounts = CounterMetricFamily(
            "vidgate_ledger_amount",
            "Money moved by the ledger, by kind (topup, hold, capture, release).",
            labels=["kind"],
        )
        rows = CounterMetricFamily("vidgate_ledger_entries", "Ledger rows, by kind.", labels=["kind"])
        for kind, count, total in ledger_rows:
            amounts.add_metric([kind], float(total or 0))
            rows.add_metric([kind], float(count))
        yield amounts
        yield rows


def render(database: db.Database) -> bytes:
    """The whole exposition: this process's counters, then the database's figures."""
    scraped = CollectorRegistry(auto_describe=False)
    scraped.register(DatabaseCollector(database))
    return generate_latest(REGISTRY) + generate_latest(scraped)


# --- a standalone worker's counters ------------------------------------------------------------------


class _CountersHandler(BaseHTTPRequestHandler):
    server: WorkerMetricsServer

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != "/metrics":
            self._answer(404, _error(404, "Not found", "not_found_error"))
            return
        token = self.server.token
        if token:
            scheme, _, given = self.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
                error = AuthenticationFailed()
                self._answer(401, _error(401, error.message(), error.type))
                return
        self._answer(200, generate_latest(REGISTRY), CONTENT_TYPE)

    def _answer(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None  # a scrape every few seconds would drown the worker's own lines


def _error(code: int, message: str, kind: str) -> bytes:
    """The API's error envelope, so that a scraper sees the same answer from either server."""
    return json.dumps({"error": {"code": code, "message": message, "type": kind}}).encode()


class WorkerMetricsServer(ThreadingHTTPServer):
    """`GET /metrics` with this process's counters (REGISTRY), for a `vidgate worker`, which has no
    API to serve them. A bearer token when `token` is set, as the API's route. Served from a daemon
    thread: `start()`, then `close()` on shutdown."""

    daemon_threads = True

    def __init__(self, host: str, port: int, *, token: str = "") -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.token = token
        super().__init__((host, port), _CountersHandler)
        self._thread = threading.Thread(target=self.serve_forever, name="vidgate-metrics", daemon=True)

    def server_bind(self) -> None:
        # HTTPServer's would look the host up in reverse DNS (getfqdn): a slow start for nothing.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self.shutdown()
        self.server_close()
