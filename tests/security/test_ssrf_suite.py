"""SSRF, end to end: hostile image URLs submitted through the API to a worker that fetches with
`allow_private_urls=False`. Every task is refused (at submit, or failed with a clear error code), and
a listener on loopback that every hostile address points at must receive no connection.

The unit-level cases (each address range, rebinding, redirects, size and time limits, bombs) live in
tests/test_netguard.py and tests/test_images.py; this suite checks that the worker path keeps them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import auth, png_bytes
from tests.test_netguard import listener, no_system_dns
from vidgate import netguard
from vidgate.api import create_app
from vidgate.config import Settings
from vidgate.db import Database

__all__ = ["no_system_dns"]  # autouse: no test name ever reaches the system resolver

PIX = {"model": "pixverse-v6", "prompt": "x", "resolution": "360p", "duration": 1}
#: Plays a public host: the test policy treats this one loopback address as public (Linux routes
#: all of 127/8 to lo), so "public" servers can redirect or misbehave without leaving the machine.
PUBLIC = "127.0.0.2"
REFUSED = {"image_url_refused"}
#: Numeric host spellings that httpx itself will not parse (0177.0.0.1) fail as an invalid URL.
REFUSED_OR_INVALID = {"image_url_refused", "image_fetch_failed"}


def hostile_forms(port: int) -> list[str]:
    """Every spelling of a forbidden address we know of, all aimed at the listener's port."""
    return [
        f"http://127.0.0.1:{port}/a.png",
        f"http://localhost:{port}/a.png",
        f"http://LOCALHOST.:{port}/a.png",
        f"http://127.1:{port}/a.png",
        f"http://2130706433:{port}/a.png",  # decimal
        f"http://0x7f000001:{port}/a.png",  # hex
        f"http://0x7f.0.0.1:{port}/a.png",
        f"http://0177.0.0.1:{port}/a.png",  # octal
        f"http://017700000001:{port}/a.png",
        f"http://0.0.0.0:{port}/a.png",
        f"http://[::1]:{port}/a.png",
        f"http://[::]:{port}/a.png",
        f"http://[::ffff:127.0.0.1]:{port}/a.png",  # IPv4-mapped IPv6
        f"http://[::ffff:7f00:1]:{port}/a.png",
        f"http://[0:0:0:0:0:ffff:127.0.0.1]:{port}/a.png",
        f"http://[64:ff9b::7f00:1]:{port}/a.png",  # NAT64 of loopback
        f"http://[2002:7f00:1::]:{port}/a.png",  # 6to4 of loopback
        f"http://10.0.0.1:{port}/a.png",
        f"http://172.16.0.1:{port}/a.png",
        f"http://192.168.1.1:{port}/a.png",
        f"http://100.64.0.1:{port}/a.png",  # carrier-grade NAT
        f"http://169.254.169.254:{port}/latest/meta-data/",  # cloud metadata
        f"http://[fe80::1]:{port}/a.png",  # link-local v6
        f"http://[fd00::1]:{port}/a.png",  # unique local v6
        f"http://user:pass@example.com:{port}/a.png",  # credentials
        "file:///etc/passwd",
        f"ftp://127.0.0.1:{port}/a.png",
        f"gopher://127.0.0.1:{port}/_x",
        f"http://evil.example:{port}/a.png",  # resolves to loopback (fake DNS below)
        f"http://evil6.example:{port}/a.png",  # resolves to ::1
        f"http://mixed.example:{port}/a.png",  # one public and one private answer
    ]


