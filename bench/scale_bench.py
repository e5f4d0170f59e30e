"""Benchmark (d): scale-out figures, PostgreSQL against SQLite, measured in one run.

- submits per second through `POST /v1/videos/generations` (one API process per database, and two
  API processes on PostgreSQL, the production shape), driven by the raw-socket load generator;
- claims per second (`leases.claim`, one task per claim, four claimers) on each database;
- task throughput with 1, 2 and 4 `vidgate worker` processes on PostgreSQL, on a job mix that is not
  CPU-bound: relays to a fake Vidu whose every response takes LATENCY seconds, with few ticks per
  worker, so a worker's capacity is its concurrency over the upstream's latency.

Targets: PostgreSQL submit throughput >= 500/s; 4 workers >= 3x the throughput of 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PG_ADMIN = os.environ.get("VIDGATE_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SECONDS = float(os.environ.get("VIDGATE_BENCH_SECONDS", "5"))
SCALE_TASKS = int(os.environ.get("VIDGATE_BENCH_SCALE_TASKS", "60"))
LATENCY = 0.5
TICKS_PER_WORKER = 2
#: Client connections submitting at once (PostgreSQL commits concurrent transactions together).
CONCURRENCY = int(os.environ.get("VIDGATE_BENCH_SUBMIT_CONNECTIONS", "16"))

sys.path.insert(0, str(HERE))
from api_bench import _free_port, _serve  # noqa: E402


@contextmanager
def _postgres() -> Iterator[str]:
    import sqlalchemy as sa

    from vidgate.db import normalize_url

    name = f"vidgate_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(normalize_url(PG_ADMIN), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _prepare(url: str) -> tuple[Any, str, str]:
    from vidgate import keys, migrations
    from vidgate.db import Database

    database = Database(url)
    migrations.upgrade(database)
    record, secret = keys.create(database, "bench")
    return database, record.id, secret


_APP = """
from vidgate.api import create_app
from vidgate.config import Settings
app = create_app(Settings(data_dir={data_dir!r}, database_url={url!r}), run_worker=False)
"""


def _submits(url: str, tmp: Path, processes: int) -> float:
    database, _, secret = _prepare(url)
    database.dispose()
    module = f"submit_app_{uuid.uuid4().hex[:6]}"
    (tmp / f"{module}.py").write_text(_APP.format(data_dir=str(tmp / "data"), url=url))
    body = json.dumps({"model": "pixverse-v6", "prompt": "bench", "duration": 5})
    servers = []
    try:
        ports = [_free_port() for _ in range(processes)]
        servers = [_serve(tmp, module, port) for port in ports]
        env = {**os.environ, "LOADGEN_BODY": body}
        gens = [
            subprocess.Popen(
                [
                    sys.executable,
                    str(HERE / "loadgen.py"),
                    "127.0.0.1",
                    str(port),
                    "/v1/videos/generations",
                    str(SECONDS),
                    str(CONCURRENCY // processes),
                    f"Authorization: Bearer {secret}",
                ],
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
            for port in ports
        ]
        results = [json.loads(g.communicate()[0]) for g in gens]
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=10)
    return sum(float(r["rps"]) for r in results)


def _claims(url: str) -> float:
    from vidgate import catalog, leases, tasks

    database, key_id, _ = _prepare(url)
    body = {"model": "pixverse-v6", "prompt": "bench"}
    request = catalog.parse(body)
    count = 1200
    for _ in range(count):
        tasks.create(database, key_id=key_id, request=request, body=body, provider="local", estimated_time=5)
    done = [0]
    lock = threading.Lock()

    def claimer(name: str) -> None:
        while True:
            rows = leases.claim(
                database, owner=name, providers=frozenset({"local"}), limit=1, lease_seconds=60
            )
            if not rows:
                return
            with lock:
                done[0] += 1

    start = time.perf_counter()
    threads = [threading.Thread(target=claimer, args=(f"c{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    database.dispose()
    return done[0] / elapsed


def _stored_image(database: Any, data_dir: Path) -> str:
    """A reference image in vidgate's own storage, by its signed URL: workers read it, no fetch."""
    import io

    from PIL import Image

    from vidgate.signing import Signer, load_secret
    from vidgate.storage import LocalStorage

    png = io.BytesIO()
    Image.new("RGB", (256, 256), (40, 120, 200)).save(png, format="PNG")
    LocalStorage(data_dir / "files").put_bytes("uploads/bench/ref.png", png.getvalue())
    return Signer(load_secret(database, "")).url(
        "http://127.0.0.1:1", "uploads/bench/ref.png", int(time.time()) + 86400
    )


