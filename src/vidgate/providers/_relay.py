"""What every upstream relay shares: submit once, poll in short ticks, re-host the result.

A relay provider implements `submit`, `recover`, `poll` (and `cancel` where the upstream has one);
`run` turns those into one tick at a time. Rules it enforces for all of them:

- `submitting` is committed, with the provider's idempotency handle, before the submit call; a
  task found in `submitting` after a crash is `recover`ed (found again upstream), never blindly
  resubmitted.
- An upstream that is busy (429, "too many jobs") puts the task back in the queue with jittered
  backoff and frees its slot; it never fails a task while its deadline is ahead.
- An infrastructure failure at submit (connection error, timeout, 5xx) raises
  `UpstreamUnavailable`; the worker then moves the task to the next provider of its route.
- Unknown upstream states keep the task running until its deadline.
- The result is copied into vidgate's storage (size-capped, retried) before the task completes.
"""

from __future__ import annotations

import asyncio
import random
import time
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import av
import httpx

from vidgate.errors import TaskFailure
from vidgate.providers import Done, Outcome, Provider, Snooze, TaskContext
from vidgate.status import Phase

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled", "unknown"]


class UpstreamUnavailable(Exception):
    """The upstream could not be reached or answered 5xx: nothing was accepted."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class UpstreamBusy(Exception):
    """The upstream asked us to come back later (429, concurrency limit): retry, keep the task."""

    def __init__(self, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


@dataclass(frozen=True)
class UpstreamJob:
    state: JobState
    raw_state: str = ""
    video_url: str | None = None
    cover_url: str | None = None
    failure: TaskFailure | None = None
    #: The upstream's own progress figure (0-100) when it reports one.
    progress: int | None = None


def backoff(attempt: int, *, base: float = 2.0, cap: float = 60.0, retry_after: float | None = None) -> float:
    """Exponential backoff with full jitter, never shorter than the upstream's Retry-After."""
    delay = random.uniform(0, min(cap, base * 2 ** max(0, attempt)))
    return max(delay, retry_after or 0.0)


