"""Prometheus metrics: `GET /metrics` in the text exposition format (on with `VIDGATE_METRICS=true`).

Two kinds of figures:

- counted in this process: HTTP requests and their latencies by method, route template and status
  (`RequestMetrics`, a pure ASGI middleware), and task failures by provider and error code
  (`task_failed`, called by the worker where it fails a task);
- read from the database at scrape time (`DatabaseCollector`): tasks by status and provider, queue
  depth (pending tasks that are due), the age of the oldest pending task and the queue lag (how
  long the longest-waiting due task has been due), and ledger totals by kind. These are the same
  whichever process is scraped, so with many API processes scrape one, or sum the counters only.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vidgate import db
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

#: Label for requests that matched no route: raw paths would let any client create series.
UNMATCHED = "unmatched"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def task_failed(provider: str, code: str) -> None:
    TASK_FAILURES.labels(provider=provider, code=code).inc()


def upstream_unavailable(provider: str) -> None:
    UPSTREAM_UNAVAILABLE.labels(provider=provider).inc()


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
    """Figures read from the database when scraped: one grouped query over tasks, one over the
    ledger."""

    def __init__(self, database: db.Database) -> None:
        self.database = database

    def collect(self) -> Iterator[Any]:
        now = time.time()
        t, ledger = db.tasks, db.ledger
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
        ledger_query = sa.select(ledger.c.kind, sa.func.count(), sa.func.sum(ledger.c.amount)).group_by(
            ledger.c.kind
        )
        with self.database.read() as conn:
            task_rows = conn.execute(task_query).all()
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
