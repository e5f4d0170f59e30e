"""Benchmark (b): `GET /v1/tasks/{id}` requests per second against a bare Starlette JSON endpoint.

Both servers run in their own process under the same uvicorn settings (one process, httptools,
no access log); one load generator in a third process drives each in turn. Target ratio >= 0.5.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SECONDS = float(os.environ.get("VIDGATE_BENCH_SECONDS", "5"))
CONNECTIONS = 32

_BARE_APP = """
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

BODY = {body}

async def task(request):
    return JSONResponse(BODY)

app = Starlette(routes=[Route("/v1/tasks/{{task_id}}", task)])
"""

_VIDGATE_APP = """
from vidgate.api import create_app
from vidgate.config import Settings
app = create_app(Settings(data_dir={data_dir!r}), run_worker=False)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(module_dir: Path, module: str, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": f"{module_dir}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        f"{module}:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
        "--http",
        "httptools",
        "--loop",
        "uvloop",
    ]
    proc = subprocess.Popen(cmd, env=env)
    deadline = time.time() + 30
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{module} did not start")


def _load(port: int, path: str, headers: list[str]) -> dict[str, object]:
    out = subprocess.run(
        [
            sys.executable,
            str(HERE / "loadgen.py"),
            "127.0.0.1",
            str(port),
            path,
            str(SECONDS),
            str(CONNECTIONS),
            *headers,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(out.stdout))


def _prepare(data_dir: Path) -> tuple[str, str, dict[str, object]]:
    """A key and a completed task in a fresh SQLite database; returns (key, task id, task body)."""
    from vidgate import catalog, keys, leases, migrations, tasks
    from vidgate.api.views import task_view
    from vidgate.db import Database
    from vidgate.signing import Signer, load_secret

    data_dir.mkdir(parents=True)
    database = Database(f"sqlite:///{data_dir / 'vidgate.db'}")
    migrations.upgrade(database)
    record, secret = keys.create(database, "bench")
    body = {"model": "pixverse-v6", "prompt": "benchmark", "duration": 5}
    row, _ = tasks.create(
        database,
        key_id=record.id,
        request=catalog.parse(body),
        body=body,
        provider="local",
        estimated_time=10,
    )
    (claimed,) = leases.claim(
        database, owner="bench", providers=frozenset({"local"}), limit=1, lease_seconds=60
    )
    result = {
        "video": f"results/{row.id}/video.mp4",
        "thumbnail": f"results/{row.id}/thumbnail.jpg",
        "width": 960,
        "height": 540,
        "duration": 5.0,
        "fps": 24,
        "has_audio": False,
    }
    leases.complete(database, leases.lease_of(claimed), result, ttl_seconds=86400)
    final = tasks.get(database, row.id)
    view = task_view(final, signer=Signer(load_secret(database, "")), base_url="http://127.0.0.1")
    database.dispose()
    return secret, row.id, {"code": 200, "data": view}


def run() -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        secret, task_id, body = _prepare(tmp_path / "data")
        (tmp_path / "bare_app.py").write_text(_BARE_APP.format(body=repr(body)))
        (tmp_path / "vidgate_app.py").write_text(_VIDGATE_APP.format(data_dir=str(tmp_path / "data")))
        path = f"/v1/tasks/{task_id}"
        figures: dict[str, dict[str, object]] = {}
        for name, module, headers in (
            ("bare_starlette", "bare_app", []),
            ("vidgate_get_task", "vidgate_app", [f"Authorization: Bearer {secret}"]),
        ):
            port = _free_port()
            proc = _serve(tmp_path, module, port)
            try:
                figures[name] = _load(port, path, headers)
            finally:
                proc.terminate()
                proc.wait(timeout=10)
    bare = float(figures["bare_starlette"]["rps"])  # type: ignore[arg-type]
    ours = float(figures["vidgate_get_task"]["rps"])  # type: ignore[arg-type]
    ratio = ours / bare if bare else 0.0
    return {
        "bare_rps": round(bare, 1),
        "get_task_rps": round(ours, 1),
        "ratio": round(ratio, 3),
        "target_ratio": 0.5,
        "errors": int(figures["vidgate_get_task"]["errors"]),  # type: ignore[call-overload]
        "pass": ratio >= 0.5 and not figures["vidgate_get_task"]["errors"],
        "seconds_each": SECONDS,
        "connections": CONNECTIONS,
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
