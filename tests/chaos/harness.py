"""The chaos run: API and worker processes on one database, a fake Vidu counting jobs, `kill -9` of
random workers while the tasks run (and, on PostgreSQL, one restart of the database server), then
the invariants of issue 4 checked on what is left: every task terminal, one upstream job per task
that reached the upstream, no task billed twice, every hold captured or released exactly once."""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from PIL import Image
from sqlalchemy.pool import NullPool

from tests.e2e.conftest import VIDGATE, Server, free_port
from vidgate import catalog, db, keys, ledger, migrations, prices, tasks
from vidgate.db import Database, normalize_url
from vidgate.signing import Signer, load_secret
from vidgate.storage import LocalStorage
from vidgate.testing import fake_vidu
from vidgate.testing.fake_serve import serving
from vidgate.testing.fake_vidu_spec import FakeViduConfig

MODEL = "viduq3-mix"
RATE = Decimal("0.1")  # per second of video, 720p: a task of d seconds holds d / 10
TOP_UP = Decimal("100000")
TERMINAL = ("completed", "failed", "cancelled")
OPEN = ("pending", "processing")
SIX = Decimal("0.000001")


@dataclass
class ChaosConfig:
    tasks: int
    http_per_api: int
    api_processes: int
    workers: int
    kills: int
    restart_postgres: bool
    #: Seconds to wait for every task to be terminal, from the first worker start.
    limit_s: float
    seed: int = field(default_factory=lambda: random.randrange(1_000_000))


@dataclass
class ChaosReport:
    tasks: int = 0
    http_tasks: int = 0
    kills: int = 0
    restart_s: float | None = None
    restart_at_fraction: float | None = None
    run_s: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    upstream_jobs: int = 0
    reached_upstream: int = 0
    unexpected_exits: list[str] = field(default_factory=list)
    seed: int = 0
    #: Seconds from the first worker start: each kill, the restart, and failed tasks per 5 s.
    kill_times: list[float] = field(default_factory=list)
    restart_time: float | None = None
    failed_at: dict[int, int] = field(default_factory=dict)
    started: float = 0.0

    def line(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)


# --- PostgreSQL server control ----------------------------------------------------------------------


def _pg_version() -> str | None:
    if shutil.which("pg_ctlcluster") is None or not Path("/etc/postgresql").is_dir():
        return None
    versions = sorted(os.listdir("/etc/postgresql"))
    return versions[-1] if versions else None


def can_restart_postgres() -> bool:
    return _pg_version() is not None and os.geteuid() == 0


def pg_ready() -> bool:
    done = subprocess.run(
        ["pg_isready", "-h", "127.0.0.1", "-p", "5432"], capture_output=True, timeout=30, check=False
    )
    return done.returncode == 0


def _pg_ctl(action: str) -> None:
    version = _pg_version()
    assert version is not None
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
        capture_output=True,
        timeout=120,
        check=False,
    )


def _wait_pg(timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pg_ready():
            return True
        time.sleep(0.2)
    return False


def restart_postgres() -> float:
    """Restart the local cluster; returns the seconds until it accepts connections again."""
    started = time.time()
    _pg_ctl("restart")
    assert _wait_pg(120), "PostgreSQL did not come back after the restart"
    return time.time() - started


def ensure_postgres_up() -> None:
    """Leave PostgreSQL running whatever happened (called from finally blocks)."""
    if _pg_version() is None or _wait_pg(10):
        return
    _pg_ctl("start")
    _wait_pg(120)


PG_ADMIN_URL = os.environ.get("VIDGATE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextmanager
def fresh_postgres() -> Iterator[str]:
    """A new database on the local server, dropped afterwards. Unlike tests.conftest's, the admin
    engine keeps no connection open (NullPool): one from before the restart would be dead."""
    name = f"vidgate_chaos_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(normalize_url(PG_ADMIN_URL), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        ensure_postgres_up()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# --- processes ---------------------------------------------------------------------------------------


def _start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([*VIDGATE, "worker"], env=env, stdout=out, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- the run -----------------------------------------------------------------------------------------


def _reference_url(database: Database, data_dir: Path) -> str:
    """A stored image referenced through vidgate's own signed URL: workers read it from storage."""
    storage = LocalStorage(data_dir / "files")
    png = io.BytesIO()
    Image.new("RGB", (256, 256), (200, 80, 40)).save(png, format="PNG")
    storage.put_bytes("uploads/chaos/ref.png", png.getvalue())
    return Signer(load_secret(database, "")).url(
        "http://127.0.0.1:1", "uploads/chaos/ref.png", int(time.time()) + 86400
    )


def _body(i: int, url: str, rng: random.Random) -> dict[str, Any]:
    return {"model": MODEL, "prompt": f"chaos {i}", "image_urls": [url], "duration": rng.randint(1, 8)}


def _submit_http(server: Server, body: dict[str, Any]) -> str:
    """One submit, retried under the same Idempotency-Key while the database is away."""
    idem = uuid.uuid4().hex
    last = ""
    for _ in range(60):
        try:
            with server.client() as client:
                response = client.post("/v1/videos/generations", json=body, headers={"Idempotency-Key": idem})
            if response.status_code == 200:
                task_id: str = response.json()["data"][0]["task_id"]
                return task_id
            last = f"{response.status_code} {response.text[:300]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.5)
    raise AssertionError(f"submit through {server.base} kept failing: {last}")


def _count_open(database: Database) -> int | None:
    try:
        with database.read() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).select_from(db.tasks).where(db.tasks.c.status.in_(OPEN))
                ).scalar_one()
            )
    except sa.exc.DBAPIError:
        return None  # the database is restarting


