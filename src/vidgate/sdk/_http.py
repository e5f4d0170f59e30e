"""Transport plumbing shared by `Client` and `AsyncClient`: settings, requests, retry policy.

Retry policy (openai-python's, narrowed to what is safe here):
- 429 and connection failures before a request was sent: always retried (nothing happened).
- 408, 5xx, read timeouts and broken connections: retried only for idempotent requests (reads,
  cancel, and a submit that carries an `Idempotency-Key`, which the SDK always sends).
- Delay: `Retry-After` (seconds or an HTTP date, `retry-after-ms` too) when the server sent one
  and it is at most `MAX_RETRY_AFTER`; else exponential backoff 0.5 s → 8 s with jitter.
"""

from __future__ import annotations

import email.utils
import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from vidgate import __version__
from vidgate.sdk.errors import APIConnectionError, APITimeoutError, VidgateError, status_error

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=5.0)
DEFAULT_MAX_RETRIES = 2
INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
MAX_RETRY_AFTER = 60.0
RESPONSE_VERSION = "2026-07-27"
_RETRY_STATUSES = frozenset({408, 500, 502, 503, 504})


@dataclass(frozen=True)
class Settings:
    api_key: str
    base_url: str
    timeout: float | httpx.Timeout
    max_retries: int
    default_headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def resolve(
        cls,
        api_key: str | None,
        base_url: str | None,
        timeout: float | httpx.Timeout | None,
        max_retries: int | None,
        default_headers: Mapping[str, str] | None,
    ) -> Settings:
        key = api_key if api_key is not None else os.environ.get("VIDGATE_API_KEY")
        if not key:
            raise VidgateError("no API key: pass api_key=... or set VIDGATE_API_KEY")
        url = base_url or os.environ.get("VIDGATE_BASE_URL") or DEFAULT_BASE_URL
        return cls(
            api_key=key,
            base_url=url.rstrip("/"),
            timeout=DEFAULT_TIMEOUT if timeout is None else timeout,
            max_retries=DEFAULT_MAX_RETRIES if max_retries is None else max_retries,
            default_headers=dict(default_headers or {}),
        )

    def headers(self) -> dict[str, str]:
        return {"User-Agent": f"vidgate-python/{__version__}", **self.default_headers}


@dataclass
class Call:
    """One API request, described once and sent by either client (with retries)."""

    method: str
    path: str
    idempotent: bool
    params: dict[str, Any] | None = None
    json: Any = None
    files: dict[str, tuple[str, bytes]] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float | httpx.Timeout | None = None
    auth: bool = True

    def build(self, http: httpx.Client | httpx.AsyncClient, settings: Settings) -> httpx.Request:
        headers = dict(self.headers)
        if self.auth:
            headers["Authorization"] = f"Bearer {settings.api_key}"
        params = {k: v for k, v in (self.params or {}).items() if v is not None}
        timeout = self.timeout if self.timeout is not None else settings.timeout
        return http.build_request(
            self.method,
            self.path,
            params=params or None,
            json=self.json,
            files=self.files,
            headers=headers,
            timeout=timeout,
        )


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asked us to wait (`retry-after-ms`, `Retry-After` seconds or date)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms:
        try:
            return float(raw_ms) / 1000
        except ValueError:
            pass
    raw = lowered.get("retry-after")
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        parsed = email.utils.parsedate_tz(raw)
        if parsed is None:
            return None
        return float(email.utils.mktime_tz(parsed) - time.time())


def retry_delay(attempt: int, headers: Mapping[str, str] | None) -> float:
    """Seconds before retry number `attempt` (0-based)."""
    hinted = parse_retry_after(headers or {})
    if hinted is not None and 0 <= hinted <= MAX_RETRY_AFTER:
        return hinted
    base = min(INITIAL_RETRY_DELAY * 2.0**attempt, MAX_RETRY_DELAY)
    return base * (1 - 0.25 * random.random())


def retry_status(call: Call, response: httpx.Response) -> bool:
    if response.status_code == 429:
        return True
    return call.idempotent and response.status_code in _RETRY_STATUSES


def retry_exception(call: Call, exc: httpx.TransportError) -> bool:
    # A refused connection never reached the server: always safe to send again.
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout) or call.idempotent


def transport_error(exc: httpx.TransportError) -> APIConnectionError:
    if isinstance(exc, httpx.TimeoutException):
        return APITimeoutError(f"request timed out: {exc}")
    return APIConnectionError(f"cannot reach vidgate: {exc}")


def decode(response: httpx.Response) -> Any:
    """The JSON of a 2xx answer, or raise the `APIStatusError` subclass of an error answer."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if response.is_success:
        if body is None:
            raise VidgateError(f"unexpected non-JSON answer ({response.status_code})")
        return body
    raise status_error(response.status_code, body, response.headers, response.text)


def data_of(body: Any) -> Any:
    """Strip apimart's `{"code": 200, "data": ...}` wrapper where there is one."""
    if isinstance(body, dict) and "data" in body and "code" in body:
        return body["data"]
    return body
