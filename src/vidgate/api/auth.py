"""`Authorization: Bearer <key>` on every /v1 route, and each key's requests-per-minute limit.

A key with `rpm` set is counted once per authenticated /v1 request (`ratelimit.py`, shared by
every API process); a key without one costs nothing extra. Three pieces apply it:
- `current_key`, the dependency of every FastAPI /v1 route, counts the key it just read;
- `LimitedPoll` wraps the bare polling endpoint, which reads no key row: it learns a key's `rpm`
  from a per-process cache by secret hash, refreshed by `current_key` and at most
  `CACHE_SECONDS` old (so an `rpm` change reaches the poll path within that time);
- `RateLimitHeaders`, an ASGI middleware, adds `X-RateLimit-*` to the response of a counted
  request. A refused one is a 429 `rate_limit_error` carrying the same headers and `Retry-After`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vidgate import keys
from vidgate.api import Gateway
from vidgate.errors import AuthenticationFailed, RateLimited

if TYPE_CHECKING:
    from vidgate.ratelimit import Decision

_TOUCH_EVERY = 60.0
#: Seconds the poll path trusts its cached copy of a key's rpm.
CACHE_SECONDS = 10.0
_CACHE_MAX = 100_000
#: Where a counted request's decision waits for `RateLimitHeaders`.
SCOPE_KEY = "vidgate.ratelimit"


def gateway_of(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def parse_bearer(header: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def bearer_secret(request: Request) -> str:
    secret = parse_bearer(request.headers.get("authorization", ""))
    if secret is None:
        raise AuthenticationFailed()
    return secret


def current_key(request: Request) -> keys.ApiKey:
    """FastAPI dependency (sync: runs in the thread pool, like the DB call it makes).

    401 for a missing, unknown, revoked or expired key; 429 when the key is over its rpm."""
    gateway = gateway_of(request)
    secret = bearer_secret(request)
    key = keys.authenticate(gateway.database, secret)
    if key is None:
        raise AuthenticationFailed()
    remember(gateway, keys.hash_key(secret), key.id, key.rpm)
    if key.rpm is not None:
        count(gateway, request.scope, key.id, key.rpm)
    note_use(gateway, key.id)
    return key


def note_use(gateway: Gateway, key_id: str) -> None:
    now = time.time()
    if now - gateway.touched.get(key_id, 0.0) >= _TOUCH_EVERY:
        gateway.touched[key_id] = now
        keys.touch(gateway.database, key_id, now)


def count(gateway: Gateway, scope: Scope, key_id: str, rpm: int) -> None:
    """Count one request of the key; raise RateLimited if it is over its rpm (blocking call)."""
    if gateway.limiter is None:
        return
    decision = gateway.limiter.hit(key_id, rpm)
    if decision is None:
        return
    if not decision.allowed:
        raise RateLimited(
            "rate_limited_rpm", headers=decision.headers(), limit=rpm, retry_after=decision.retry_after
        )
    scope[SCOPE_KEY] = decision


def remember(gateway: Gateway, key_hash: str, key_id: str | None, rpm: int | None) -> None:
    cache = gateway.rpm_cache
    if len(cache) >= _CACHE_MAX:
        cache.clear()
    cache[key_hash] = (time.monotonic() + CACHE_SECONDS, key_id, rpm)


def _cached(gateway: Gateway, key_hash: str) -> tuple[str | None, int | None] | None:
    entry = gateway.rpm_cache.get(key_hash)
    return (entry[1], entry[2]) if entry is not None and entry[0] > time.monotonic() else None


def _look_up(gateway: Gateway, secret: str, key_hash: str) -> tuple[str | None, int | None]:
    """(key id, rpm) of an active key, or (None, None); one indexed read, kept in the cache."""
    key = keys.authenticate(gateway.database, secret)
    key_id, rpm = (key.id, key.rpm) if key is not None else (None, None)
    remember(gateway, key_hash, key_id, rpm)
    return key_id, rpm


def _bearer_of_scope(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return parse_bearer(bytes(value).decode("latin-1"))
    return None


class LimitedPoll:
    """The polling endpoint behind the key's rpm. A key without rpm costs a hash and a cache
    lookup; the endpoint still authenticates itself (a cached entry never lets a revoked key in)."""

    def __init__(self, endpoint: ASGIApp) -> None:
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway: Gateway = scope["app"].state.gateway
        secret = _bearer_of_scope(scope) if gateway.limiter is not None else None
        if secret is not None:
            digest = keys.hash_key(secret)
            known = _cached(gateway, digest)
            if known is None:
                # As in the endpoint: SQLite answers faster than a thread-pool hop costs.
                if gateway.database.is_sqlite:
                    known = _look_up(gateway, secret, digest)
                else:
                    known = await run_in_threadpool(_look_up, gateway, secret, digest)
            key_id, rpm = known
            if key_id is not None and rpm is not None:
                try:
                    await run_in_threadpool(count, gateway, scope, key_id, rpm)
                except RateLimited:
                    # The cached entry may be older than a revocation or an expiry: 401 wins.
                    if await run_in_threadpool(_look_up, gateway, secret, digest) == (None, None):
                        raise AuthenticationFailed() from None
                    raise
        await self.endpoint(scope, receive, send)


class RateLimitHeaders:
    """Adds `X-RateLimit-*` to the response of every /v1 request that was counted."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                decision: Decision | None = scope.get(SCOPE_KEY)
                if decision is not None:
                    message = {**message, "headers": [*message.get("headers", ()), *decision.raw_headers()]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
