"""`kill -9` of `vidgate serve` in the middle of a render loses nothing: after a restart the task
completes, once."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from vidgate import db
from vidgate.db import Database

from .conftest import download, make_server, probe, run_cli, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _events(data_dir: Path, task_id: str) -> list[tuple[str | None, str]]:
    database = Database(f"sqlite:///{data_dir / 'vidgate.db'}")
    try:
        with database.read() as conn:
            rows = conn.execute(
                sa.select(db.task_events.c.from_status, db.task_events.c.to_status)
                .where(db.task_events.c.task_id == task_id)
                .order_by(db.task_events.c.id)
            ).all()
        return [(r[0], r[1]) for r in rows]
    finally:
        database.dispose()


def test_kill_9_mid_render_then_restart_completes_once(tmp_path: Path) -> None:
    # The slower preset and a long 1080p clip leave seconds to kill the process mid-render.
    server = make_server(tmp_path, VIDGATE_LOCAL_PRESET="veryfast", VIDGATE_LEASE_SECONDS="3")
    server.start()
    body = {
        "model": "pixverse-v6",
        "prompt": "a long crossing",
        "duration": 15,
        "resolution": "1080p",
        "audio": True,
    }
    with server.client() as client:
        task_id = client.post("/v1/videos/generations", json=body).json()["data"][0]["task_id"]
        deadline = time.time() + 60
        while time.time() < deadline:
            task = client.get(f"/v1/tasks/{task_id}").json()["data"]
            if task["status"] == "processing" and task["progress"] >= 10:
                break
            time.sleep(0.05)
        assert task["status"] == "processing", task
    server.kill9()
    assert not list((server.data_dir / "files" / "results").glob(f"{task_id}/video.mp4"))

    # A second process on the same host sees the dead owner and takes the task over.
    server.start()
    try:
        with server.client() as client:
            task = wait_for(client, task_id, timeout=180)
            assert task["status"] == "completed", task
            facts = probe(download(client, task["result"]["videos"][0]["url"][0], tmp_path / "out.mp4"))
        assert (facts.width, facts.height, facts.frames, facts.audio) == (1920, 1080, 360, "aac")
        events = _events(server.data_dir, task_id)
        assert events.count(("processing", "completed")) == 1
        assert ("processing", "processing") in events  # the takeover by the restarted worker
    finally:
        server.stop()


def test_quickstart_prints_a_working_key_and_curl(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    server.extra_args = ["--quickstart"]
    server.start()
    try:
        log = server.log.read_text()
        key = next(line.strip() for line in log.splitlines() if line.strip().startswith("vg_"))
        assert f"export VIDGATE_API_KEY={key}" in log
        assert "curl -s http://127.0.0.1:" in log and "/v1/videos/generations" in log
        assert "Or in the browser: open http://127.0.0.1:" in log
        assert (
            httpx.get(f"{server.base}/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code
            == 200
        )
        # The same key is offered again on the next start, not a new one each time.
        server.stop()
        server.start()
        assert server.log.read_text().count(key) >= 4
    finally:
        server.stop()


def test_keys_commands(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    listed = run_cli(server.env, "keys", "list")
    assert listed.returncode == 0 and "e2e" in listed.stdout and server.key not in listed.stdout
    database = Database(f"sqlite:///{server.data_dir / 'vidgate.db'}")
    with database.read() as conn:
        key_id = conn.execute(sa.select(db.api_keys.c.id)).scalar_one()
    database.dispose()
    assert run_cli(server.env, "keys", "revoke", key_id).returncode == 0
    assert run_cli(server.env, "keys", "revoke", key_id).returncode == 1
    server.start()
    try:
        assert (
            httpx.get(
                f"{server.base}/v1/models", headers={"Authorization": f"Bearer {server.key}"}
            ).status_code
            == 401
        )
    finally:
        server.stop()