def run_chaos(tmp: Path, database_url: str | None, cfg: ChaosConfig) -> ChaosReport:
    rng = random.Random(cfg.seed)
    report = ChaosReport(seed=cfg.seed)
    data_dir = tmp / "data"
    data_dir.mkdir(parents=True)
    url = database_url or f"sqlite:///{data_dir / 'vidgate.db'}"
    database = Database(url)
    migrations.upgrade(database)
    record, secret = keys.create(database, "chaos")
    ledger.top_up(database, record.id, TOP_UP, note="chaos")
    price_file = tmp / "prices.toml"
    price_file.write_text(f'[vidu."{MODEL}"]\nper_second = {{ "720p" = {RATE} }}\n')
    table = prices.load(price_file)
    image_url = _reference_url(database, data_dir)

    config = FakeViduConfig(
        time_factor=20.0,
        concurrency=cfg.tasks * 4,
        created_s=0.0,
        queueing_s=0.0,
        processing_base_s=20.0,  # 1.25 s to 3 s of real time for 1 s to 8 s of video
        processing_per_video_s=5.0,
        validate_images=False,
    )
    app = fake_vidu.create_app(config)
    fake = app.fake
    servers: list[Server] = []
    workers: list[subprocess.Popen[bytes]] = []
    all_workers: list[tuple[subprocess.Popen[bytes], Path]] = []
    killed: set[int] = set()
    try:
        with serving(app) as upstream:
            env = {
                **os.environ,
                "VIDGATE_DATA_DIR": str(data_dir),
                "VIDGATE_DATABASE_URL": database_url or "",
                "VIDGATE_VIDU_API_KEY": config.api_key,
                "VIDGATE_VIDU_BASE_URL": upstream,
                "VIDGATE_VIDU_MAX_IN_FLIGHT": "400",
                "VIDGATE_UPSTREAM_POLL_SECONDS": "0.3",
                "VIDGATE_UPSTREAM_TIMEOUT_SECONDS": "10",
                # 3 s leases expire under this box's full CPU load (heartbeats lag), and the tasks
                # end `worker_lost` with no worker dead; a dead worker's tasks are still taken
                # over at once by its replacement (same host: dead pids are detected).
                "VIDGATE_LEASE_SECONDS": os.environ.get("VIDGATE_CHAOS_LEASE_SECONDS", "10"),
                "VIDGATE_POLL_INTERVAL_SECONDS": "0.2",
                "VIDGATE_ROUTES": json.dumps({MODEL: ["vidu"]}),
                "VIDGATE_PRICES_FILE": str(price_file),
                "VIDGATE_ALLOW_PRIVATE_URLS": "true",
                "VIDGATE_GC_INTERVAL_SECONDS": "0",
                # Six processes at the default 10 + 20 pooled connections, plus each worker's
                # LISTEN connection and a killed worker's not yet closed ones, can pass the local
                # server's max_connections (100): size the pools as docs/deployment.md says.
                "VIDGATE_DATABASE_POOL_SIZE": "5",
                "VIDGATE_DATABASE_MAX_OVERFLOW": "7",
            }
            # The bulk, straight into the database (what the API would write, quote included).
            bulk = cfg.tasks - cfg.http_per_api * cfg.api_processes
            assert bulk >= 0
            for i in range(bulk):
                body = _body(i, image_url, rng)
                request = catalog.parse(body)
                tasks.create(
                    database,
                    key_id=record.id,
                    request=request,
                    body=body,
                    provider="vidu",
                    estimated_time=60,
                    cost=table.quote("vidu", request),
                    deadline_seconds=3600,
                )
            for i in range(cfg.api_processes):
                server = Server(
                    data_dir=data_dir,
                    port=free_port(),
                    env=env,
                    log=tmp / f"api{i}.log",
                    key=secret,
                    extra_args=["--no-worker"],
                )
                server.start()
                servers.append(server)

            def new_worker() -> None:
                log = tmp / f"worker{len(all_workers)}.log"
                proc = _start_worker(env, log)
                workers.append(proc)
                all_workers.append((proc, log))
                # Up before the chaos goes on: a process still migrating when the database
                # restarts exits (a supervisor would start it again), which is not what is tested.
                limit = time.time() + 60
                while "started (providers" not in log.read_text(errors="replace"):
                    assert proc.poll() is None and time.time() < limit, _tail(log)
                    time.sleep(0.1)

            for _ in range(cfg.workers):
                new_worker()
            started = report.started = time.time()
            http_ids: list[str] = []
            # Half the HTTP submits now, the other half after the restart (or halfway).
            first_half = cfg.http_per_api // 2
            for _n in range(first_half):
                for server in servers:
                    http_ids.append(_submit_http(server, _body(bulk + len(http_ids), image_url, rng)))

            kill_at = sorted(rng.uniform(0.03, 0.85) for _ in range(cfg.kills))
            restart_at = rng.uniform(0.3, 0.6) if cfg.restart_postgres else None
            second_half_sent = False
            deadline = started + cfg.limit_s
            while True:
                open_count = _count_open(database)
                total = bulk + len(http_ids)
                if open_count is not None:
                    done = (total - open_count) / cfg.tasks
                    if kill_at and done >= kill_at[0]:
                        kill_at.pop(0)
                        victim = rng.choice(workers)
                        # A random moment within the next half second, not just the poll tick.
                        time.sleep(rng.uniform(0, 0.5))
                        victim.send_signal(signal.SIGKILL)
                        victim.wait(timeout=10)
                        killed.add(victim.pid)
                        workers.remove(victim)
                        report.kills += 1
                        report.kill_times.append(round(time.time() - started, 1))
                        new_worker()
                    if restart_at is not None and report.restart_s is None and done >= restart_at:
                        report.restart_at_fraction = round(done, 3)
                        report.restart_time = round(time.time() - started, 1)
                        report.restart_s = round(restart_postgres(), 2)
                    if not second_half_sent and (
                        report.restart_s is not None or (restart_at is None and done >= 0.5)
                    ):
                        second_half_sent = True
                        for _n in range(first_half, cfg.http_per_api):
                            for server in servers:
                                http_ids.append(
                                    _submit_http(server, _body(bulk + len(http_ids), image_url, rng))
                                )
                    if open_count == 0 and second_half_sent and not kill_at:
                        break
                # A worker that dies without being killed is a bug: note it, replace it, go on.
                for proc in list(workers):
                    if proc.poll() is not None:
                        log = next(path for p, path in all_workers if p is proc)
                        report.unexpected_exits.append(
                            f"worker {proc.pid} rc={proc.returncode}:\n{_tail(log)}"
                        )
                        workers.remove(proc)
                        new_worker()
                for server in servers:
                    assert server.proc is not None
                    if server.proc.poll() is not None:
                        report.unexpected_exits.append(f"api {server.proc.pid}:\n{_tail(server.log)}")
                        server.start()
                if time.time() > deadline:
                    raise AssertionError(
                        f"{open_count} tasks still open after {cfg.limit_s} s; {report.line()}\n"
                        f"last worker log:\n{_tail(all_workers[-1][1])}"
                    )
                time.sleep(0.25)
            report.run_s = round(time.time() - started, 1)
            report.http_tasks = len(http_ids)
            stats = fake.stats_snapshot()
            jobs = {job.id: job.request.get("payload") for job in list(fake.tasks.values())}
    finally:
        for proc in workers:
            _stop(proc)
        for server in servers:
            server.stop()
        if database_url is not None:
            ensure_postgres_up()
    try:
        check_invariants(database, record.id, data_dir, stats, jobs, set(http_ids), report)
    finally:
        database.dispose()
    return report


