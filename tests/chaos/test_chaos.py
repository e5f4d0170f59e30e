"""Chaos (issue 4): API processes and `vidgate worker` processes on one database, relaying to a fake
Vidu that counts jobs; random workers are `kill -9`ed at random moments while the tasks run, and on
PostgreSQL the database server is restarted once mid-run. Afterwards every task is terminal, every
task that reached Vidu made exactly one job there, no task is billed twice and every hold is captured
or released exactly once (see harness.check_invariants).

Sizes: VIDGATE_CHAOS_TASKS (PostgreSQL, default 2000) and VIDGATE_CHAOS_SQLITE_TASKS (default 300).
Each run prints its figures (statuses, kills, restart time, run time, seed); VIDGATE_CHAOS_SEED
replays a seed's choices of which worker dies and when (timing still varies).
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest

from .harness import ChaosConfig, can_restart_postgres, ensure_postgres_up, fresh_postgres, run_chaos

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _seed() -> int:
    value = os.environ.get("VIDGATE_CHAOS_SEED")
    return int(value) if value else random.randrange(1_000_000)


@pytest.mark.timeout(900)
def test_chaos_postgresql(tmp_path: Path) -> None:
    """2 API processes, 4 workers, 2,000 tasks, 6 worker kills, one PostgreSQL restart."""
    if not can_restart_postgres():
        pytest.skip("needs root and pg_ctlcluster to restart the local PostgreSQL")
    n = int(os.environ.get("VIDGATE_CHAOS_TASKS", "2000"))
    cfg = ChaosConfig(
        tasks=n,
        http_per_api=min(20, n // 10),
        api_processes=2,
        workers=4,
        kills=6,
        restart_postgres=True,
        limit_s=600,
        seed=_seed(),
    )
    try:
        with fresh_postgres() as url:
            report = run_chaos(tmp_path, url, cfg)
    finally:
        ensure_postgres_up()
    sys.stdout.write(f"\nchaos postgresql: {report.line()}\n")
    assert report.tasks == n and report.kills == cfg.kills and report.restart_s is not None
    assert not report.unexpected_exits, "\n\n".join(report.unexpected_exits)
    # Most tasks survive: a failure is only for a task whose worker died under it again and again.
    assert report.statuses.get("completed", 0) >= n * 0.9, report.line()


@pytest.mark.timeout(600)
def test_chaos_sqlite(tmp_path: Path) -> None:
    """The same on one SQLite file: 2 API processes, 2 workers, 300 tasks, 3 worker kills."""
    n = int(os.environ.get("VIDGATE_CHAOS_SQLITE_TASKS", "300"))
    cfg = ChaosConfig(
        tasks=n,
        http_per_api=min(10, n // 10),
        api_processes=2,
        workers=2,
        kills=3,
        restart_postgres=False,
        limit_s=400,
        seed=_seed(),
    )
    report = run_chaos(tmp_path, None, cfg)
    sys.stdout.write(f"\nchaos sqlite: {report.line()}\n")
    assert report.tasks == n and report.kills == cfg.kills
    assert not report.unexpected_exits, "\n\n".join(report.unexpected_exits)
    assert report.statuses.get("completed", 0) >= n * 0.9, report.line()
