"""Shared fixtures: a real SQLite file per test, migrated; keys; an in-process app; an image server."""

from __future__ import annotations

import http.server
import io
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy.pool import NullPool

from vidgate import keys, migrations
from vidgate.api import create_app
from vidgate.config import Settings
from vidgate.db import Database, normalize_url


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        allow_private_urls=True,
        poll_interval_seconds=0.05,
        lease_seconds=5,
        local_preset="ultrafast",
    )


@pytest.fixture
def database(settings: Settings) -> Iterator[Database]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.effective_database_url)
    migrations.upgrade(db)
    yield db
    db.dispose()


PG_ADMIN_URL = os.environ.get("VIDGATE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextmanager
def fresh_postgres() -> Iterator[str]:
    """A new, empty PostgreSQL database on the local server, dropped afterwards."""
    name = f"vidgate_test_{uuid.uuid4().hex[:12]}"
    # No pool: a pooled connection would not survive a server restart in a test.
    admin = sa.create_engine(normalize_url(PG_ADMIN_URL), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:  # pragma: no cover - CI starts PostgreSQL first
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}")
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def pg() -> Iterator[Database]:
    """A fresh, migrated PostgreSQL database."""
    with fresh_postgres() as url:
        database = Database(url)
        migrations.upgrade(database)
        yield database
        database.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_database(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Database]:
    """The same test on a SQLite file and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        url = settings.effective_database_url
        db = Database(url)
        migrations.upgrade(db)
        yield db
        db.dispose()
        return
    with fresh_postgres() as url:
        db = Database(url)
        migrations.upgrade(db)
        yield db
        db.dispose()


@pytest.fixture
def api_key(database: Database) -> str:
    return keys.create(database, "test")[1]


@pytest.fixture
def other_key(database: Database) -> str:
    return keys.create(database, "other")[1]


def auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def client(settings: Settings, database: Database, api_key: str) -> Iterator[TestClient]:
    """The API without a worker: tasks stay pending unless a test runs one."""
    with TestClient(create_app(settings, run_worker=False), headers=auth(api_key)) as c:
        yield c


@pytest.fixture
def worker_client(settings: Settings, database: Database, api_key: str) -> Iterator[TestClient]:
    """The API with its in-process worker, as `vidgate serve` runs it."""
    with TestClient(create_app(settings, run_worker=True), headers=auth(api_key)) as c:
        yield c


def wait_finished(
    client: TestClient, task_id: str, *, timeout: float = 60, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """Poll `GET /v1/tasks/{id}` every 50 ms until the task is completed, failed or cancelled."""
    deadline = time.monotonic() + timeout
    while True:
        data: dict[str, Any] = client.get(f"/v1/tasks/{task_id}", headers=headers).json()["data"]
        if data["status"] in ("completed", "failed", "cancelled"):
            return data
        if time.monotonic() >= deadline:
            raise AssertionError(f"task {task_id} did not finish in {timeout} s: {data}")
        time.sleep(0.05)


def png_bytes(color: tuple[int, int, int], size: tuple[int, int] = (256, 256), fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=fmt)
    return buffer.getvalue()


class ImageServer:
    """A real HTTP server on loopback serving images from a dict, counting hits per path."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        self.hits: dict[str, int] = {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                if self.path not in server.files:
                    self.send_response(404)
                    self.end_headers()
                    return
                data, content_type = server.files[self.path]
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                return None

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def add(self, path: str, data: bytes, content_type: str = "image/png") -> str:
        self.files[path] = (data, content_type)
        return self.base + path

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def image_server() -> Iterator[ImageServer]:
    server = ImageServer()
    yield server
    server.close()
