"""Operations: Prometheus /metrics (VIDGATE_METRICS) and JSON logs with request and task ids."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.test_webhooks import dispatch_until
from tests.webhook_receiver import Receiver
from vidgate import catalog, cli, db, keys, leases, logs, metrics, tasks, webhooks
from vidgate.api import create_app
from vidgate.config import Settings
from vidgate.db import Database

from .conftest import auth, wait_finished

PIX = {"model": "pixverse-v6", "prompt": "a red kite", "resolution": "360p", "duration": 1}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def scrape(client: TestClient, **headers: str) -> Samples:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@contextmanager
def app_client(
    settings: Settings, secret: str, *, worker: bool = False, **overrides: Any
) -> Iterator[TestClient]:
    configured = settings.model_copy(update=overrides)
    with TestClient(create_app(configured, run_worker=worker), headers=auth(secret)) as c:
        yield c


# --- /metrics ----------------------------------------------------------------------------------------


def test_metrics_are_off_by_default(client: TestClient) -> None:
    response = client.get("/metrics")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == 404
    assert "/metrics" not in client.get("/openapi.json").text


def test_scrape_counts_requests_tasks_queue_and_ledger(
    settings: Settings, database: Database, api_key: str
) -> None:
    with app_client(settings, api_key, metrics=True) as c:
        before = scrape(c)  # the request counters belong to the process: compare with a baseline
        task_id = c.post("/v1/videos/generations", json=PIX).json()["data"][0]["task_id"]
        for _ in range(3):
            assert c.get(f"/v1/tasks/{task_id}").status_code == 200
        assert c.get("/v1/tasks/task_nope").status_code == 404
        assert c.get("/no/such/path/12345").status_code == 404
        time.sleep(0.02)
        samples = scrape(c)

    def grew(name: str, **labels: str) -> float:
        return (value(samples, name, **labels) or 0) - (value(before, name, **labels) or 0)

    requests = "vidgate_http_requests_total"
    poll = {"method": "GET", "route": "/v1/tasks/{task_id}"}
    assert grew(requests, **poll, status="200") == 3
    assert grew(requests, **poll, status="404") == 1
    assert grew(requests, method="POST", route="/v1/videos/generations", status="200") == 1
    # Unknown paths share one series: a client cannot mint new ones.
    assert grew(requests, method="GET", route="unmatched", status="404") == 1
    assert not any("12345" in str(labels) for _, labels in samples)
    assert grew("vidgate_http_request_duration_seconds_count", **poll) == 4

    assert value(samples, "vidgate_tasks", status="pending", provider="local") == 1
    assert value(samples, "vidgate_queue_depth", provider="local") == 1
    age = value(samples, "vidgate_queue_oldest_pending_age_seconds", provider="local")
    assert age is not None and 0 < age < 30
    lag = value(samples, "vidgate_queue_lag_seconds", provider="local")
    assert lag is not None and 0 <= lag < 30
    assert value(samples, "vidgate_ledger_entries_total", kind="hold") == 1
    assert value(samples, "vidgate_ledger_amount_total", kind="hold") is not None


def test_metrics_token(settings: Settings, database: Database, api_key: str) -> None:
    with app_client(settings, api_key, metrics=True, metrics_token="scrape-me") as c:
        refused = c.get("/metrics", headers={"Authorization": "Bearer wrong"})
        assert refused.status_code == 401
        assert refused.json()["error"]["type"] == "authentication_error"
        # An API key is not the metrics token either.
        assert c.get("/metrics").status_code == 401
        assert scrape(c, Authorization="Bearer scrape-me")


def test_a_failed_task_counts_by_provider_and_code(
    settings: Settings, database: Database, api_key: str
) -> None:
    body = {**PIX, "image_urls": ["http://127.0.0.1:9/a.png"]}
    with app_client(settings, api_key, worker=True, metrics=True, allow_private_urls=False) as c:
        before = value(scrape(c), "vidgate_task_failures_total", provider="local", code="image_url_refused")
        task_id = c.post("/v1/videos/generations", json=body).json()["data"][0]["task_id"]
        assert wait_finished(c, task_id, timeout=20)["status"] == "failed"
        samples = scrape(c)
    after = value(samples, "vidgate_task_failures_total", provider="local", code="image_url_refused")
    assert after == (before or 0) + 1
    assert value(samples, "vidgate_tasks", status="failed", provider="local") == 1
    assert value(samples, "vidgate_ledger_entries_total", kind="release") == 1


# --- webhooks ------------------------------------------------------------------------------------------


def deliveries_by_status(samples: Samples) -> tuple[float | None, ...]:
    """The deliveries gauge as (pending, delivered, failed)."""
    statuses = ("pending", "delivered", "failed")
    return tuple(value(samples, "vidgate_webhook_deliveries", status=s) for s in statuses)


def delivery_status(database: Database, task_id: str) -> str:
    [(row, _)] = webhooks.for_task(database, task_id)
    return str(row.status)


def cancelled_with_callback(client: TestClient, url: str) -> str:
    """A task whose only delivery is its task.cancelled event, queued and due now."""
    submitted = client.post("/v1/videos/generations", json={**PIX, "callback_url": url})
    task_id: str = submitted.json()["data"][0]["task_id"]
    assert client.post(f"/v1/tasks/{task_id}/cancel").status_code == 200
    return task_id


def test_webhook_attempts_by_outcome_deliveries_and_backlog(
    settings: Settings, database: Database, api_key: str
) -> None:
    hooks = settings.model_copy(update={"webhook_retry_schedule": [0.1], "webhook_timeout_seconds": 3.0})
    receiver = Receiver(fail_first=1)  # a 500 first: the delivery is retried, then delivered
    try:
        with app_client(hooks, api_key, metrics=True) as c:
            before = scrape(c)
            retried = cancelled_with_callback(c, receiver.url())
            # Due 100 s ago and no dispatcher running: the backlog lag says so.
            with database.write() as conn:
                conn.execute(
                    db.webhook_deliveries.update()
                    .where(db.webhook_deliveries.c.task_id == retried)
                    .values(next_attempt_at=time.time() - 100)
                )
            backlog = scrape(c)
            dispatch_until(hooks, database, lambda: delivery_status(database, retried) == "delivered")
            # A callback that resolves to loopback where private URLs are refused: failed at once.
            refused = cancelled_with_callback(c, receiver.url())
            strict = hooks.model_copy(update={"allow_private_urls": False})
            dispatch_until(strict, database, lambda: delivery_status(database, refused) == "failed")
            after = scrape(c)
            [log] = c.get(f"/v1/tasks/{retried}/deliveries").json()["data"]
    finally:
        receiver.close()

    assert [a["status_code"] for a in log["attempts"]] == [500, 200]
    assert deliveries_by_status(backlog) == (1, 0, 0)
    lag = value(backlog, "vidgate_webhook_lag_seconds")
    assert lag is not None and 100 <= lag < 130

    def grew(outcome: str) -> float:
        name = "vidgate_webhook_attempts_total"
        return (value(after, name, outcome=outcome) or 0) - (value(before, name, outcome=outcome) or 0)

    # Every outcome is a series from the start, at 0 before anything happened.
    for outcome in ("delivered", "retry", "failed"):
        assert value(before, "vidgate_webhook_attempts_total", outcome=outcome) is not None
    assert (grew("retry"), grew("delivered"), grew("failed")) == (1, 1, 1)
    assert deliveries_by_status(after) == (0, 1, 1)
    assert value(after, "vidgate_webhook_lag_seconds") == 0


def test_webhook_gauges_count_due_deliveries_only(any_database: Database) -> None:
    empty = parse(metrics.render(any_database).decode())
    assert deliveries_by_status(empty) == (0, 0, 0)
    assert value(empty, "vidgate_webhook_lag_seconds") == 0

    key = keys.create(any_database, "hooks")[0].id
    for _ in range(5):
        tasks.create(
            any_database,
            key_id=key,
            request=catalog.parse(PIX),
            body=PIX,
            provider="local",
            estimated_time=5,
            callback_url="http://127.0.0.1:9/hook",
        )
    leases.claim(any_database, owner="w", providers=frozenset({"local"}), limit=10, lease_seconds=30)
    D = db.webhook_deliveries
    with any_database.read() as conn:
        ids = list(conn.execute(sa.select(D.c.id).order_by(D.c.id)).scalars())
    now = time.time()
    shapes: list[dict[str, Any]] = [
        {"status": "delivered", "next_attempt_at": None, "delivered_at": now},
        {"status": "failed", "next_attempt_at": None},
        {"next_attempt_at": now - 50},  # due for 50 s: the lag
        {"next_attempt_at": now - 500, "lease_owner": "w", "lease_until": now + 30},  # in flight
        {"next_attempt_at": now + 1000},  # waiting for its retry: not due yet
    ]
    with any_database.write() as conn:
        for delivery_id, values in zip(ids, shapes, strict=True):
            conn.execute(D.update().where(D.c.id == delivery_id).values(**values))
    samples = parse(metrics.render(any_database).decode())
    assert deliveries_by_status(samples) == (3, 1, 1)
    lag = value(samples, "vidgate_webhook_lag_seconds")
    assert lag is not None and 50 <= lag < 80


# --- request ids and JSON logs -------------------------------------------------------------------------


@contextmanager
def json_lines(name: str = "vidgate") -> Iterator[io.StringIO]:
    """Records of logger `name` and below, formatted by logs.JsonFormatter into a buffer."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(logs.RedactingFilter())
    logger = logging.getLogger(name)
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield buffer
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def parsed(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


def test_request_id_is_answered_and_reaches_the_logs(
    settings: Settings, database: Database, api_key: str
) -> None:
    app = create_app(settings, run_worker=False)

    @app.get("/_test_log")
    def log_something() -> dict[str, str]:  # a sync route: runs in the thread pool
        logging.getLogger("vidgate.test").info("inside the request")
        return {}

    with TestClient(app, headers=auth(api_key)) as c, json_lines() as buffer:
        given = c.get("/_test_log", headers={"X-Request-Id": "abc-123.X"})
        made = c.get("/_test_log")
        hostile = c.get("/_test_log", headers={"X-Request-Id": "x" * 65})
        unknown = c.get("/v1/tasks/task_nope")  # the bare poll endpoint, an error envelope
    assert given.headers["x-request-id"] == "abc-123.X"
    assert len(made.headers["x-request-id"]) == 16
    assert hostile.headers["x-request-id"] != "x" * 65
    assert unknown.status_code == 404 and unknown.headers["x-request-id"]
    lines = parsed(buffer)
    assert [line["request_id"] for line in lines] == [
        "abc-123.X",
        made.headers["x-request-id"],
        hostile.headers["x-request-id"],
    ]
    for line in lines:
        assert set(line) == {"time", "level", "logger", "message", "request_id"}
        assert (line["level"], line["logger"], line["message"]) == (
            "INFO",
            "vidgate.test",
            "inside the request",
        )


def test_worker_logs_carry_the_task_id(
    settings: Settings, database: Database, api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fail = leases.fail

    def fail(*args: Any, **kwargs: Any) -> None:
        logging.getLogger("vidgate.test").warning("failing a task")
        real_fail(*args, **kwargs)

    monkeypatch.setattr(leases, "fail", fail)
    body = {**PIX, "image_urls": ["http://127.0.0.1:9/a.png"]}
    with json_lines() as buffer, app_client(settings, api_key, worker=True, allow_private_urls=False) as c:
        task_id = c.post("/v1/videos/generations", json=body).json()["data"][0]["task_id"]
        assert wait_finished(c, task_id, timeout=20)["status"] == "failed"
    [line] = [line for line in parsed(buffer) if line["message"] == "failing a task"]
    assert line["task_id"] == task_id
    assert line["level"] == "WARNING"
    assert "request_id" not in line  # the worker's tick is not inside the submit's request


def test_json_formatter_exceptions_and_redaction() -> None:
    with json_lines("vidgate.test") as buffer:
        log = logging.getLogger("vidgate.test")
        log.info("key %s and Authorization: Bearer %s", "vg_abcdefghijklmnop", "sk-upstream-secret")
        try:
            raise ValueError("boom vg_abcdefghijklmnop")
        except ValueError:
            log.exception("it failed")
    first, second = parsed(buffer)
    assert first["message"] == "key [redacted] and Authorization: Bearer [redacted]"
    assert second["message"] == "it failed"
    assert "ValueError: boom [redacted]" in second["exception"]
    assert "vg_abcdefghijklmnop" not in buffer.getvalue()


def test_log_format_json_configures_the_root_logger(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    monkeypatch.setenv("VIDGATE_LOG_FORMAT", "json")
    try:
        cli._log_setup()
        [handler] = root.handlers
        assert isinstance(handler.formatter, logs.JsonFormatter)
        record = logging.LogRecord("vidgate.x", logging.INFO, __file__, 1, "hello %s", ("you",), None)
        token = logs.task_id.set("task_1")
        try:
            line = json.loads(handler.format(record))
        finally:
            logs.task_id.reset(token)
        assert line["message"] == "hello you" and line["task_id"] == "task_1"
        assert line["time"].endswith("Z")
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
