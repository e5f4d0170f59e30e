"""Secrets never leave: upstream keys, API keys and the admin token appear in no log line (captured at
DEBUG), no response (body or header), no task row, event or ledger note; body size limits; CORS.

Signed-URL tampering and path traversal on /files/ are covered in tests/test_files.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tests.conftest import ImageServer, auth, png_bytes
from vidgate import db, keys, migrations
from vidgate.api import create_app
from vidgate.config import Settings
from vidgate.db import Database
from vidgate.testing import fake_vidu
from vidgate.testing.fake_serve import serving
from vidgate.testing.fake_vidu_spec import FakeViduConfig

UPSTREAM_KEY = "UPSTREAM-SECRET-9f27c1d4e8"
WRONG_UPSTREAM_KEY = "WRONG-UPSTREAM-SECRET-55aa01"
ADMIN_TOKEN = "ADMIN-TOKEN-SECRET-c0ffee42"
METRICS_TOKEN = "METRICS-TOKEN-SECRET-777"


class Transcript:
    """Every response the test saw, as text (status, headers, body)."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def record(self, response: Any) -> Any:
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        self.texts.append(f"{response.status_code}\n{headers}\n{response.text}")
        return response


@contextmanager
def gateway(
    tmp_path: Path, upstream: str, upstream_key: str
) -> Iterator[tuple[TestClient, Database, str, str]]:
    settings = Settings(
        data_dir=tmp_path,
        allow_private_urls=True,
        poll_interval_seconds=0.05,
        lease_seconds=5,
        local_preset="ultrafast",
        vidu_api_key=upstream_key,
        vidu_base_url=upstream,
        upstream_poll_seconds=0.05,
        upstream_timeout_seconds=1.0,
        admin_token=ADMIN_TOKEN,
        metrics=True,
        metrics_token=METRICS_TOKEN,
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = Database(settings.effective_database_url)
    migrations.upgrade(database)
    mine = keys.create(database, "mine")[1]
    other = keys.create(database, "other")[1]
    try:
        with TestClient(create_app(settings), headers=auth(mine)) as client:
            yield client, database, mine, other
    finally:
        database.dispose()


def wait_terminal(client: TestClient, task_id: str, seen: Transcript) -> dict[str, Any]:
    deadline = time.time() + 30
    while time.time() < deadline:
        data: dict[str, Any] = seen.record(client.get(f"/v1/tasks/{task_id}")).json()["data"]
        if data["status"] in ("completed", "failed", "cancelled"):
            return data
        time.sleep(0.05)
    raise AssertionError(f"{task_id} did not finish")


def stored_text(database: Database) -> str:
    """Everything vidgate keeps about tasks: rows, events, ledger."""
    with database.read() as conn:
        rows = [
            *conn.execute(sa.select(db.tasks)).all(),
            *conn.execute(sa.select(db.task_events)).all(),
            *conn.execute(sa.select(db.ledger)).all(),
        ]
    return "\n".join(repr(tuple(r)) for r in rows)


def exercise(client: TestClient, images: ImageServer, other: str, seen: Transcript) -> list[dict[str, Any]]:
    """Good and bad requests of every kind; returns the finished tasks."""
    image = images.add("/cat.png", png_bytes((30, 120, 200)))
    body = {"model": "viduq3", "prompt": "a fox", "image_urls": [image], "duration": 3}
    task_ids = [seen.record(client.post("/v1/videos/generations", json=body)).json()["data"][0]["task_id"]]
    local = {"model": "pixverse-v6", "prompt": "x", "resolution": "360p", "duration": 1}
    bad_image = {**local, "image_urls": ["http://127.0.0.1:9/none.png"]}  # a failed fetch
    task_ids.append(
        seen.record(client.post("/v1/videos/generations", json=bad_image)).json()["data"][0]["task_id"]
    )
    for response in (
        client.post("/v1/videos/generations", json={"model": "viduq3"}),
        client.post("/v1/videos/generations", content=b"{not json"),
        client.post("/v1/videos/generations", json={**local, "duration": 99}),
        client.get(f"/v1/tasks/{task_ids[0]}", headers=auth(other)),  # another key's task
        client.get("/v1/tasks/task_nope"),
        client.get("/v1/tasks", headers=auth("vg_" + "x" * 43)),  # an unknown key
        client.get("/v1/tasks", headers={"Authorization": "Basic " + other}),
        client.get("/v1/tasks"),
        client.get("/v1/models"),
        client.get("/admin/keys", headers=auth("wrong-admin")),
        client.get("/admin/keys", headers=auth(ADMIN_TOKEN)),  # lists keys: never their secrets
        client.get("/metrics", headers=auth(METRICS_TOKEN)),
        client.get("/metrics", headers=auth(other)),
        client.get("/files/results/../../etc/passwd"),
    ):
        seen.record(response)
    return [wait_terminal(client, task_id, seen) for task_id in task_ids]


def test_no_secret_in_logs_responses_or_task_data(
    tmp_path: Path, image_server: ImageServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen = Transcript()
    upstream = fake_vidu.create_app(
        FakeViduConfig(
            api_key=UPSTREAM_KEY, time_factor=100.0, processing_base_s=20.0, processing_per_video_s=2.0
        )
    )
    secrets: list[str] = [UPSTREAM_KEY, WRONG_UPSTREAM_KEY, ADMIN_TOKEN, METRICS_TOKEN]
    stored: list[str] = []
    with serving(upstream) as base:
        with gateway(tmp_path / "good", base, UPSTREAM_KEY) as (client, database, mine, other):
            secrets += [mine, other]
            done, failed_fetch = exercise(client, image_server, other, seen)
            stored.append(stored_text(database))
        with gateway(tmp_path / "wrong", base, WRONG_UPSTREAM_KEY) as (client, database, mine, other):
            secrets += [mine, other]
            auth_failed, _ = exercise(client, image_server, other, seen)
            stored.append(stored_text(database))
    # The runs did what they should, so the search below covers real outcomes.
    assert done["status"] == "completed", done
    assert failed_fetch["error"]["code"] == "image_fetch_failed"
    assert auth_failed["error"]["code"] == "upstream_auth_failed"
    assert len(seen.texts) > 30 and caplog.records

    logs = "\n".join(f"{r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in caplog.records) + caplog.text
    for secret in secrets:
        for where, text in (
            ("logs", logs),
            ("responses", "\n".join(seen.texts)),
            ("database", "\n".join(stored)),
        ):
            assert secret not in text, f"a secret ({secret[:6]}...) appears in the {where}"
            # Not even a large part of it (a key cut in half still leaks).
            assert secret[-16:] not in text, f"part of a secret ({secret[:6]}...) appears in the {where}"


# --- body size limits -------------------------------------------------------------------------------


def test_submit_body_over_one_mib_is_413(client: TestClient) -> None:
    big = b'{"model": "pixverse-v6", "prompt": "' + b"a" * (1024 * 1024) + b'"}'
    response = client.post(
        "/v1/videos/generations", content=big, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == 413


def test_streamed_body_over_the_limit_is_413(client: TestClient) -> None:
    """Without a Content-Length (chunked), the count runs while reading."""

    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b"a" * 65536  # 2.5 MiB in all

    response = client.post(
        "/v1/videos/generations", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["error"]["type"]


def test_lying_content_length_is_refused_before_reading(client: TestClient) -> None:
    response = client.post(
        "/v1/videos/generations",
        content=b"{}",
        headers={"Content-Type": "application/json", "Content-Length": str(10**9)},
    )
    assert response.status_code in (400, 413)


# --- CORS -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/tasks", "/v1/models", "/v1/videos/generations"])
def test_no_cross_origin_access(client: TestClient, path: str) -> None:
    """vidgate sends no CORS headers: a page on another origin cannot read API responses with the
    caller's key (keys are bearer tokens, never cookies, so there is no ambient credential either)."""
    preflight = client.options(
        path,
        headers={
            "Origin": "https://evil.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-credentials" not in preflight.headers
    plain = client.get(path, headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in plain.headers
