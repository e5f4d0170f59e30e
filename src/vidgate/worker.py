"""The worker: claims due tasks, runs one provider tick per claim, and writes the outcome.

It keeps no task state of its own: a task is a row, leased while a tick runs and heartbeated with
its progress. If the process dies (even `kill -9`), the lease expires and any worker takes the task
over; on the same host, a restarted worker notices the dead owner and takes over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import shutil
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from PIL import Image

from vidgate import catalog, db, images, leases, logs, metrics, prices, tasks, wakeup, webhook_dispatch
from vidgate import gc as storage_gc
from vidgate.config import Settings
from vidgate.errors import TaskFailure
from vidgate.prices import PriceTable
from vidgate.providers import Done, Provider, Router, Snooze, TaskContext
from vidgate.providers._relay import RelayProvider, UpstreamUnavailable, backoff
from vidgate.render import RenderCancelled
from vidgate.signing import Signer
from vidgate.status import Phase, Status
from vidgate.storage import InvalidKey, Storage, check_key

log = logging.getLogger("vidgate.worker")


@dataclass
class _RunState:
    """Shared between a running tick (maybe in a thread) and its heartbeat loop."""

    fraction: float | None = None
    phase: Phase | None = None
    lost: bool = False
    stopping: bool = False
    cancelling: bool = False
    #: (key, staged file) the provider stored this tick, uploaded before the tick's outcome is written.
    stored: list[tuple[str, Path]] = field(default_factory=list)


class Worker:
    def __init__(
        self,
        settings: Settings,
        database: db.Database,
        storage: Storage,
        signer: Signer,
        providers: dict[str, Provider],
        router: Router | None = None,
        price_table: PriceTable | None = None,
    ) -> None:
        self.settings = settings
        self.database = database
        self.storage = storage
        self.signer = signer
        self.providers = providers
        self.router = router
        self.prices = price_table or prices.load(settings.prices_file)
        self.host = socket.gethostname()
        self._scratch_root = storage.scratch_dir()  # created once, not on every tick
        self._releases = _ReleaseBatcher(database)
        self.owner = f"{self.host}:{os.getpid()}:{secrets.token_hex(3)}"
        self._wakeup: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running: dict[str, set[asyncio.Task[None]]] = {name: set() for name in providers}
        self._states: dict[str, _RunState] = {}
        self._stopping = False

    # --- lifecycle -------------------------------------------------------------------------------

    def wake(self) -> None:
        """Look for due tasks now (called after a submit; safe from any thread)."""
        if self._loop is not None and self._wakeup is not None:
            self._loop.call_soon_threadsafe(self._wakeup.set)

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        # Every database call runs in a thread; asyncio's default pool (cores + 4 threads) lets
        # heartbeats queue behind hundreds of ticks' writes until leases expire under load.
        self._loop.set_default_executor(ThreadPoolExecutor(max_workers=32, thread_name_prefix="vidgate-db"))
        self._wakeup = asyncio.Event()
        listener = None
        if self.settings.listen_notify and not self.database.is_sqlite:
            listener = wakeup.Listener(self.database.url, self.wake)
            listener.start()
        await asyncio.to_thread(self._take_over_dead_local_owners)
        log.info("worker %s started (providers: %s)", self.owner, ", ".join(self.providers))
        gc_stop = asyncio.Event()
        collector = asyncio.create_task(self._collect_garbage(gc_stop))
        # Webhook deliveries ride along with every worker (the outbox is in the same database).
        webhooks = webhook_dispatch.Dispatcher(
            self.settings, self.database, self.signer, owner=self.owner, owner_alive=_pid_alive
        )
        dispatcher = asyncio.create_task(webhooks.run(gc_stop))
        try:
            outage = 0
            while not stop.is_set():
                try:
                    claimed = await self._claim_round()
                    outage = 0
                except Exception:
                    # The database is unreachable (e.g. restarting): keep the running ticks, retry.
                    outage += 1
                    log.warning("claiming failed (%d in a row); retrying", outage, exc_info=outage == 1)
                    claimed = 0
                    await asyncio.sleep(min(10.0, 0.5 * 2 ** min(outage, 5)))
                if claimed:
                    continue
                self._wakeup.clear()
                waiters = [asyncio.ensure_future(self._wakeup.wait()), asyncio.ensure_future(stop.wait())]
                await asyncio.wait(
                    waiters, timeout=self.settings.poll_interval_seconds, return_when=asyncio.FIRST_COMPLETED
                )
                for waiter in waiters:
                    waiter.cancel()
        finally:
            gc_stop.set()
            if listener is not None:
                await asyncio.to_thread(listener.stop)
            await self._shutdown()
            await collector
            await dispatcher

    async def _shutdown(self) -> None:
        """Stop claiming; ask running ticks to stop and hand their tasks back to the queue."""
        self._stopping = True
        for state in self._states.values():
            state.stopping = True
        running = [t for group in self._running.values() for t in group]
        if running:
            await asyncio.wait(running, timeout=10)
        for provider in self.providers.values():
            await provider.aclose()

    async def _collect_garbage(self, stop: asyncio.Event) -> None:
        """Delete expired uploads and results every `gc_interval_seconds` (see gc.py), the first
        time within a minute of starting; jittered, so that workers started together spread out."""
        interval = self.settings.gc_interval_seconds
        if interval <= 0:
            return
        delay = min(60.0, interval) * random.uniform(0.5, 1.0)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
            if stop.is_set():
                return
            try:
                await asyncio.to_thread(
                    storage_gc.collect,
                    self.database,
                    self.storage,
                    min_interval=interval / 2,
                    should_stop=lambda: self._stopping,
                )
            except Exception:
                log.warning("garbage collection failed; trying again next interval", exc_info=True)
            delay = interval * random.uniform(0.9, 1.1)

    # --- claiming --------------------------------------------------------------------------------

    async def _claim_round(self) -> int:
        total = 0
        if self._stopping:
            return 0
        for name, provider in self.providers.items():
            free = provider.max_concurrency() - len(self._running[name])
            if free <= 0:
                continue
            slots = {name: provider.in_flight_cap()} if isinstance(provider, RelayProvider) else None
            rows = await asyncio.to_thread(
                leases.claim,
                self.database,
                owner=self.owner,
                providers=frozenset({name}),
                limit=free,
                lease_seconds=self.settings.lease_seconds,
                slots=slots,
            )
            for row in rows:
                job = asyncio.create_task(self._run_one(provider, row))
                self._running[name].add(job)
                job.add_done_callback(self._finished(name))
            total += len(rows)
        return total

    def _finished(self, name: str) -> Any:
        def done(job: asyncio.Task[None]) -> None:
            self._running[name].discard(job)
            if self._wakeup is not None:
                self._wakeup.set()  # a slot freed up

        return done

    def _take_over_dead_local_owners(self) -> None:
        """Expire leases held by dead processes of this host, so a restart resumes at once."""
        t = db.tasks
        with self.database.read() as conn:
            owners = (
                conn.execute(
                    sa.select(t.c.lease_owner)
                    .distinct()
                    .where(t.c.status == Status.PROCESSING.value, t.c.lease_owner.like(f"{self.host}:%"))
                )
                .scalars()
                .all()
            )
        dead = [o for o in owners if o and o != self.owner and not _pid_alive(o)]
        if not dead:
            return
        with self.database.write() as conn:
            conn.execute(t.update().where(t.c.lease_owner.in_(dead)).values(lease_until=time.time() - 1))
        log.info("took over tasks of dead workers: %s", ", ".join(dead))

    # --- one tick --------------------------------------------------------------------------------

    async def _run_one(self, provider: Provider, row: sa.Row[Any]) -> None:
        logs.task_id.set(row.id)  # this tick runs as its own asyncio task: the id stays in it
        lease = leases.lease_of(row)
        if row.attempts > self._attempt_limit(provider):
            metrics.task_failed(provider.name, "worker_lost")
            error = TaskFailure("worker_lost", type="server_error", attempts=row.attempts - 1).as_error()
            await asyncio.to_thread(self._quietly, leases.fail, self.database, lease, error)
            return
        # A task claimed while shutdown began is handed straight back, like every running one.
        state = _RunState(stopping=self._stopping)
        self._states[row.id] = state
        # Created by the first provider step that writes a file (a poll tick writes none).
        scratch = self._scratch_root / f"{row.id}-{lease.token}"
        heartbeat = asyncio.create_task(self._heartbeat(lease, state, estimated=row.estimated_time))
        try:
            request = catalog.parse(tasks.decode_json(row.request))
            ctx = self._context(row, request, state, scratch, lease)
            if row.cancel_requested and await self._cancel_upstream(provider, ctx):
                heartbeat.cancel()
                await asyncio.to_thread(self._quietly, leases.finish_cancel, self.database, lease)
                return
            outcome = await provider.run(ctx)
            if state.stored and not state.lost:
                # What the provider stored goes to storage off the event loop, the lease renewed.
                await asyncio.to_thread(self._store_staged, state.stored)
            heartbeat.cancel()
            if state.lost:
                return
            if row.cancel_requested and not isinstance(outcome, Snooze):
                # The upstream could not cancel, but has now finished: the owner still gets a cancel.
                await asyncio.to_thread(self._quietly, leases.finish_cancel, self.database, lease)
            elif isinstance(outcome, Done):
                await asyncio.to_thread(
                    leases.complete,
                    self.database,
                    lease,
                    outcome.result,
                    ttl_seconds=self.settings.result_ttl_seconds,
                    # What the provider that served it charges (never more than was held).
                    cost=self.prices.quote(provider.name, request),
                )
            elif isinstance(outcome, Snooze):
                # Batched with other ticks' releases into one transaction (False: lease lost).
                await self._releases.release(
                    leases.Release(lease, outcome.delay, outcome.phase, outcome.values)
                )
        except TaskFailure as failure:
            heartbeat.cancel()
            finish = leases.finish_cancel if row.cancel_requested else None
            if finish is not None:
                await asyncio.to_thread(self._quietly, finish, self.database, lease)
            else:
                metrics.task_failed(provider.name, failure.code)
                await asyncio.to_thread(self._quietly, leases.fail, self.database, lease, failure.as_error())
        except UpstreamUnavailable as exc:
            heartbeat.cancel()
            metrics.upstream_unavailable(provider.name)
            await asyncio.to_thread(self._quietly, self._fall_back, row, lease, provider.name, exc.detail)
        except (RenderCancelled, leases.LeaseLost):
            heartbeat.cancel()
            if state.cancelling and not state.lost:
                await asyncio.to_thread(self._quietly, leases.finish_cancel, self.database, lease)
            elif state.stopping and not state.lost:
                # Graceful shutdown: back to the queue (pending), due now, without counting an
                # attempt. A task with an upstream job keeps its phase (and its upstream slot).
                requeue = (
                    Phase.QUEUED
                    if row.upstream_id is None and not isinstance(provider, RelayProvider)
                    else None
                )
                await asyncio.to_thread(
                    self._quietly, leases.release, self.database, lease, delay=0, phase=requeue
                )
        except Exception as exc:
            heartbeat.cancel()
            log.exception("task %s: unexpected error in provider %s", row.id, provider.name)
            await asyncio.to_thread(self._retry_or_fail, lease, row.attempts, exc, provider)
        finally:
            heartbeat.cancel()
            self._states.pop(row.id, None)
            # Most ticks (polls) never create it; rmtree of a missing path is one failed call.
            shutil.rmtree(scratch, ignore_errors=True)

    async def _cancel_upstream(self, provider: Provider, ctx: TaskContext) -> bool:
        """Whether a cancel-requested task can be closed now: nothing upstream, or the upstream
        confirmed the cancel. Otherwise it keeps being polled until the upstream ends it."""
        if not isinstance(provider, RelayProvider):
            return True
        try:
            upstream_id = ctx.upstream_id
            if upstream_id is None and ctx.phase is Phase.SUBMITTING:
                # The worker died mid-submit: a billed job may exist upstream; find it first.
                upstream_id = await provider.recover(ctx)
                if upstream_id is not None:
                    await ctx.checkpoint(Phase.AWAITING_UPSTREAM, upstream_id=upstream_id)
            if upstream_id is None:
                return True
            return await provider.cancel(upstream_id)
        except Exception:
            log.warning("task %s: cancel at %s failed; polling until it ends", ctx.task_id, provider.name)
            return False

    def _fall_back(self, row: sa.Row[Any], lease: leases.Lease, current: str, detail: str) -> None:
        """Nothing was accepted upstream: try the next provider of the model's route, else retry
        this one with backoff until the deadline."""
        state = dict(tasks.decode_json(row.upstream_state) or {})
        tried = [*state.get("tried", []), current]
        route = self.router.route(row.model) if self.router is not None else []
        later = route[route.index(current) + 1 :] if current in route else []
        following = next((name for name in later if name not in tried), None)
        log.warning(
            "task %s: %s unavailable (%s); %s",
            row.id,
            current,
            detail,
            f"moving to {following}" if following else "will retry",
        )
        if following is not None:
            leases.reroute(self.database, lease, provider=following, upstream_state={"tried": tried})
            self.wake()
            return
        if row.deadline_at is not None and time.time() >= row.deadline_at:
            error = TaskFailure(
                "upstream_unavailable", type="bad_gateway", upstream=current, detail=detail[:200]
            )
            metrics.task_failed(current, "upstream_unavailable")
            leases.fail(self.database, lease, error.as_error())
            return
        failures = int(state.get("unavailable", 0)) + 1
        leases.release(
            self.database,
            lease,
            delay=backoff(failures, base=self.settings.upstream_backoff_seconds, cap=60.0),
            phase=Phase.QUEUED,
            upstream_state={**state, "unavailable": failures},
        )

    def _attempt_limit(self, provider: Provider) -> int:
        """Interrupted or failed runs a task may have before it is failed. An engine run can
        crash its worker every time (a poison input), so it gets `max_attempts`. A relay tick is
        one idempotent, fenced HTTP exchange: a takeover after a slow tick on a busy machine or a
        database restart is no sign of poison, and the task's deadline bounds it anyway."""
        return self.settings.max_attempts * (10 if isinstance(provider, RelayProvider) else 1)

    def _retry_or_fail(self, lease: leases.Lease, attempts: int, exc: Exception, provider: Provider) -> None:
        if attempts >= self._attempt_limit(provider):
            code = "task_error" if isinstance(provider, RelayProvider) else "render_failed"
            metrics.task_failed(provider.name, code)
            error = TaskFailure(code, type="server_error", detail=type(exc).__name__).as_error()
            self._quietly(leases.fail, self.database, lease, error)
        else:
            delay = min(60.0, 2.0**attempts)
            self._quietly(leases.release, self.database, lease, delay=delay, reset_attempts=False)

    @staticmethod
    def _quietly(fn: Any, *args: Any, **kwargs: Any) -> None:
        with contextlib.suppress(leases.LeaseLost):
            fn(*args, **kwargs)

    async def _heartbeat(self, lease: leases.Lease, state: _RunState, *, estimated: int) -> None:
        """Renew the lease and publish progress until the tick ends; flag a lost lease."""
        interval = max(0.2, min(1.0, self.settings.lease_seconds / 3))
        written: tuple[int | None, Phase | None] = (None, None)
        while True:
            await asyncio.sleep(interval)
            progress = None if state.fraction is None else 5 + int(state.fraction * 90)
            try:
                cancel = await asyncio.to_thread(
                    leases.heartbeat,
                    self.database,
                    lease,
                    self.settings.lease_seconds,
                    progress=progress if (progress, state.phase) != written else None,
                    phase=state.phase,
                )
                written = (progress, state.phase)
                if cancel:
                    state.cancelling = True
            except leases.LeaseLost:
                state.lost = True
                return
            except Exception:  # the database may be briefly unreachable; the lease is still ours
                log.warning("heartbeat for %s failed; retrying", lease.task_id, exc_info=True)

    # --- what a provider may use -------------------------------------------------------------------

    def _context(
        self,
        row: sa.Row[Any],
        request: catalog.VideoRequest,
        state: _RunState,
        scratch: Path,
        lease: leases.Lease,
    ) -> TaskContext:
        def set_phase(phase: Phase) -> None:
            state.phase = phase

        def report(fraction: float) -> None:
            state.fraction = max(0.0, min(1.0, fraction))

        async def load_images() -> list[Image.Image]:
            inputs = request.image_inputs()
            if not inputs:
                return []
            rules = images.ImageRules(formats=request.image_formats, max_bytes=request.image_max_bytes)
            return await images.load_images(
                inputs,
                rules=rules,
                max_total_bytes=self.settings.max_input_bytes,
                timeout=self.settings.fetch_timeout_seconds,
                allow_private=self.settings.allow_private_urls,
                own_files=self._own_file,
            )

        async def source_video(task_id: str) -> tuple[Path, dict[str, Any]]:
            source = await asyncio.to_thread(tasks.get, self.database, task_id, row.key_id)
            result = tasks.decode_json(source.result) if source is not None else None
            if not result:
                raise TaskFailure("extend_source_unavailable", param="extend_from_task_id")
            try:
                # The stored file itself on local storage; a copy in this tick's scratch on S3.
                path = await asyncio.to_thread(self.storage.local_file, str(result.get("video", "")), scratch)
            except (FileNotFoundError, InvalidKey):
                raise TaskFailure("extend_source_unavailable", param="extend_from_task_id") from None
            return path, result

        def store_file(key: str, path: Path) -> int:
            """Providers call this on the event loop: stage the file now (a hard link in scratch, so
            the provider may reuse `path`); `_run_one` uploads it in a thread before the outcome."""
            check_key(key)
            staged = scratch / ".stored" / str(len(state.stored))
            staged.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, staged)
            except OSError:
                shutil.copyfile(path, staged)
            state.stored.append((key, staged))
            return staged.stat().st_size

        async def checkpoint(phase: Phase, **values: Any) -> None:
            state.phase = phase
            # Later steps of this tick (e.g. a busy snooze) must build on what was just saved.
            if "upstream_state" in values:
                ctx.upstream_state = values["upstream_state"]
            if "upstream_id" in values:
                ctx.upstream_id = values["upstream_id"]
            await asyncio.to_thread(
                leases.checkpoint,
                self.database,
                lease,
                phase=phase,
                lease_seconds=self.settings.lease_seconds,
                **values,
            )

        ctx = TaskContext(
            task_id=row.id,
            key_id=row.key_id,
            request=request,
            attempt=row.attempts,
            phase=Phase(row.phase),
            upstream_id=row.upstream_id,
            upstream_state=tasks.decode_json(row.upstream_state),
            started_at=row.started_at,
            estimated_time=row.estimated_time,
            deadline_at=row.deadline_at,
            scratch=scratch,
            load_images=load_images,
            source_video=source_video,
            store_file=store_file,
            set_phase=set_phase,
            report_progress=report,
            should_stop=lambda: state.lost or state.stopping or state.cancelling,
            checkpoint=checkpoint,
        )
        return ctx

    def _store_staged(self, staged: list[tuple[str, Path]]) -> None:
        for key, path in staged:
            self.storage.put_file(key, path)

    def _own_file(self, url: str) -> bytes | None:
        """Bytes of one of our own upload URLs, read from storage (either backend) without HTTP."""
        key = self.storage.own_key(url)
        if key is None:
            return None
        try:
            return self.storage.read_bytes(key)
        except (FileNotFoundError, InvalidKey):
            return None


class _ReleaseBatcher:
    """Collects the releases of ticks that finish close together and writes them in one
    transaction: at thousands of polls a second, one commit (and one thread hop) per poll is
    most of a worker's cost."""

    WINDOW_SECONDS = 0.005
    MAX_BATCH = 256

    def __init__(self, database: db.Database) -> None:
        self.database = database
        self._pending: list[tuple[leases.Release, asyncio.Future[bool]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def release(self, item: leases.Release) -> bool:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self._pending:
            await asyncio.sleep(self.WINDOW_SECONDS)
            batch, self._pending = self._pending[: self.MAX_BATCH], self._pending[self.MAX_BATCH :]
            try:
                applied = await asyncio.to_thread(
                    leases.release_many, self.database, [item for item, _ in batch]
                )
            except Exception as exc:  # e.g. the database is down: each tick sees the error
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), ok in zip(batch, applied, strict=True):
                if not future.done():
                    future.set_result(ok)


def _pid_alive(owner: str) -> bool:
    try:
        pid = int(owner.split(":")[1])
    except (IndexError, ValueError):
        return True
    if pid == os.getpid():
        return False  # an earlier process that had our pid (e.g. a restarted container's pid 1)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
