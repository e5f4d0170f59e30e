"""Garbage collection of expired files, on either storage backend.

What one run deletes:
- uploads whose `expires_at` has passed: the stored image and its `uploads` row;
- results of completed tasks whose `expires_at` has passed: the files the task's `result` names
  (video, thumbnail). The task row stays, facts included; its view then shows no URL;
- entries of the local scratch directory older than a day (what a crashed worker left behind).

Workers run it every `gc_interval_seconds` (`Worker.run`), operators on demand (`vidgate gc`).
Any number of workers may run it at once: every step is idempotent (a file already gone counts
for nothing), and the database part is claimed with a compare-and-set on the `meta` table, so in a
cluster one worker does it per interval while each sweeps its own local scratch directory.

Expired results are found from a watermark (`meta.gc_results_until`): a run looks only at tasks
that expired since the previous complete run, less an overlap for clock skew and late commits, so
its cost follows what expired since then, not the whole history.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from vidgate import db, tasks
from vidgate.status import Status
from vidgate.storage import InvalidKey, Storage

log = logging.getLogger("vidgate.gc")

#: Scratch entries older than this are strays: no tick runs that long (tasks have deadlines).
SCRATCH_MAX_AGE = 86_400.0
#: Tasks that expired this long before the watermark are looked at again (clock skew, late commits).
OVERLAP_SECONDS = 600.0
_BATCH = 500
_RAN_AT = "gc_ran_at"
_RESULTS_UNTIL = "gc_results_until"


@dataclass
class Report:
    uploads: int = 0  #: upload files deleted
    results: int = 0  #: result files deleted
    tasks: int = 0  #: expired tasks whose files were deleted
    scratch: int = 0  #: stray scratch entries deleted
    #: Another process ran the database part recently: only the scratch directory was swept.
    skipped: bool = False

    @property
    def removed(self) -> int:
        return self.uploads + self.results + self.scratch

    def summary(self) -> str:
        text = (
            f"removed {self.uploads} expired upload(s), {self.results} result file(s) of "
            f"{self.tasks} expired task(s), {self.scratch} stray scratch entr(ies)"
        )
        return text + (" (database part skipped: another worker ran it recently)" if self.skipped else "")


def collect(
    database: db.Database,
    storage: Storage,
    *,
    now: float | None = None,
    min_interval: float = 0.0,
    should_stop: Callable[[], bool] | None = None,
) -> Report:
    """One garbage collection. With `min_interval`, the database part is skipped when any process
    ran it less than that many seconds ago (workers pass half their interval; `vidgate gc` 0)."""
    now = time.time() if now is None else now
    stop = should_stop or (lambda: False)
    report = Report(scratch=sweep_scratch(storage.scratch_dir(), now - SCRATCH_MAX_AGE))
    if _claim(database, now, min_interval):
        _collect_uploads(database, storage, now, report, stop)
        _collect_results(database, storage, now, report, stop)
    else:
        report.skipped = True
    if report.removed:
        log.info("gc on %s storage: %s", storage.kind, report.summary())
    return report


def sweep_scratch(directory: Path, cutoff: float) -> int:
    """Delete entries of `directory` last modified before `cutoff`; how many."""
    count = 0
    for entry in directory.iterdir():
        try:
            if entry.lstat().st_mtime >= cutoff:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except FileNotFoundError:
            continue  # another sweeper got there first
        count += 1
    return count


def _remove(storage: Storage, key: object) -> int:
    """Delete one stored file if it is there: 1 when it was, else 0."""
    if not isinstance(key, str) or not key:
        return 0
    try:
        if not storage.exists(key):
            return 0
        storage.delete(key)
    except InvalidKey:
        log.warning("gc: skipping invalid storage key %r", key)
        return 0
    return 1


def _collect_uploads(
    database: db.Database, storage: Storage, now: float, report: Report, stop: Callable[[], bool]
) -> None:
    u = db.uploads
    query = (
        sa.select(u.c.id, u.c.storage_key).where(u.c.expires_at <= now).order_by(u.c.expires_at).limit(_BATCH)
    )
    while not stop():
        with database.read() as conn:
            rows = conn.execute(query).all()
        for row in rows:
            report.uploads += _remove(storage, row.storage_key)
        if rows:
            # Files first, then rows: a failure half-way leaves rows that the next run retries.
            with database.write() as conn:
                conn.execute(u.delete().where(u.c.id.in_([row.id for row in rows])))
        if len(rows) < _BATCH:
            return


def _collect_results(
    database: db.Database, storage: Storage, now: float, report: Report, stop: Callable[[], bool]
) -> None:
    t = db.tasks
    after: tuple[float, str] = (_get_float(database, _RESULTS_UNTIL) - OVERLAP_SECONDS, "")
    while not stop():
        query = (
            sa.select(t.c.id, t.c.expires_at, t.c.result)
            .where(
                t.c.status == Status.COMPLETED.value,
                t.c.expires_at <= now,
                sa.or_(
                    t.c.expires_at > after[0],
                    sa.and_(t.c.expires_at == after[0], t.c.id > after[1]),
                ),
            )
            .order_by(t.c.expires_at, t.c.id)
            .limit(_BATCH)
        )
        with database.read() as conn:
            rows = conn.execute(query).all()
        for row in rows:
            result = tasks.decode_json(row.result) or {}
            removed = sum(_remove(storage, result.get(name)) for name in ("video", "thumbnail"))
            report.results += removed
            report.tasks += 1 if removed else 0
        if len(rows) < _BATCH:
            # Only a complete pass moves the watermark; an interrupted one is redone next time.
            _set(database, _RESULTS_UNTIL, now)
            return
        after = (float(rows[-1].expires_at), str(rows[-1].id))


# --- small values in the meta table -----------------------------------------------------------------


def _get_float(database: db.Database, name: str) -> float:
    with database.read() as conn:
        value = conn.execute(sa.select(db.meta.c.value).where(db.meta.c.name == name)).scalar()
    try:
        return float(value) if value is not None else 0.0
    except ValueError:
        return 0.0


def _set(database: db.Database, name: str, value: float) -> None:
    m = db.meta
    try:
        with database.write() as conn:
            updated = conn.execute(m.update().where(m.c.name == name).values(value=repr(value)))
            if updated.rowcount == 0:
                conn.execute(m.insert().values(name=name, value=repr(value)))
    except sa.exc.IntegrityError:
        pass  # another run inserted it at the same moment; its value is as good


def _claim(database: db.Database, now: float, min_interval: float) -> bool:
    """Record this run in `meta.gc_ran_at` unless one ran less than `min_interval` ago. A
    compare-and-set: of several processes claiming at once, exactly one succeeds."""
    m = db.meta
    try:
        with database.write() as conn:
            previous = conn.execute(sa.select(m.c.value).where(m.c.name == _RAN_AT)).scalar()
            if previous is None:
                conn.execute(m.insert().values(name=_RAN_AT, value=repr(now)))
                return True
            try:
                last = float(previous)
            except ValueError:
                last = 0.0
            if min_interval > 0 and now - last < min_interval:
                return False
            swapped = conn.execute(
                m.update().where(m.c.name == _RAN_AT, m.c.value == previous).values(value=repr(now))
            )
            return bool(swapped.rowcount == 1)
    except sa.exc.IntegrityError:
        return False
