"""A webhook receiver on loopback for tests: a real threaded HTTP server that records every POST,
answers 500 to the first `fail_first` requests of each `webhook-id`, and can be told to hang.

Also an independent Standard Webhooks verifier (hmac + hashlib + base64, nothing from vidgate),
so that tests check vidgate's signatures against more than vidgate's own SDK helper.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # names lowercased
    body: bytes
    answered: int  # the status the receiver answered

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data


class Receiver:
    def __init__(self, *, fail_first: int = 0, host: str = "127.0.0.1") -> None:
        self.fail_first = fail_first
        #: What it answers once an id's failures are used up.
        self.status = 200
        #: Seconds to wait before answering (a slow or hanging receiver).
        self.delay = 0.0
        #: Headers added to every answer (e.g. a Location with `status = 302`).
        self.answer_headers: dict[str, str] = {}
        self.requests: list[Received] = []
        self.started: list[str] = []  # webhook-ids of requests that arrived, answered or not
        self._seen: Counter[str] = Counter()
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                msg_id = headers.get("webhook-id", "")
                with outer._lock:
                    outer.started.append(msg_id)
                    outer._seen[msg_id] += 1
                    status = 500 if outer._seen[msg_id] <= outer.fail_first else outer.status
                if outer.delay:
                    time.sleep(outer.delay)
                answer = b"ok" if status < 300 else b"receiver says no"
                try:
                    self.send_response(status)
                    for name, value in outer.answer_headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except (BrokenPipeError, ConnectionResetError):
                    return
                with outer._lock:
                    outer.requests.append(Received(self.path, headers, body, status))

            def log_message(self, *args: object) -> None:
                return None

        self.host = host
        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()
        self.port = int(self.httpd.server_address[1])

    def url(self, path: str = "/hook") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def delivered(self) -> list[Received]:
        """Requests answered with a 2xx, in arrival order."""
        with self._lock:
            return [r for r in self.requests if 200 <= r.answered < 300]

    def events(self) -> list[str]:
        return [r.json["type"] for r in self.delivered()]

    def wait_for(self, done: Callable[[Receiver], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not done(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"receiver: condition not met in {timeout} s; got {self.summary()}")
            time.sleep(0.02)

    def summary(self) -> list[tuple[str, str, int]]:
        with self._lock:
            return [(r.id, r.json.get("type", "?"), r.answered) for r in self.requests]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def hand_verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Standard Webhooks by hand: HMAC-SHA256 over `id.timestamp.body` with the base64-decoded
    part of `whsec_...`, compared with each `v1,` signature of the header."""
    assert secret.startswith("whsec_")
    key = base64.b64decode(secret[len("whsec_") :])
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    given = [s.split(",", 1)[1] for s in headers["webhook-signature"].split(" ") if s.startswith("v1,")]
    return any(hmac.compare_digest(expected, g) for g in given)
