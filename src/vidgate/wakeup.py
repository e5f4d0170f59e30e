"""LISTEN/NOTIFY wake-up for workers on PostgreSQL.

A trigger (migration 0007) notifies `CHANNEL` when a task is submitted or made due now; each
worker listens on one dedicated connection and starts a claim round at once instead of at its next
poll. Polling stays the safety net: a lost connection, a notification sent while the listener was
reconnecting, or a database without the trigger only cost latency, never a task.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg

log = logging.getLogger(__name__)

CHANNEL = "vidgate_tasks_due"
#: How often the listening thread looks at its stop flag between notifications.
_CHECK_STOP_SECONDS = 1.0
_MAX_BACKOFF_SECONDS = 30.0


def driver_url(url: str) -> str:
    """The libpq form of a SQLAlchemy PostgreSQL URL (`postgresql+psycopg://` -> `postgresql://`)."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.split('+', 1)[0]}{sep}{rest}"


class Listener:
    """A daemon thread that calls `on_notify` for every due-task notification (from its thread)."""

    def __init__(self, url: str, on_notify: Callable[[], None], *, name: str = "vidgate-listen") -> None:
        self._url = driver_url(url)
        self._on_notify = on_notify
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        #: Set each time the listener is (re)connected and listening: for tests and health.
        self.listening = threading.Event()
        self.connections = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self._listen()
                failures = 0
            except Exception as exc:
                self.listening.clear()
                failures += 1
                delay = min(_MAX_BACKOFF_SECONDS, 0.5 * 2 ** min(failures, 6))
                # Each outage is logged once; polling carries on meanwhile.
                if failures == 1:
                    log.warning("task notifications lost (%s); polling until they are back", exc)
                self._stop.wait(delay)

    def _listen(self) -> None:
        with psycopg.connect(self._url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f"LISTEN {CHANNEL}")
            self.connections += 1
            self.listening.set()
            # Tasks may have become due while no one listened: one wake-up covers them.
            self._on_notify()
            while not self._stop.is_set():
                woke = False
                for _ in conn.notifies(timeout=_CHECK_STOP_SECONDS, stop_after=1):
                    woke = True
                if woke:
                    self._on_notify()