def _throughput(url: str, workers: int, tmp: Path) -> float:
    import sqlalchemy as sa

    from vidgate import catalog, db, tasks
    from vidgate.testing import fake_vidu
    from vidgate.testing.fake_serve import serving
    from vidgate.testing.fake_vidu_spec import FakeViduConfig

    database, key_id, _ = _prepare(url)
    config = FakeViduConfig(
        time_factor=1.0,
        concurrency=10_000,
        created_s=0.0,
        queueing_s=0.0,
        processing_base_s=0.2,
        processing_per_video_s=0.0,
        validate_images=False,
        slow=[{"delay_s": LATENCY, "probability": 1.0, "endpoints": ["submit", "poll"]}],
    )
    image = _stored_image(database, tmp / "data")
    body = {"model": "viduq3-mix", "prompt": "scale", "image_urls": [image], "duration": 1}
    request = catalog.parse(body)
    app = fake_vidu.create_app(config)
    with serving(app) as upstream:
        env = {
            **os.environ,
            "VIDGATE_DATA_DIR": str(tmp / "data"),
            "VIDGATE_DATABASE_URL": url,
            "VIDGATE_VIDU_API_KEY": config.api_key,
            "VIDGATE_VIDU_BASE_URL": upstream,
            "VIDGATE_VIDU_MAX_IN_FLIGHT": "10000",
            "VIDGATE_RELAY_CONCURRENCY": str(TICKS_PER_WORKER),
            "VIDGATE_UPSTREAM_POLL_SECONDS": "0.3",
            "VIDGATE_POLL_INTERVAL_SECONDS": "0.05",
            "VIDGATE_ROUTES": json.dumps({"viduq3-mix": ["vidu"]}),
        }
        logs = [tmp / f"worker-{workers}-{i}.log" for i in range(workers)]
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "vidgate", "worker"],
                env=env,
                stdout=log.open("wb"),
                stderr=subprocess.STDOUT,
            )
            for log in logs
        ]
        # Throughput, not start-up: the clock starts once every worker is running.
        ready_by = time.perf_counter() + 60
        while not all("started" in log.read_text() for log in logs) and time.perf_counter() < ready_by:
            time.sleep(0.1)
        for _ in range(SCALE_TASKS):
            tasks.create(
                database, key_id=key_id, request=request, body=body, provider="vidu", estimated_time=5
            )
        start = time.perf_counter()
        try:
            while True:
                with database.read() as conn:
                    left = conn.execute(
                        sa.select(sa.func.count())
                        .select_from(db.tasks)
                        .where(db.tasks.c.status.in_(["pending", "processing"]))
                    ).scalar_one()
                if left == 0 or time.perf_counter() - start > 300:
                    break
                time.sleep(0.2)
            elapsed = time.perf_counter() - start
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=30)
    database.dispose()
    return SCALE_TASKS / elapsed


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="vidgate-scale-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "data").mkdir()
        sqlite_url = f"sqlite:///{tmp / 'data' / 'bench.db'}"
        figures: dict[str, Any] = {"submits_per_s_sqlite": round(_submits(sqlite_url, tmp, 1), 1)}
        with _postgres() as url:
            figures["submits_per_s_postgresql"] = round(_submits(url, tmp, 1), 1)
        with _postgres() as url:
            figures["submits_per_s_postgresql_2_api"] = round(_submits(url, tmp, 2), 1)
        figures["claims_per_s_sqlite"] = round(_claims(f"sqlite:///{tmp / 'data' / 'claims.db'}"), 1)
        with _postgres() as url:
            figures["claims_per_s_postgresql"] = round(_claims(url), 1)
        for workers in (1, 2, 4):
            with _postgres() as url:
                figures[f"tasks_per_s_{workers}_workers"] = round(_throughput(url, workers, tmp), 2)
    ratio = figures["tasks_per_s_4_workers"] / figures["tasks_per_s_1_workers"]
    best_pg = max(figures["submits_per_s_postgresql"], figures["submits_per_s_postgresql_2_api"])
    figures |= {
        "scaling_4_vs_1": round(ratio, 2),
        "target_scaling": 3.0,
        "target_pg_submits_per_s": 500,
        "upstream_latency_s": LATENCY,
        "ticks_per_worker": TICKS_PER_WORKER,
        "pass": ratio >= 3.0 and best_pg >= 500,
    }
    return figures


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