FAKE_DNS = {
    "evil.example": ["127.0.0.1"],
    "evil6.example": ["::1"],
    "mixed.example": ["93.184.216.34", "127.0.0.1"],
    "public.example": [PUBLIC],
    "localhost": ["127.0.0.1", "::1"],
}


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names resolve from FAKE_DNS (recorded); 127.0.0.2 counts as public, the rest as usual."""
    asked: list[str] = []

    async def resolve(host: str, port: int) -> Sequence[netguard.IPAddress]:
        asked.append(host)
        name = host.lower().rstrip(".")
        if name not in FAKE_DNS:
            raise netguard.FetchFailed(f"cannot resolve {host}")
        return [ipaddress.ip_address(a) for a in FAKE_DNS[name]]

    real_policy = netguard.address_forbidden

    def policy(ip: netguard.IPAddress) -> str | None:
        return None if str(ip) == PUBLIC else real_policy(ip)

    monkeypatch.setattr(netguard, "system_resolver", resolve)
    monkeypatch.setattr(netguard, "address_forbidden", policy)
    return asked


@pytest.fixture
def guarded_client(settings: Settings, database: Database, api_key: str) -> Iterator[TestClient]:
    configured = settings.model_copy(update={"allow_private_urls": False, "fetch_timeout_seconds": 1.5})
    with TestClient(create_app(configured, run_worker=True), headers=auth(api_key)) as c:
        yield c


Outcome = tuple[int, dict[str, Any]]


def run_all(client: TestClient, urls: list[str], timeout: float = 30) -> dict[str, Outcome]:
    """Submit one task per URL; url -> (submit status, final task or the submit error)."""
    submitted: dict[str, str] = {}
    out: dict[str, Outcome] = {}
    for url in urls:
        response = client.post("/v1/videos/generations", json={**PIX, "image_urls": [url]})
        if response.status_code == 200:
            submitted[url] = response.json()["data"][0]["task_id"]
        else:
            out[url] = (response.status_code, response.json())
    deadline = time.time() + timeout
    while submitted and time.time() < deadline:
        for url, task_id in list(submitted.items()):
            data = client.get(f"/v1/tasks/{task_id}").json()["data"]
            if data["status"] in ("completed", "failed", "cancelled"):
                out[url] = (200, data)
                del submitted[url]
        time.sleep(0.05)
    assert not submitted, f"tasks did not finish: {submitted}"
    return out


def assert_refused(url: str, status: int, body: dict[str, Any], codes: set[str]) -> None:
    if status != 200:  # refused at submit: the envelope, a 400 naming the field
        assert status == 400, (url, status, body)
        assert body["error"]["code"] == 400 and body["error"]["param"].startswith("image_urls"), (url, body)
        assert body["error"]["message"]
        return
    assert body["status"] == "failed", (url, body)
    assert body["error"]["code"] in codes, (url, body["error"])
    assert body["error"]["message"] and "Traceback" not in body["error"]["message"]


def test_hostile_addresses_are_refused_and_nothing_connects(
    guarded_client: TestClient, fake_dns: list[str]
) -> None:
    with listener("127.0.0.1") as port:
        urls = hostile_forms(port)
        results = run_all(guarded_client, urls)
    for url in urls:
        status, body = results[url]
        assert_refused(url, status, body, REFUSED_OR_INVALID)
        if status == 200 and body["error"]["code"] == "image_fetch_failed":
            assert "invalid URL" in body["error"]["message"], (url, body["error"])
    # A name is resolved once per fetch and its answer checked before any connection.
    assert {"evil.example", "evil6.example", "mixed.example"} <= set(fake_dns)


def test_no_connection_on_ipv6_loopback_either(guarded_client: TestClient, fake_dns: list[str]) -> None:
    with listener("::1") as port:
        urls = [f"http://[::1]:{port}/a.png", f"http://evil6.example:{port}/a.png"]
        results = run_all(guarded_client, urls)
    for url in urls:
        assert_refused(url, *results[url], REFUSED)


# --- a "public" server that misbehaves ------------------------------------------------------------------

Handler = Callable[[BaseHTTPRequestHandler], None]


class PublicServer:
    def __init__(self, routes: dict[str, Handler]) -> None:
        self.routes = routes
        self.hits: list[str] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                outer.hits.append(self.path)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError, KeyError):
                    outer.routes[self.path](self)

            def log_message(self, *args: object) -> None:
                return None

        try:
            self.httpd = ThreadingHTTPServer((PUBLIC, 0), H)
        except OSError:
            pytest.skip(f"cannot listen on {PUBLIC}")
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True).start()
        self.base = f"http://{PUBLIC}:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _send(
    h: BaseHTTPRequestHandler, data: bytes, ctype: str = "image/png", length: int | None = None
) -> None:
    h.send_response(200)
    h.send_header("Content-Type", ctype)
    h.send_header("Content-Length", str(len(data) if length is None else length))
    h.end_headers()
    h.wfile.write(data)


def _redirect(location: str) -> Handler:
    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(302)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return route


def _endless(h: BaseHTTPRequestHandler) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "image/png")
    h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    chunk = b"\0" * 65536
    for _ in range(10_000):  # 650 MB if nobody stops reading
        h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))


def _drip(h: BaseHTTPRequestHandler) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "image/png")
    h.send_header("Content-Length", "100000")
    h.end_headers()
    for _ in range(100):
        h.wfile.write(b"\x89")
        h.wfile.flush()
        time.sleep(0.2)


def _bomb_png(side: int = 30_000) -> bytes:
    """A tiny PNG whose header claims side x side pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\0" * (side * 3 + 1) * 64, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def test_misbehaving_public_servers_fail_cleanly(guarded_client: TestClient, fake_dns: list[str]) -> None:
    with listener("127.0.0.1") as port:
        private = f"http://127.0.0.1:{port}/a.png"
        server = PublicServer(
            {
                "/to-private": _redirect(private),
                "/to-private-v6": _redirect(f"http://[::ffff:127.0.0.1]:{port}/a.png"),
                "/to-evil-name": _redirect(f"http://evil.example:{port}/a.png"),
                "/to-file": _redirect("file:///etc/passwd"),
                "/loop": _redirect("/loop"),
                "/big": lambda h: _send(h, b"\0" * (60 * 1024 * 1024)),
                "/lying-length": lambda h: _send(h, b"\0" * 10, length=10**12),
                "/endless": _endless,
                "/drip": _drip,
                "/html": lambda h: _send(h, b"<html><body>not an image</body></html>", "text/html"),
                "/text-png": lambda h: _send(h, b"hello", "image/png"),
                "/bomb": lambda h: _send(h, _bomb_png()),
            }
        )
        try:
            cases = {
                "/to-private": REFUSED,
                "/to-private-v6": REFUSED,
                "/to-evil-name": REFUSED,
                "/to-file": REFUSED,
                "/loop": {"image_fetch_failed"},
                "/big": {"image_too_large", "inputs_too_large"},
                "/lying-length": {"image_too_large", "inputs_too_large", "image_fetch_failed"},
                "/endless": {"image_too_large", "inputs_too_large"},
                "/drip": {"image_fetch_failed"},
                "/html": {"image_format", "image_unreadable"},
                "/text-png": {"image_format", "image_unreadable"},
                "/bomb": {"image_too_many_pixels", "image_unreadable"},
            }
            started = time.monotonic()
            results = run_all(guarded_client, [server.base + path for path in cases])
            elapsed = time.monotonic() - started
        finally:
            server.close()
    for path, codes in cases.items():
        assert_refused(path, *results[server.base + path], codes)
    assert elapsed < 25  # the drip and the endless body are cut off by time and size limits


