"""`vidgate worker` serves its own counters at /metrics (VIDGATE_WORKER_METRICS_PORT): a real worker
process scraped over loopback, with and without the token; the server on its own; the settings
that turn it off and a port already taken."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import typer
from fastapi.testclient import TestClient

from tests.conftest import auth, wait_finished
from tests.e2e.conftest import VIDGATE, free_port
from tests.test_metrics import PIX, Samples, parse, value
from vidgate import cli
from vidgate.api import create_app
from vidgate.config import Settings
from vidgate.db import Database
from vidgate.metrics import WorkerMetricsServer

TOKEN = "scrape-me"


def answered(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    """Wait until something answers at `url` (any status): the worker is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"the worker's metrics never answered:\n{log.read_text()}")


def scrape(url: str, **headers: str) -> Samples:
    response = httpx.get(url, headers=headers, timeout=5)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


@pytest.fixture
def worker_process(settings: Settings, database: Database, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`vidgate worker` on the test's database with metrics on a free port and a token."""
    port = free_port()
    env = {
        **os.environ,
        "VIDGATE_DATA_DIR": str(settings.data_dir),
        "VIDGATE_POLL_INTERVAL_SECONDS": "0.1",
        "VIDGATE_ALLOW_PRIVATE_URLS": "false",
        "VIDGATE_METRICS": "true",
        "VIDGATE_METRICS_TOKEN": TOKEN,
        "VIDGATE_WORKER_METRICS_PORT": str(port),
    }
    log = tmp_path / "worker.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([*VIDGATE, "worker"], env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        answered(url, proc, log)
        yield url, log
        # SIGTERM: the worker stops cleanly and its metrics server with it.
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()
        with pytest.raises(httpx.ConnectError):
            httpx.get(url, timeout=1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_worker_process_serves_its_counters_behind_the_token(
    worker_process: tuple[str, Path], settings: Settings, api_key: str
) -> None:
    url, log = worker_process
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        refused = httpx.get(url, headers=headers, timeout=5)
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"]["type"] == "authentication_error"
    assert "worker metrics at http://127.0.0.1:" in log.read_text()

    # A task the worker process fails: counted there, so only its own /metrics can show it.
    body = {**PIX, "image_urls": ["http://127.0.0.1:9/a.png"]}
    with TestClient(create_app(settings, run_worker=False), headers=auth(api_key)) as c:
        task_id = c.post("/v1/videos/generations", json=body).json()["data"][0]["task_id"]
        assert wait_finished(c, task_id, timeout=20)["status"] == "failed"
    samples = scrape(url, Authorization=f"Bearer {TOKEN}")
    assert value(samples, "vidgate_task_failures_total", provider="local", code="image_url_refused") == 1
    assert value(samples, "vidgate_webhook_attempts_total", outcome="delivered") == 0
    # The counters only: the database figures are the API's /metrics (the same from any process).
    names = {name for name, _ in samples}
    assert not any(n.startswith(("vidgate_tasks", "vidgate_queue_", "vidgate_ledger_")) for n in names)
    assert httpx.get(url.replace("/metrics", "/"), timeout=5).status_code == 404


def test_server_without_a_token_is_open_and_closes() -> None:
    server = WorkerMetricsServer("127.0.0.1", 0)
    server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        samples = scrape(f"{base}/metrics?name[]=ignored")
        assert value(samples, "vidgate_webhook_attempts_total", outcome="failed") is not None
        missing = httpx.get(f"{base}/metricsx", timeout=5)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == 404
    finally:
        server.close()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base}/metrics", timeout=1)


def test_worker_metrics_settings(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    assert Settings().worker_metrics_port == 0  # off unless asked for
    assert cli._worker_metrics(settings.model_copy(update={"metrics": True})) is None
    # A port without VIDGATE_METRICS serves nothing, and says so.
    assert cli._worker_metrics(settings.model_copy(update={"worker_metrics_port": free_port()})) is None
    assert "VIDGATE_METRICS is not" in caplog.text

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = settings.model_copy(update={"metrics": True, "worker_metrics_port": taken.getsockname()[1]})
        with pytest.raises(typer.Exit) as stopped:
            cli._worker_metrics(busy)
        assert stopped.value.exit_code == 1