def check_invariants(
    database: Database,
    key_id: str,
    data_dir: Path,
    stats: dict[str, Any],
    jobs: dict[str, Any],
    http_ids: set[str],
    report: ChaosReport,
) -> None:
    with database.read() as conn:
        rows = conn.execute(
            sa.select(
                db.tasks.c.id,
                db.tasks.c.status,
                db.tasks.c.upstream_id,
                db.tasks.c.result,
                db.tasks.c.error,
                db.tasks.c.cost,
                db.tasks.c.completed_at,
            ).where(db.tasks.c.key_id == key_id)
        ).all()
        entries = conn.execute(
            sa.select(db.ledger.c.task_id, db.ledger.c.kind, db.ledger.c.amount, db.ledger.c.note).where(
                db.ledger.c.key_id == key_id
            )
        ).all()
    report.tasks = len(rows)
    report.statuses = dict(Counter(r.status for r in rows))
    report.errors = dict(
        Counter(str((tasks.decode_json(r.error) or {}).get("code")) for r in rows if r.status != "completed")
    )
    report.failed_at = dict(
        sorted(
            Counter(
                int((r.completed_at - report.started) // 5 * 5) for r in rows if r.status == "failed"
            ).items()
        )
    )
    by_id = {r.id: r for r in rows}
    assert http_ids <= set(by_id), "an HTTP-submitted task is missing"

    # 1. Every task terminal.
    stuck = [r.id for r in rows if r.status not in TERMINAL]
    assert not stuck, f"{len(stuck)} tasks not terminal, e.g. {stuck[:5]}"

    # 2. Exactly one upstream job per task that reached the upstream.
    per_payload: dict[str, int] = dict(stats.get("submits_by_payload", {}))
    report.reached_upstream = len(per_payload)
    report.upstream_jobs = int(stats.get("jobs_created", 0))
    twice = {p: n for p, n in per_payload.items() if n != 1}
    assert not twice, f"tasks with more than one upstream job: {list(twice.items())[:10]}"
    assert report.upstream_jobs == len(per_payload) == len(jobs), (report.upstream_jobs, len(per_payload))
    assert set(per_payload) <= set(by_id), "an upstream job whose payload is no task of ours"
    for row in rows:
        if row.upstream_id is not None:
            assert jobs.get(str(row.upstream_id)) == row.id, f"{row.id} points at another task's job"
        if row.status == "completed":
            assert per_payload.get(row.id) == 1, f"{row.id} completed without its one upstream job"

    # 3. Ledger: one hold per task; completed -> one capture, no release (but the difference to the
    #    quote); failed/cancelled -> one release, no capture.
    kinds: dict[str, Counter[str]] = {r.id: Counter() for r in rows}
    holds: dict[str, Decimal] = {}
    captured = Decimal(0)
    topups = Decimal(0)
    for entry in entries:
        amount = Decimal(str(entry.amount)).quantize(SIX)
        if entry.kind == "topup":
            topups += amount
            continue
        assert entry.task_id in kinds, f"ledger row for an unknown task {entry.task_id}"
        kind = entry.kind
        if kind == "release" and entry.note == "difference to the quote":
            kind = "refund"
        kinds[entry.task_id][kind] += 1
        if entry.kind == "hold":
            holds[entry.task_id] = amount
        if entry.kind == "capture":
            captured += amount
    for row in rows:
        seen = kinds[row.id]
        assert seen["hold"] == 1, f"{row.id}: {dict(seen)}"
        assert holds[row.id] > 0, f"{row.id}: a hold of nothing (no price?)"
        if row.status == "completed":
            assert seen["capture"] == 1 and seen["release"] == 0, f"{row.id} completed: {dict(seen)}"
        else:
            assert seen["release"] == 1 and seen["capture"] == 0, f"{row.id} {row.status}: {dict(seen)}"
            assert seen["refund"] == 0, f"{row.id}: {dict(seen)}"
    # Open holds: holds with neither capture nor release -- none, every task is terminal.
    open_holds = sum(
        (holds[r.id] for r in rows if kinds[r.id]["capture"] == 0 and kinds[r.id]["release"] == 0),
        Decimal(0),
    )
    assert open_holds == 0
    balance, used = ledger.totals(database, key_id)
    assert balance is not None
    assert balance.quantize(SIX) == (topups - captured - open_holds).quantize(SIX), (
        balance,
        topups,
        captured,
    )
    assert used.quantize(SIX) == captured.quantize(SIX), (used, captured)

    # 4. Completed tasks have their stored result file.
    files = data_dir / "files"
    for row in rows:
        if row.status != "completed":
            continue
        result = tasks.decode_json(row.result)
        path = files / result["video"]
        assert path.is_file(), f"{row.id}: no result file {path}"
        assert path.stat().st_size == result["bytes"] > 0, row.id
