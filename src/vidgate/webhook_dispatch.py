"""The webhook dispatcher: a loop in every worker process that sends due outbox rows.

Each attempt leases its row (so two workers never send the same attempt at once), renders the
task as `GET /v1/tasks/{id}` shows it (response version 2026-07-27) the first time and keeps that
body for every retry, signs it per Standard Webhooks with the key's secret and POSTs it through
the SSRF guard: the callback host is resolved once, every address checked, the connection made to
the checked address, and redirects are not followed. A 2xx answer delivers it; anything else is
retried on `webhook_retry_schedule` (with jitter) until `webhook_retry_window_seconds` after the
event, then the delivery is failed. A URL whose host resolves to a non-public address is failed
at once, without any connection. Delivery is at least once: receivers dedupe on `webhook-id`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson

from vidgate import __version__, metrics, netguard, tasks, webhooks
from vidgate.config import Settings
from vidgate.db import Database
from vidgate.sdk.webhooks import sign_webhook
from vidgate.signing import Signer

log = logging.getLogger("vidgate.webhooks")

USER_AGENT = f"vidgate-webhooks/{__version__}"
#: Bytes of a receiver's answer kept in the delivery log (enough for an error message).
_RESPONSE_KEPT = 200
#: Spread of each retry delay, so that many deliveries failing together do not retry together.
_JITTER = 0.2


def retry_delay(attempt: int, schedule: list[float]) -> float:
    """Seconds before the attempt after `attempt` (1-based): the schedule, its last step repeating."""
    step = schedule[min(attempt, len(schedule)) - 1]
    return step * random.uniform(1 - _JITTER, 1 + _JITTER)


def iso_time(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.UTC).isoformat().replace("+00:00", "Z")


class Dispatcher:
    def __init__(
        self,
        settings: Settings,
        database: Database,
        signer: Signer,
        *,
        owner: str,
        owner_alive: Callable[[str], bool] | None = None,
    ) -> None:
        self.settings = settings
        self.database = database
        self.signer = signer
        #: `host:pid:...` like the worker's; `owner_alive` tells whether another owner's process lives.
        self.owner = owner
        self.owner_alive = owner_alive
        # Links in payloads: clients reach vidgate here (without VIDGATE_PUBLIC_URL, the listen address).
        self.base_url = settings.public_url or f"http://{settings.host}:{settings.port}"
        self.lease_seconds = settings.webhook_timeout_seconds + 30
        self._running: set[asyncio.Task[None]] = set()
        self._wakeup = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Send due deliveries until `stop`; attempts in flight then get their timeout to finish."""
        outage = 0
        if self.owner_alive is not None:
            host = self.owner.split(":", 1)[0]
            with contextlib.suppress(Exception):  # only a speed-up: leases expire anyway
                await asyncio.to_thread(webhooks.expire_dead_leases, self.database, host, self.owner_alive)
        try:
            while not stop.is_set():
                claimed = 0
                free = self.settings.webhook_concurrency - len(self._running)
                if free > 0:
                    try:
                        rows = await asyncio.to_thread(self._claim, free)
                        outage = 0
                    except Exception:  # e.g. the database is restarting: try again shortly
                        outage += 1
                        log.warning("webhook claim failed (%d in a row)", outage, exc_info=outage == 1)
                        rows = []
                    for row in rows:
                        job = asyncio.create_task(self._attempt(row))
                        self._running.add(job)
                        job.add_done_callback(self._done)
                    claimed = len(rows)
                if claimed and len(self._running) < self.settings.webhook_concurrency:
                    continue
                self._wakeup.clear()
                pause = self.settings.poll_interval_seconds * (2 ** min(outage, 5))
                waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wakeup.wait())]
                await asyncio.wait(waiters, timeout=min(pause, 10.0), return_when=asyncio.FIRST_COMPLETED)
                for waiter in waiters:
                    waiter.cancel()
        finally:
            if self._running:
                await asyncio.wait(self._running, timeout=self.settings.webhook_timeout_seconds + 2)
            # Whatever is still running keeps its lease, which expires: the attempt is made again.
            for job in self._running:
                job.cancel()

    def _done(self, job: asyncio.Task[None]) -> None:
        self._running.discard(job)
        self._wakeup.set()

    def _claim(self, limit: int) -> list[Any]:
        if not webhooks.any_due(self.database):
            return []
        return webhooks.claim(self.database, owner=self.owner, limit=limit, lease_seconds=self.lease_seconds)

    # --- one attempt -------------------------------------------------------------------------------

    async def _attempt(self, row: Any) -> None:
        started = time.time()
        clock = time.monotonic()
        status_code: int | None = None
        error: str | None = None
        response: str | None = None
        retry = True
        payload: str | None = row.payload
        try:
            if payload is None:
                payload = await asyncio.to_thread(self._render, row)
            if payload is None:
                error, retry = "the task no longer exists", False
            elif not row.webhook_secret:
                error, retry = "the API key has no webhook secret", False
            else:
                status_code, response = await self._post(row, payload)
                if not 200 <= status_code < 300:
                    error = f"HTTP {status_code}"
        except netguard.UrlForbidden as exc:
            error, retry = f"refused: {exc.detail}", False
        except netguard.FetchFailed as exc:
            error = exc.detail
        except Exception as exc:  # never let one delivery stop the loop; it is retried
            log.exception("webhook %s: unexpected error", row.id)
            error = f"internal error ({type(exc).__name__})"
        duration = time.monotonic() - clock
        now = time.time()
        retry_at: float | None = None
        if retry:
            retry_at = now + retry_delay(row.attempts, self.settings.webhook_retry_schedule)
            if retry_at > row.queued_at + self.settings.webhook_retry_window_seconds:
                retry_at = None
        delivered = status_code is not None and 200 <= status_code < 300
        metrics.webhook_attempt("delivered" if delivered else "retry" if retry_at else "failed")
        with contextlib.suppress(Exception):  # a lost outcome is an attempt made again: harmless
            written = await asyncio.to_thread(
                webhooks.finish,
                self.database,
                row,
                owner=self.owner,
                started=started,
                duration=duration,
                payload=payload,
                status_code=status_code,
                error=error[:300] if error else None,
                response=response,
                retry_at=retry_at,
            )
            if not written:
                log.info("webhook %s: lease taken over; outcome of attempt %d dropped", row.id, row.attempts)
        if delivered:
            log.info("webhook %s (%s of %s) delivered", row.id, row.event, row.task_id)
        else:
            log.warning(
                "webhook %s (%s of %s) attempt %d failed: %s; %s",
                row.id,
                row.event,
                row.task_id,
                row.attempts,
                error,
                f"retry in {retry_at - now:.1f} s" if retry_at else "giving up",
            )

    def _render(self, row: Any) -> str | None:
        """The body: `{"type", "timestamp", "data"}`, data being the task as the API shows it."""
        from vidgate.api import views  # the api package imports the worker, which imports us

        task = tasks.get(self.database, row.task_id)
        if task is None:
            return None
        data = views.task_view(
            task, signer=self.signer, base_url=self.base_url, version=views.RESPONSE_VERSION
        )
        body = {"type": row.event, "timestamp": iso_time(row.created_at), "data": data}
        return orjson.dumps(body).decode()

    async def _post(self, row: Any, payload: str) -> tuple[int, str]:
        """POST to the callback's checked addresses; answers (status, start of the answer's body)."""
        url = netguard.check_url(row.url)
        body = payload.encode()
        stamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Host": url.netloc.decode("ascii"),
            "webhook-id": row.id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": sign_webhook(row.webhook_secret, row.id, stamp, body),
        }
        timeout = self.settings.webhook_timeout_seconds
        allow_private = self.settings.allow_private_urls
        try:
            async with asyncio.timeout(timeout):
                addresses = await netguard.vetted_addresses(url, allow_private=allow_private)
                # One client per attempt: its pool is keyed by IP, so no connection verified for one
                # name ever carries another's request. No proxies: we connect to the checked address.
                async with httpx.AsyncClient(trust_env=False, follow_redirects=False) as client:
                    return await _send(client, url, addresses, body, headers, timeout)
        except TimeoutError:
            raise netguard.FetchFailed(f"timed out after {timeout:g} s") from None


async def _send(
    client: httpx.AsyncClient,
    url: httpx.URL,
    addresses: list[netguard.IPAddress],
    body: bytes,
    headers: dict[str, str],
    timeout: float,
) -> tuple[int, str]:
    response = await netguard.send_pinned(
        client, "POST", url, addresses, headers=headers, timeout=timeout, content=body
    )
    try:
        kept = b""
        with contextlib.suppress(httpx.HTTPError):
            async for chunk in response.aiter_bytes():
                kept += chunk
                if len(kept) >= _RESPONSE_KEPT:
                    break
        text = kept[:_RESPONSE_KEPT].decode("utf-8", "replace").replace("\x00", "")
        return response.status_code, text.strip()
    finally:
        await response.aclose()
