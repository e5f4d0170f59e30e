"""Outgoing notifications (Vidu callbacks, PixVerse webhooks) with retries.

The simulation queues a `Delivery` when a job changes state (possibly from a non-loop thread, e.g.
a test calling `advance()`); `pump()` runs on the event loop (background ticker and every request)
and starts one asyncio task per delivery. Deliveries that share a `key` (one job) go out in order,
so a receiver never sees `success` before `processing`. Retry gaps are virtual seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from vidgate.testing.fake_clock import Clock


@dataclass
class Delivery:
    key: str
    url: str
    label: str
    build: Callable[[], tuple[dict[str, str], bytes]]  # fresh headers + body for each attempt
    accept: Callable[[int, bytes], bool]
    retry_delays_s: Sequence[float] = ()
    on_attempt: Callable[[bool], None] | None = None
    on_done: Callable[[bool], None] | None = None


@dataclass
class Deliverer:
    clock: Clock
    timeout_s: Callable[[], float]
    recent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=500))
    _pending: deque[Delivery] = field(default_factory=deque)
    _chains: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _client: httpx.AsyncClient | None = None

    def enqueue(self, delivery: Delivery) -> None:
        self._pending.append(delivery)  # deque.append is atomic; safe from any thread

    def pump(self) -> None:
        """Start queued deliveries; must run on the event loop."""
        while self._pending:
            delivery = self._pending.popleft()
            previous = self._chains.get(delivery.key)
            task = asyncio.get_running_loop().create_task(self._run(delivery, previous))
            self._chains[delivery.key] = task
            self._tasks.add(task)
            task.add_done_callback(self._forget(delivery.key))

    def _forget(self, key: str) -> Callable[[asyncio.Task[None]], None]:
        def done(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            if self._chains.get(key) is task:
                del self._chains[key]

        return done

    @property
    def in_flight(self) -> int:
        return len(self._tasks) + len(self._pending)

    async def _run(self, delivery: Delivery, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            with contextlib.suppress(BaseException):
                await previous
        if self._client is None:
            self._client = httpx.AsyncClient(trust_env=False)  # never route loopback via a proxy
        delays = list(delivery.retry_delays_s)
        attempt = 0
        while True:
            attempt += 1
            headers, body = delivery.build()
            status, ok = 0, False
            try:
                resp = await self._client.post(
                    delivery.url, content=body, headers=headers, timeout=self.timeout_s()
                )
                status = resp.status_code
                ok = delivery.accept(status, resp.content)
            except (httpx.HTTPError, OSError):
                ok = False
            self.recent.append(
                {
                    "key": delivery.key,
                    "label": delivery.label,
                    "url": delivery.url,
                    "attempt": attempt,
                    "status": status,
                    "ok": ok,
                }
            )
            if delivery.on_attempt is not None:
                delivery.on_attempt(ok)
            if ok or not delays:
                break
            await asyncio.sleep(self.clock.real_seconds(delays.pop(0)))
        if delivery.on_done is not None:
            delivery.on_done(ok)

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait for the queued and running deliveries (tests, shutdown)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.in_flight and loop.time() < deadline:
            self.pump()
            await asyncio.sleep(0.005)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        self._pending.clear()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
