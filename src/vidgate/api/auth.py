"""`Authorization: Bearer <key>` on every /v1 route."""

from __future__ import annotations

import time

from fastapi import Request

from vidgate import keys
from vidgate.api import Gateway
from vidgate.errors import AuthenticationFailed

_TOUCH_EVERY = 60.0


def gateway_of(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def bearer_secret(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise AuthenticationFailed()
    return secret.strip()


def current_key(request: Request) -> keys.ApiKey:
    """FastAPI dependency (sync: runs in the thread pool, like the DB call it makes)."""
    gateway = gateway_of(request)
    key = keys.authenticate(gateway.database, bearer_secret(request))
    if key is None:
        raise AuthenticationFailed()
    note_use(gateway, key.id)
    return key


def note_use(gateway: Gateway, key_id: str) -> None:
    now = time.time()
    if now - gateway.touched.get(key_id, 0.0) >= _TOUCH_EVERY:
        gateway.touched[key_id] = now
        keys.touch(gateway.database, key_id, now)
