"""Garbage collection on both backends: expired uploads and results go, live ones and task rows
stay, stray scratch entries go; idempotent; one of many concurrent runs does the work; workers run
it periodically; `vidgate gc` runs it on demand."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from vidgate import catalog, db, gc, keys, leases, tasks
from vidgate.api import create_app
from vidgate.api.views import task_view
from vidgate.cli import app as cli_app
from vidgate.config import Settings
from vidgate.db import Database
from vidgate.signing import Signer
from vidgate.storage import Storage, open_storage

from .conftest import auth
from .storage_harness import S3Server, migrated, s3_server

BODY = {"model": "pixverse-v6", "prompt": "gc"}
DAY = 86_400


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


@dataclass
class Place:
    settings: Settings
    database: Database
    storage: Storage
    signer: Signer
    key_id: str
    api_key: str

    def upload(self, *, expires_in: float) -> str:
        """An upload (file + row) expiring `expires_in` seconds from now; its storage key."""
        upload_id = f"upl_{uuid.uuid4().hex[:12]}"
        storage_key = f"uploads/{upload_id}/ref.png"
        self.storage.put_bytes(storage_key, b"\x89PNG fake")
        now = time.time()
        with self.database.write() as conn:
            conn.execute(
                db.uploads.insert().values(
                    id=upload_id,
                    key_id=self.key_id,
                    storage_key=storage_key,
                    filename="ref.png",
                    content_type="image/png",
                    bytes=9,
                    created_at=now,
                    expires_at=now + expires_in,
                )
            )
        return storage_key

    def upload_rows(self) -> set[str]:
        with self.database.read() as conn:
            return set(conn.execute(sa.select(db.uploads.c.storage_key)).scalars())

    def completed_task(self, *, ttl: float) -> tuple[str, list[str]]:
        """A completed task whose result files are stored, expiring `ttl` seconds from now."""
        row, _ = tasks.create(
            self.database,
            key_id=self.key_id,
            request=catalog.parse(BODY),
            body=BODY,
            provider="local",
            estimated_time=5,
        )
        (claimed,) = [
            r
            for r in leases.claim(
                self.database, owner="gc-test", providers=frozenset({"local"}), limit=50, lease_seconds=30
            )
            if r.id == row.id
        ]
        files = [f"results/{row.id}/video.mp4", f"results/{row.id}/thumbnail.jpg"]
        for key in files:
            self.storage.put_bytes(key, b"media of " + row.id.encode())
        result = {"video": files[0], "thumbnail": files[1], "width": 640, "height": 360, "duration": 1}
        leases.complete(self.database, leases.lease_of(claimed), result, ttl_seconds=int(ttl))
        return row.id, files


def _place(settings: Settings) -> Place:
    database = migrated(settings)
    record, secret = keys.create(database, "gc")
    signer = Signer(b"gc-test-secret")
    storage = open_storage(settings, signer)
    return Place(settings, database, storage, signer.with_links(storage), record.id, secret)


@pytest.fixture(params=["local", "s3"])
def place(request: pytest.FixtureRequest, tmp_path: Path, s3: S3Server) -> Iterator[Place]:
    data_dir = tmp_path / "data"
    if request.param == "s3":
        settings = s3.settings(data_dir, s3.new_bucket())
    else:
        settings = Settings(data_dir=data_dir, poll_interval_seconds=0.05, local_preset="ultrafast")
    built = _place(settings)
    yield built
    built.database.dispose()


def _stale(path: Path, age: float) -> None:
    when = time.time() - age
    os.utime(path, (when, when))


def test_gc_removes_expired_and_keeps_live(place: Place) -> None:
    storage = place.storage
    old_upload = place.upload(expires_in=-10)
    live_upload = place.upload(expires_in=3600)
    old_task, old_files = place.completed_task(ttl=-10)
    live_task, live_files = place.completed_task(ttl=3600)
    scratch = storage.scratch_dir()
    stray = scratch / "task_crashed-3"
    stray.mkdir()
    (stray / "video.mp4").write_bytes(b"half")
    _stale(stray, 2 * DAY)
    busy = scratch / "task_running-1"
    busy.mkdir()

    report = gc.collect(place.database, storage)
    assert (report.uploads, report.results, report.tasks, report.scratch) == (1, 2, 1, 1)
    assert not report.skipped
    assert not storage.exists(old_upload) and storage.exists(live_upload)
    assert not any(storage.exists(k) for k in old_files)
    assert all(storage.exists(k) for k in live_files)
    assert place.upload_rows() == {live_upload}
    assert not stray.exists() and busy.exists()

    # Task rows stay with their facts; an expired one shows no link.
    old_row, live_row = tasks.get(place.database, old_task), tasks.get(place.database, live_task)
    assert old_row is not None and live_row is not None and old_row.status == "completed"
    old_view = task_view(old_row, signer=place.signer, base_url="http://vidgate.test")
    assert old_view["result"]["videos"][0]["url"] == []
    assert old_view["result"]["videos"][0]["width"] == 640
    assert "thumbnail_url" not in old_view["result"]
    live_view = task_view(live_row, signer=place.signer, base_url="http://vidgate.test")
    assert live_view["result"]["videos"][0]["url"] == [
        storage.url(live_files[0], int(live_row.expires_at), "http://vidgate.test")
    ]
    assert live_view["result"]["thumbnail_url"]

    # Idempotent: nothing left to remove.
    again = gc.collect(place.database, storage)
    assert again.removed == 0 and again.tasks == 0

    # Results expiring after a run are found by the next one (the watermark never skips them).
    soon_task, soon_files = place.completed_task(ttl=1)
    time.sleep(1.2)
    later = gc.collect(place.database, storage)
    assert (later.results, later.tasks) == (2, 1)
    assert not any(storage.exists(k) for k in soon_files)
    assert tasks.get(place.database, soon_task) is not None


def test_expired_result_shows_no_url_over_the_api(place: Place) -> None:
    task_id, _ = place.completed_task(ttl=3600)
    with TestClient(create_app(place.settings, run_worker=False), headers=auth(place.api_key)) as client:
        video = client.get(f"/v1/tasks/{task_id}").json()["data"]["result"]["videos"][0]
        assert len(video["url"]) == 1
        with place.database.write() as conn:
            conn.execute(db.tasks.update().where(db.tasks.c.id == task_id).values(expires_at=time.time() - 1))
        data = client.get(f"/v1/tasks/{task_id}").json()["data"]
        assert data["status"] == "completed" and data["result"]["videos"][0]["url"] == []
        assert data["result"]["videos"][0]["width"] == 640
        assert "thumbnail_url" not in data["result"]


def test_worker_collects_periodically(place: Place) -> None:
    settings = place.settings.model_copy(update={"gc_interval_seconds": 0.2})
    expired = place.upload(expires_in=-1)
    live = place.upload(expires_in=3600)
    with TestClient(create_app(settings, run_worker=True), headers=auth(place.api_key)):
        deadline = time.monotonic() + 15
        while place.storage.exists(expired) or expired in place.upload_rows():
            assert time.monotonic() < deadline, "the worker did not collect the expired upload"
            time.sleep(0.05)
        # Runs go on every interval (claimed at most once per half interval across workers).
        again = place.upload(expires_in=-1)
        while place.storage.exists(again):
            assert time.monotonic() < deadline, "the worker did not collect again"
            time.sleep(0.05)
    assert place.storage.exists(live) and place.upload_rows() == {live}


def test_one_of_many_concurrent_runs_does_the_work(
    any_database: Database, settings: Settings, tmp_path: Path
) -> None:
    """Workers started together: every run succeeds, one does the database part, each file goes once."""
    storage = open_storage(settings, Signer(b"x"))
    key_id = keys.create(any_database, "gc")[0].id
    place = Place(settings, any_database, storage, Signer(b"x"), key_id, "")
    expired = [place.upload(expires_in=-5) for _ in range(20)]
    reports: list[gc.Report] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def run() -> None:
        try:
            barrier.wait()
            reports.append(gc.collect(any_database, storage, min_interval=3600))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sum(not r.skipped for r in reports) == 1
    assert sum(r.uploads for r in reports) == 20
    assert not any(storage.exists(k) for k in expired) and place.upload_rows() == set()
    # On demand (`vidgate gc`) runs whatever the interval.
    assert not gc.collect(any_database, storage).skipped


def test_cli_gc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = tmp_path / "data"
    settings = Settings(data_dir=data_dir)
    place = _place(settings)
    expired = place.upload(expires_in=-1)
    _, files = place.completed_task(ttl=-1)
    place.database.dispose()
    monkeypatch.setenv("VIDGATE_DATA_DIR", str(data_dir))
    result = CliRunner().invoke(cli_app, ["gc"])
    assert result.exit_code == 0, result.output
    assert "removed 1 expired upload(s), 2 result file(s) of 1 expired task(s)" in result.output
    assert not place.storage.exists(expired) and not any(place.storage.exists(k) for k in files)
    again = CliRunner().invoke(cli_app, ["gc"])
    assert "removed 0 expired upload(s), 0 result file(s)" in again.output
