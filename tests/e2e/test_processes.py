"""The scale-out shape on one machine: `vidgate serve --no-worker` plus separate `vidgate worker`
processes sharing one database; a worker killed mid-task loses nothing."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from vidgate import db
from vidgate.db import Database

from .conftest import VIDGATE, make_server, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([*VIDGATE, "worker"], env=env, stdout=out, stderr=subprocess.STDOUT)


def test_api_and_workers_in_separate_processes(tmp_path: Path) -> None:
    server = make_server(tmp_path, VIDGATE_LEASE_SECONDS="2", VIDGATE_LOCAL_PRESET="veryfast")
    server.extra_args = ["--no-worker"]
    server.start()
    workers = [_worker(server.env, tmp_path / f"worker{i}.log") for i in range(2)]
    try:
        with server.client() as client:
            long_body = {"model": "pixverse-v6", "prompt": "long", "duration": 12, "resolution": "1080p"}
            long_id = client.post("/v1/videos/generations", json=long_body).json()["data"][0]["task_id"]
            short = [
                client.post(
                    "/v1/videos/generations",
                    json={
                        "model": "pixverse-v6",
                        "prompt": f"short {i}",
                        "duration": 1,
                        "resolution": "360p",
                    },
                ).json()["data"][0]["task_id"]
                for i in range(6)
            ]
            # Kill whichever worker holds the long task, mid-render.
            deadline = time.time() + 60
            while client.get(f"/v1/tasks/{long_id}").json()["data"]["progress"] < 10:
                assert time.time() < deadline
                time.sleep(0.05)
            for proc in workers:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
            survivor = _worker(server.env, tmp_path / "worker-late.log")
            workers.append(survivor)
            for task_id in [long_id, *short]:
                assert wait_for(client, task_id, timeout=180)["status"] == "completed", task_id
        # The API process did no task work: every claim came from a worker process.
        assert server.proc is not None
        database = Database(f"sqlite:///{server.data_dir / 'vidgate.db'}")
        with database.read() as conn:
            owners = conn.execute(sa.select(db.task_events.c.worker).distinct()).scalars().all()
        database.dispose()
        pids = {int(o.split(":")[1]) for o in owners if o}
        assert pids and server.proc.pid not in pids
        assert pids <= {p.pid for p in workers}
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
        server.stop()


def test_worker_stops_gracefully_on_sigterm(tmp_path: Path) -> None:
    server = make_server(tmp_path, VIDGATE_LOCAL_PRESET="veryfast")
    server.extra_args = ["--no-worker"]
    server.start()
    worker = _worker(server.env, tmp_path / "worker.log")
    try:
        with server.client() as client:
            body = {"model": "pixverse-v6", "prompt": "long", "duration": 15, "resolution": "1080p"}
            task_id = client.post("/v1/videos/generations", json=body).json()["data"][0]["task_id"]
            deadline = time.time() + 60
            while client.get(f"/v1/tasks/{task_id}").json()["data"]["status"] != "processing":
                assert time.time() < deadline
                time.sleep(0.05)
            started = time.time()
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=30) == 0
            assert time.time() - started < 15
            # Handed back, not failed: the next worker picks it up at once (no lease to wait out).
            task = client.get(f"/v1/tasks/{task_id}").json()["data"]
            assert task["status"] in ("pending", "processing") and "error" not in task
            worker = _worker(server.env, tmp_path / "worker2.log")
            assert wait_for(client, task_id, timeout=120)["status"] == "completed"
    finally:
        if worker.poll() is None:
            worker.terminate()
            worker.wait(timeout=30)
        server.stop()
