"""Relay test harness: fake upstreams as real HTTP servers on loopback, and a vidgate app whose
worker relays to them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from vidgate import keys, migrations
from vidgate.api import create_app
from vidgate.config import Settings
from vidgate.db import Database
from vidgate.testing import fake_pixverse, fake_vidu
from vidgate.testing.fake_pixverse_spec import FakePixVerseConfig
from vidgate.testing.fake_serve import serving
from vidgate.testing.fake_vidu_spec import FakeViduConfig

FAST = {"time_factor": 100.0}


@pytest.fixture
def vidu() -> Iterator[tuple[Any, str]]:
    """(app, base_url) of a fake Vidu whose jobs finish in well under a second."""
    app = fake_vidu.create_app(FakeViduConfig(**FAST, processing_base_s=20.0, processing_per_video_s=2.0))
    with serving(app) as base:
        yield app, base


@pytest.fixture
def pixverse() -> Iterator[tuple[Any, str]]:
    app = fake_pixverse.create_app(FakePixVerseConfig(**FAST))
    with serving(app) as base:
        yield app, base


@pytest.fixture
def make_gateway(tmp_path: Path) -> Callable[..., Any]:
    """`with make_gateway(vidu_api_key=..., vidu_base_url=...) as (client, database):` -- an API with
    its worker, as `vidgate serve` runs it, configured with the given settings."""

    @contextmanager
    def factory(**overrides: Any) -> Iterator[tuple[TestClient, Database]]:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "allow_private_urls": True,
            "poll_interval_seconds": 0.05,
            "lease_seconds": 5,
            "upstream_poll_seconds": 0.1,
            "upstream_timeout_seconds": 5,
            "local_preset": "ultrafast",
            **overrides,
        }
        settings = Settings(**values)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        database = Database(settings.effective_database_url)
        migrations.upgrade(database)
        secret = keys.create(database, "relay")[1]
        try:
            with TestClient(create_app(settings), headers={"Authorization": f"Bearer {secret}"}) as client:
                yield client, database
        finally:
            database.dispose()

    return factory


def wait_for(
    client: TestClient,
    task_id: str,
    *,
    timeout: float = 30,
    until: tuple[str, ...] = ("completed", "failed", "cancelled"),
) -> dict[str, Any]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        data: dict[str, Any] = client.get(f"/v1/tasks/{task_id}").json()["data"]
        if data["status"] in until:
            return data
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} did not reach {until} in {timeout} s: {data}")