def retry_after_of(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


class RelayProvider(Provider):
    """Base of `vidu`, `pixverse` and `apimart`."""

    #: Name of the upstream in error messages.
    label: ClassVar[str] = "upstream"

    #: httpcore's pool bookkeeping grows with connections x waiting requests, so many small pools
    #: used in turn are far cheaper than one large one at thousands of requests a second.
    POOLS = 16
    CONNECTIONS_PER_POOL = 4

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clients: list[httpx.AsyncClient] = []
        self._turn = 0

    # --- what a relay implements -------------------------------------------------------------------

    @abstractmethod
    def in_flight_cap(self) -> int:
        """Jobs this upstream key may have in flight, across all workers."""

    @abstractmethod
    async def submit(self, ctx: TaskContext) -> str:
        """Create the upstream job and return its id. Must `await ctx.checkpoint(Phase.SUBMITTING,
        upstream_state=...)` with its idempotency handle before the creating call."""

    @abstractmethod
    async def recover(self, ctx: TaskContext) -> str | None:
        """A task was found in `submitting` (its worker died mid-submit): the upstream id if the
        job exists upstream, None if it surely does not. Raise TaskFailure if it cannot be known."""

    @abstractmethod
    async def poll(self, ctx: TaskContext, upstream_id: str) -> UpstreamJob: ...

    async def cancel(self, upstream_id: str) -> bool:
        """Cancel upstream; False where the upstream has no way to."""
        return False

    # --- shared machinery --------------------------------------------------------------------------

    def max_concurrency(self) -> int:
        return self.settings.relay_concurrency

    def client(self) -> httpx.AsyncClient:
        if not self._clients:
            limits = httpx.Limits(
                max_connections=self.CONNECTIONS_PER_POOL, max_keepalive_connections=self.CONNECTIONS_PER_POOL
            )
            self._clients = [
                httpx.AsyncClient(
                    timeout=self.settings.upstream_timeout_seconds,
                    limits=limits,
                    follow_redirects=False,
                    trust_env=False,
                )
                for _ in range(self.POOLS)
            ]
        self._turn = (self._turn + 1) % len(self._clients)
        return self._clients[self._turn]

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()
        self._clients = []

    async def run(self, ctx: TaskContext) -> Outcome:
        if ctx.upstream_id is None:
            return await self._submit_tick(ctx)
        return await self._poll_tick(ctx, ctx.upstream_id)

    async def _submit_tick(self, ctx: TaskContext) -> Outcome:
        state = dict(ctx.upstream_state or {})
        try:
            if ctx.phase is Phase.SUBMITTING:
                upstream_id = await self.recover(ctx)
                if upstream_id is None:
                    upstream_id = await self.submit(ctx)
            else:
                upstream_id = await self.submit(ctx)
        except UpstreamBusy as busy:
            busy_count = int(state.get("busy", 0)) + 1
            self._check_deadline(ctx, "upstream_busy", detail=busy.detail)
            return Snooze(
                backoff(
                    busy_count, base=self.settings.upstream_backoff_seconds, retry_after=busy.retry_after
                ),
                Phase.QUEUED,
                {"upstream_state": {**(ctx.upstream_state or {}), "busy": busy_count}},
            )
        await ctx.checkpoint(Phase.AWAITING_UPSTREAM, upstream_id=upstream_id)
        return Snooze(self.poll_delay(ctx), Phase.AWAITING_UPSTREAM, {"progress": 1})

    async def _poll_tick(self, ctx: TaskContext, upstream_id: str) -> Outcome:
        try:
            job = await self.poll(ctx, upstream_id)
        except (UpstreamUnavailable, UpstreamBusy, httpx.HTTPError) as exc:
            # `poll` may have updated ctx.upstream_state (its own counters): build on that.
            state = dict(ctx.upstream_state or {})
            errors = int(state.get("poll_errors", 0)) + 1
            self._check_deadline(ctx, "upstream_unavailable", detail=str(exc) or type(exc).__name__)
            retry_after = exc.retry_after if isinstance(exc, UpstreamBusy) else None
            base = self.settings.upstream_backoff_seconds / 2
            delay = max(self.poll_delay(ctx), backoff(errors, base=base, cap=30.0, retry_after=retry_after))
            return Snooze(
                delay, Phase.AWAITING_UPSTREAM, {"upstream_state": {**state, "poll_errors": errors}}
            )
        state = {**(ctx.upstream_state or {}), "poll_errors": 0, "state": job.raw_state or job.state}
        if job.state == "succeeded":
            if not job.video_url:
                raise TaskFailure("upstream_result_missing", type="bad_gateway", upstream=self.label)
            return await self._rehost(ctx, job)
        if job.state == "failed":
            raise job.failure or TaskFailure(
                "upstream_failed", type="server_error", upstream=self.label, detail=job.raw_state or "failed"
            )
        if job.state == "cancelled":
            raise TaskFailure("upstream_cancelled", type="server_error", upstream=self.label)
        # queued, running or a state we do not know: keep waiting until the deadline.
        self._check_deadline(ctx, "deadline_exceeded", detail=job.raw_state or job.state)
        progress = self.progress_of(ctx, job)
        return Snooze(
            self.poll_delay(ctx), Phase.AWAITING_UPSTREAM, {"upstream_state": state, "progress": progress}
        )

    def poll_delay(self, ctx: TaskContext) -> float:
        """Poll often while a job is young, less as it ages; jitter spreads polls of many jobs."""
        interval = self.settings.upstream_poll_seconds
        return interval * random.uniform(0.9, 1.1)

    def progress_of(self, ctx: TaskContext, job: UpstreamJob) -> int:
        """Neither upstream reports progress: elapsed time over the estimate, 5..95."""
        if job.state == "queued":
            return 2
        if job.progress is not None:
            return max(2, min(99, int(job.progress)))
        elapsed = time.time() - (ctx.started_at or time.time())
        return int(5 + 90 * min(1.0, elapsed / max(1, ctx.estimated_time)))

    def _check_deadline(self, ctx: TaskContext, code: str, *, detail: str) -> None:
        if ctx.deadline_at is not None and time.time() >= ctx.deadline_at:
            raise TaskFailure(code, type="server_error", upstream=self.label, detail=detail[:200])

    # --- re-hosting --------------------------------------------------------------------------------

    async def _rehost(self, ctx: TaskContext, job: UpstreamJob) -> Done:
        ctx.set_phase(Phase.DOWNLOADING)
        assert job.video_url is not None
        video = await self.download(job.video_url, ctx.workdir() / "video.mp4")
        facts = await asyncio.to_thread(_probe, video)  # decoding headers is CPU work: off the loop
        video_key = f"results/{ctx.task_id}/video.mp4"
        size = ctx.store_file(video_key, video)
        # The upstream's id stays server-side; an extension at the same upstream needs it.
        result: dict[str, Any] = {
            "video": video_key,
            "bytes": size,
            "upstream_id": ctx.upstream_id,
            "provider": self.name,
            **facts,
        }
        if job.cover_url:
            try:
                cover = await self.download(job.cover_url, ctx.workdir() / "cover.jpg", attempts=2)
                result["thumbnail"] = f"results/{ctx.task_id}/thumbnail.jpg"
                ctx.store_file(result["thumbnail"], cover)
            except TaskFailure:
                pass  # a missing cover image is no reason to fail a finished video
        return Done(result)

    async def download(self, url: str, target: Path, *, attempts: int = 4) -> Path:
        """Stream `url` into `target` with a size cap; retry transient failures; an expired or
        missing URL is a clear failure, never a completed task without a file."""
        if not url.lower().startswith(("http://", "https://")):
            raise TaskFailure(
                "upstream_result_invalid",
                type="bad_gateway",
                upstream=self.label,
                detail="result URL is not http(s)",
            )
        limit = self.settings.max_result_bytes
        for attempt in range(attempts):
            try:
                async with self.client().stream("GET", url, follow_redirects=True) as response:
                    if response.status_code in (401, 403, 404, 410):
                        raise TaskFailure(
                            "upstream_result_expired",
                            type="bad_gateway",
                            upstream=self.label,
                            detail=f"HTTP {response.status_code}",
                        )
                    if response.status_code >= 400:
                        raise UpstreamUnavailable(f"HTTP {response.status_code}")
                    total = 0
                    with target.open("wb") as fh:
                        async for chunk in response.aiter_bytes(1 << 16):
                            total += len(chunk)
                            if total > limit:
                                raise TaskFailure(
                                    "upstream_result_too_large",
                                    type="bad_gateway",
                                    upstream=self.label,
                                    limit_mb=limit // 2**20,
                                )
                            fh.write(chunk)
                return target
            except (httpx.HTTPError, UpstreamUnavailable) as exc:
                if attempt == attempts - 1:
                    raise TaskFailure(
                        "upstream_result_unavailable",
                        type="bad_gateway",
                        upstream=self.label,
                        detail=str(exc) or type(exc).__name__,
                    ) from exc
                await asyncio.sleep(backoff(attempt, base=0.5, cap=5.0))
        raise AssertionError("unreachable")


def _probe(path: Path) -> dict[str, Any]:
    try:
        with av.open(str(path)) as container:
            video = container.streams.video[0]
            duration = float(container.duration or 0) / 1_000_000
            return {
                "width": video.codec_context.width,
                "height": video.codec_context.height,
                "fps": round(float(video.average_rate or 0), 3),
                "duration": round(duration, 3),
                "has_audio": bool(container.streams.audio),
            }
    except (av.error.FFmpegError, IndexError) as exc:
        raise TaskFailure(
            "upstream_result_invalid",
            type="bad_gateway",
            upstream="upstream",
            detail="the result is not a playable video",
        ) from exc