def test_public_name_is_connected_by_its_checked_address(
    guarded_client: TestClient, fake_dns: list[str]
) -> None:
    """The control case: a fine image on a "public" name is fetched (so the refusals above are the
    guard at work, not a broken fetch path)."""
    server = PublicServer({"/ok.png": lambda h: _send(h, png_bytes((200, 30, 30)))})
    try:
        port = server.httpd.server_address[1]
        results = run_all(guarded_client, [f"http://public.example:{port}/ok.png"])
    finally:
        server.close()
    [(status, task)] = results.values()
    assert status == 200 and task["status"] == "completed", task
    assert server.hits == ["/ok.png"]


def test_extension_source_is_a_task_of_the_same_key(
    guarded_client: TestClient, database: Database, other_key: str
) -> None:
    """Extensions take a task id, never a URL: another key's task cannot be named as a source."""
    first = guarded_client.post("/v1/videos/generations", json=PIX).json()["data"][0]["task_id"]
    answers = []
    for source in (first, "task_01AAAAAAAAAAAAAAAAAAAAAAAA"):
        response = guarded_client.post(
            "/v1/videos/generations", json={**PIX, "extend_from_task_id": source}, headers=auth(other_key)
        )
        assert response.status_code in (400, 404), response.text
        error = response.json()["error"]
        assert error["code"] == response.status_code
        answers.append((response.status_code, error["type"], error.get("param")))
    # Someone else's task reads exactly like one that does not exist.
    assert answers[0] == answers[1]
