"""Virtual clock for the fake upstreams.

Every duration a fake simulates (queueing, generation, URL lifetimes, callback retry gaps) is in
*virtual* seconds. Virtual time runs `time_factor` times faster than real time, and tests can jump it
forward with `advance()`, so a "5 minute" job finishes in milliseconds. Real-world delays that exist to
hit a client's timeout (slow responses) are deliberately *not* scaled.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from email.utils import formatdate


class Clock:
    """Monotonic virtual clock anchored at the real wall clock when created.

    `now()` is a Unix timestamp (float seconds) in virtual time, so it can be formatted as a date.
    Changing the factor re-anchors the clock so virtual time never jumps backwards.
    """

    def __init__(self, time_factor: float = 1.0) -> None:
        if time_factor <= 0:
            raise ValueError("time_factor must be > 0")
        self._lock = threading.Lock()
        self._factor = time_factor
        self._real_anchor = time.monotonic()
        self._virtual_anchor = time.time()

    @property
    def time_factor(self) -> float:
        return self._factor

    def now(self) -> float:
        with self._lock:
            return self._virtual_anchor + (time.monotonic() - self._real_anchor) * self._factor

    def set_time_factor(self, time_factor: float) -> None:
        if time_factor <= 0:
            raise ValueError("time_factor must be > 0")
        with self._lock:
            real = time.monotonic()
            self._virtual_anchor += (real - self._real_anchor) * self._factor
            self._real_anchor = real
            self._factor = time_factor

    def advance(self, seconds: float) -> float:
        """Jump virtual time forward (never backwards); returns the new now()."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._virtual_anchor += seconds
        return self.now()

    def real_seconds(self, virtual_seconds: float) -> float:
        """How long a virtual interval lasts in real time (for asyncio.sleep)."""
        return max(0.0, virtual_seconds) / self._factor


def iso_z(ts: float) -> str:
    """ISO 8601 with microseconds and a `Z` suffix, as Vidu writes `created_at`."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def http_date(ts: float) -> str:
    """RFC 7231 date in GMT, e.g. `Tue, 06 May 2025 12:09:42 GMT`."""
    return formatdate(ts, usegmt=True)
