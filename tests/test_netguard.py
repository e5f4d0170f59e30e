"""netguard: the public-only HTTP GET, against real servers and listeners on loopback."""

from __future__ import annotations

import asyncio
import ipaddress
import select
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from vidgate.netguard import (
    Fetched,
    FetchFailed,
    IPAddress,
    Resolver,
    ResponseTooLarge,
    UrlForbidden,
    address_forbidden,
    fetch,
)

Route = Callable[[BaseHTTPRequestHandler], None]
LOOPBACK = ipaddress.ip_address("127.0.0.1")


class Server:
    """A threaded HTTP server on 127.0.0.1 with per-path routes, hit counts and seen Host headers."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: Counter[str] = Counter()
        self.hosts: list[str] = []
        self.headers: list[dict[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits[self.path] += 1
                server.hosts.append(self.headers.get("Host", ""))
                server.headers.append({k.lower(): v for k, v in self.headers.items()})
                route = server.routes.get(self.path)
                try:
                    if route is None:
                        send(self, b"nope", status=404)
                    else:
                        route(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up, as size and time limits make it do

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if ssl_context is not None:
            self.httpd.socket = ssl_context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def url(self, path: str, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def send(h: BaseHTTPRequestHandler, body: bytes, *, status: int = 200, ctype: str = "image/png") -> None:
    h.send_response(status)
    h.send_header("Content-Type", ctype)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def redirect(location: str, status: int = 302) -> Route:
    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return route


def body(data: bytes, ctype: str = "image/png") -> Route:
    return lambda h: send(h, data, ctype=ctype)


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def no_system_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Names other than localhost never reach the system resolver, so a regression that let httpx
    resolve a test name itself fails here instead of sending DNS queries off this machine."""
    real = socket.getaddrinfo

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name is not None and name.lower().rstrip(".") != "localhost":
            try:
                ipaddress.ip_address(name.split("%", 1)[0])
            except ValueError:
                raise socket.gaierror(socket.EAI_NONAME, f"tests resolve no names ({name})") from None
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)


@contextmanager
def listener(host: str = "127.0.0.1") -> Iterator[int]:
    """A listening socket that must see no connection attempt while the block runs."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.bind((host, 0))
    except OSError:
        pytest.skip(f"cannot listen on {host}")
    with sock:
        sock.listen(8)
        yield sock.getsockname()[1]
        readable, _, _ = select.select([sock], [], [], 0.05)
        assert not readable, f"a connection reached the listener on {host}"


def fake_resolver(table: dict[str, list[str]], calls: list[str] | None = None) -> Resolver:
    async def resolve(host: str, port: int) -> Sequence[IPAddress]:
        if calls is not None:
            calls.append(host)
        return [ipaddress.ip_address(a) for a in table[host]]

    return resolve


def loopback_one_is_public(ip: IPAddress) -> str | None:
    """Test policy: 127.0.0.1 plays a public host; every other address follows the real rules."""
    return None if ip == LOOPBACK else address_forbidden(ip)


def get(url: str, **kwargs: Any) -> Fetched:
    kwargs.setdefault("max_bytes", 1_000_000)
    kwargs.setdefault("timeout", 5.0)
    return asyncio.run(fetch(url, **kwargs))


# --- address_forbidden -------------------------------------------------------------------------

ADDRESSES: list[tuple[str, str | None]] = [
    ("8.8.8.8", None),
    ("1.1.1.1", None),
    ("172.32.0.1", None),
    ("100.128.0.1", None),
    ("2001:4860:4860::8888", None),
    ("2606:4700:4700::1111", None),
    ("::ffff:8.8.8.8", None),
    ("64:ff9b::808:808", None),
    ("2002:808:808::1", None),
    ("127.0.0.1", "loopback address 127.0.0.1"),
    ("127.255.255.254", "loopback"),
    ("10.1.2.3", "private address 10.1.2.3"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "cloud metadata"),
    ("169.254.1.1", "link-local"),
    ("100.64.0.1", "CGNAT"),
    ("100.127.255.255", "CGNAT"),
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("192.0.2.10", "documentation"),
    ("198.18.0.1", "benchmarking"),
    ("::1", "loopback address ::1"),
    ("::", "unspecified"),
    ("::ffff:127.0.0.1", "IPv4-mapped loopback address 127.0.0.1"),
    ("::ffff:10.0.0.1", "IPv4-mapped private"),
    ("::ffff:169.254.169.254", "IPv4-mapped cloud metadata"),
    ("::127.0.0.1", "IPv4-compatible"),
    ("::8.8.8.8", "IPv4-compatible"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("fc00::1", "unique local"),
    ("fd12:3456::1", "unique local"),
    ("fd00:ec2::254", "unique local"),
    ("fec0::1", "site-local"),
    ("ff02::1", "multicast"),
    ("2001:db8::1", "documentation"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "IETF"),
    ("2002:7f00:1::1", "6to4 loopback address 127.0.0.1"),
    ("2002:a00:1::", "6to4 private"),
    ("64:ff9b::7f00:1", "NAT64 loopback"),
    ("64:ff9b::a9fe:a9fe", "NAT64 cloud metadata"),
    ("64:ff9b:1::1", "local NAT64"),
]


@pytest.mark.parametrize(("address", "expected"), ADDRESSES)
def test_address_forbidden(address: str, expected: str | None) -> None:
    reason = address_forbidden(ipaddress.ip_address(address))
    if expected is None:
        assert reason is None
    else:
        assert reason is not None and expected in reason


# --- refusals: nothing may reach the listener ---------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "http://127.0.0.1:{port}/x",
        "http://127.1:{port}/x",
        "http://2130706433:{port}/x",
        "http://0x7f.0.0.1:{port}/x",
        "http://0x7f000001:{port}/x",
        "http://0177.0.0.01:{port}/x",
        "http://localhost:{port}/x",
        "http://LOCALHOST.:{port}/x",
        "http://[::ffff:127.0.0.1]:{port}/x",
        "http://[::ffff:7f00:1]:{port}/x",
        "https://127.0.0.1:{port}/x",
    ],
)
def test_loopback_forms_are_refused_without_connecting(template: str) -> None:
    with listener() as port, pytest.raises((UrlForbidden, FetchFailed)):
        get(template.format(port=port))


def test_ipv6_loopback_is_refused_without_connecting() -> None:
    with listener("::1") as port, pytest.raises(UrlForbidden, match="loopback"):
        get(f"http://[::1]:{port}/x")


def test_odd_numeric_hosts_say_why() -> None:
    with listener() as port:
        for host in ("2130706433", "0x7f.1", "127.1"):
            with pytest.raises(UrlForbidden, match="non-canonical IP address"):
                get(f"http://{host}:{port}/x")


@pytest.mark.parametrize(
    ("url", "detail"),
    [
        ("ftp://127.0.0.1:{port}/x", "scheme ftp"),
        ("file:///etc/passwd", "scheme file"),
        ("gopher://127.0.0.1:{port}/x", "scheme gopher"),
        ("http://user:secret@127.0.0.1:{port}/x", "credentials"),
    ],
)
def test_scheme_and_credentials_are_refused_even_when_private_is_allowed(url: str, detail: str) -> None:
    with listener() as port, pytest.raises(UrlForbidden, match=detail):
        get(url.format(port=port), allow_private=True)


def test_any_bad_address_among_several_refuses() -> None:
    with listener() as port, pytest.raises(UrlForbidden, match=r"127\.0\.0\.2"):
        get(
            f"http://public.example:{port}/x",
            resolver=fake_resolver({"public.example": ["127.0.0.1", "127.0.0.2"]}),
            policy=loopback_one_is_public,
        )


def test_redirect_to_loopback_is_refused(server: Server) -> None:
    with listener("127.0.0.2") as inner:
        server.routes["/hop"] = redirect(f"http://127.0.0.2:{inner}/secret")
        with pytest.raises(UrlForbidden, match=r"loopback address 127\.0\.0\.2"):
            get(
                server.url("/hop", host="public.example"),
                resolver=fake_resolver({"public.example": ["127.0.0.1"]}),
                policy=loopback_one_is_public,
            )
    assert server.hits["/hop"] == 1


@pytest.mark.parametrize("target", ["http://[::ffff:127.0.0.2]:{port}/", "http://internal.example:{port}/"])
def test_redirect_to_disguised_loopback_is_refused(server: Server, target: str) -> None:
    resolver = fake_resolver({"public.example": ["127.0.0.1"], "internal.example": ["127.0.0.2"]})
    with listener("127.0.0.2") as inner:
        server.routes["/hop"] = redirect(target.format(port=inner))
        with pytest.raises(UrlForbidden, match=r"127\.0\.0\.2"):
            get(server.url("/hop", host="public.example"), resolver=resolver, policy=loopback_one_is_public)


def test_redirect_to_other_scheme_is_refused(server: Server) -> None:
    server.routes["/hop"] = redirect("file:///etc/passwd")
    with pytest.raises(UrlForbidden, match="scheme file"):
        get(server.url("/hop"), allow_private=True)


def test_connects_to_the_resolved_address_once_keeping_the_host_header(server: Server) -> None:
    # A rebinding resolver: the first answer passes the check, later ones point elsewhere.
    calls: list[str] = []
    answers = iter([["127.0.0.1"], ["127.0.0.2"], ["127.0.0.2"]])

    async def rebinding(host: str, port: int) -> Sequence[IPAddress]:
        calls.append(host)
        return [ipaddress.ip_address(a) for a in next(answers)]

    server.routes["/img"] = body(b"pixels")
    with listener("127.0.0.2"):
        got = get(
            server.url("/img", host="public.example"), resolver=rebinding, policy=loopback_one_is_public
        )
    assert got.data == b"pixels"
    assert calls == ["public.example"]
    assert server.hosts == [f"public.example:{server.port}"]
    assert got.final_url == server.url("/img", host="public.example")


# --- successful fetches, statuses, redirects ----------------------------------------------------


def test_fetch_returns_body_and_content_type(server: Server) -> None:
    server.routes["/a.png"] = body(b"\x89PNG data", ctype="text/plain")
    got = get(server.url("/a.png"), allow_private=True)
    assert got == Fetched(data=b"\x89PNG data", content_type="text/plain", final_url=server.url("/a.png"))


@pytest.mark.parametrize("status", [404, 500, 403])
def test_non_2xx_fails(server: Server, status: int) -> None:
    server.routes["/s"] = lambda h: send(h, b"err", status=status)
    with pytest.raises(FetchFailed, match=f"HTTP {status}") as info:
        get(server.url("/s"), allow_private=True)
    assert info.value.detail == f"HTTP {status}"


def test_missing_path_is_404(server: Server) -> None:
    with pytest.raises(FetchFailed, match="HTTP 404"):
        get(server.url("/missing"), allow_private=True)


def test_redirect_without_location_fails(server: Server) -> None:
    server.routes["/r"] = lambda h: send(h, b"", status=302)
    with pytest.raises(FetchFailed, match="without Location"):
        get(server.url("/r"), allow_private=True)


def test_redirects_are_followed_up_to_the_limit(server: Server) -> None:
    for i in range(3):
        server.routes[f"/r{i}"] = redirect(f"/r{i + 1}", status=(301, 307, 308)[i])
    server.routes["/r3"] = body(b"end")
    got = get(server.url("/r0"), allow_private=True, max_redirects=3)
    assert got.data == b"end"
    assert got.final_url == server.url("/r3")
    with pytest.raises(FetchFailed, match="more than 2 redirects"):
        get(server.url("/r0"), allow_private=True, max_redirects=2)


def test_redirect_loop_stops(server: Server) -> None:
    server.routes["/loop"] = redirect("/loop")
    with pytest.raises(FetchFailed, match="redirects"):
        get(server.url("/loop"), allow_private=True)
    assert server.hits["/loop"] == 6


def test_absolute_redirect_to_a_public_name_is_checked_and_followed(server: Server) -> None:
    calls: list[str] = []
    resolver = fake_resolver({"a.example": ["127.0.0.1"], "b.example": ["127.0.0.1"]}, calls)
    server.routes["/from"] = redirect(server.url("/to", host="b.example"), status=303)
    server.routes["/to"] = body(b"ok")
    got = get(server.url("/from", host="a.example"), resolver=resolver, policy=loopback_one_is_public)
    assert got.data == b"ok"
    assert calls == ["a.example", "b.example"]
    assert server.hosts == [f"a.example:{server.port}", f"b.example:{server.port}"]


def test_unresolvable_host_fails() -> None:
    async def nothing(host: str, port: int) -> Sequence[IPAddress]:
        return []

    with pytest.raises(FetchFailed, match="cannot resolve"):
        get("http://nowhere.example/x", resolver=nothing)


def test_connection_refused_fails() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(FetchFailed):
            get(f"http://127.0.0.1:{port}/x", allow_private=True)


# --- size and time limits -----------------------------------------------------------------------


def test_declared_length_over_limit_fails_before_reading(server: Server) -> None:
    def declares_big(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(10 * 1024 * 1024))
        h.end_headers()
        h.wfile.write(b"x" * 1000)

    server.routes["/big"] = declares_big
    with pytest.raises(ResponseTooLarge) as info:
        get(server.url("/big"), allow_private=True, max_bytes=100_000)
    assert info.value.max_bytes == 100_000


def test_undeclared_body_over_limit_stops_streaming(server: Server) -> None:
    sent = Counter[str]()

    def endless(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Connection", "close")
        h.end_headers()
        for _ in range(2000):  # 128 MB at most, far beyond the limit
            h.wfile.write(b"x" * 65536)
            sent["bytes"] += 65536

    server.routes["/endless"] = endless
    with pytest.raises(ResponseTooLarge, match="larger than 200000 bytes"):
        get(server.url("/endless"), allow_private=True, max_bytes=200_000)


def test_body_at_the_limit_is_accepted(server: Server) -> None:
    server.routes["/exact"] = body(b"y" * 5000)
    assert len(get(server.url("/exact"), allow_private=True, max_bytes=5000).data) == 5000


def test_chunk_hook_sees_every_byte_and_may_abort(server: Server) -> None:
    server.routes["/b"] = body(b"z" * 30_000)
    seen: list[int] = []
    get(server.url("/b"), allow_private=True, on_chunk=seen.append)
    assert sum(seen) == 30_000

    class Budget(Exception):
        pass

    def stop(n: int) -> None:
        raise Budget

    with pytest.raises(Budget):
        get(server.url("/b"), allow_private=True, on_chunk=stop)


def test_slow_drip_times_out(server: Server) -> None:
    def drip(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "1000")
        h.end_headers()
        for _ in range(50):  # bounded: 5 s at most
            h.wfile.write(b"x")
            h.wfile.flush()
            time.sleep(0.1)

    server.routes["/drip"] = drip
    started = time.monotonic()
    with pytest.raises(FetchFailed, match="timed out"):
        get(server.url("/drip"), allow_private=True, timeout=0.6)
    assert time.monotonic() - started < 2.0


def test_slow_headers_time_out(server: Server) -> None:
    def stall(h: BaseHTTPRequestHandler) -> None:
        time.sleep(2.0)
        send(h, b"late")

    server.routes["/stall"] = stall
    started = time.monotonic()
    with pytest.raises(FetchFailed, match="timed out"):
        get(server.url("/stall"), allow_private=True, timeout=0.4)
    assert time.monotonic() - started < 1.5


def test_caller_client_lends_transport_but_not_its_credentials(server: Server) -> None:
    server.routes["/c"] = body(b"via client")

    async def go() -> Fetched:
        async with httpx.AsyncClient(
            trust_env=False,
            auth=("provider", "secret"),
            headers={"X-Api-Key": "provider-secret"},
            cookies={"session": "provider-cookie"},
        ) as client:
            return await fetch(server.url("/c"), max_bytes=100, timeout=5, allow_private=True, client=client)

    assert asyncio.run(go()).data == b"via client"
    (seen,) = server.headers
    assert not {"authorization", "x-api-key", "cookie"} & set(seen)
    assert seen["user-agent"].startswith("vidgate/")


# --- TLS: the connection goes to the IP, SNI and certificate stay with the name -----------------


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[Server, ssl.SSLContext, list[str | None]]]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not available")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=public.example",
         "-addext", "subjectAltName=DNS:public.example"],
        check=True, capture_output=True,
    )  # fmt: skip
    server_names: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    def record_sni(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        server_names.append(name)

    context.sni_callback = record_sni
    s = Server(ssl_context=context)
    yield s, ssl.create_default_context(cafile=str(cert)), server_names
    s.close()


def test_https_uses_name_for_sni_and_certificate(
    tls_server: tuple[Server, ssl.SSLContext, list[str | None]],
) -> None:
    server, trust, server_names = tls_server
    server.routes["/img"] = body(b"secure")
    resolver = fake_resolver({"public.example": ["127.0.0.1"], "other.example": ["127.0.0.1"]})

    async def go(host: str) -> Fetched:
        async with httpx.AsyncClient(verify=trust, trust_env=False) as client:
            return await fetch(
                server.url("/img", host=host, scheme="https"),
                max_bytes=100,
                timeout=5,
                client=client,
                resolver=resolver,
                policy=loopback_one_is_public,
            )

    assert asyncio.run(go("public.example")).data == b"secure"
    assert server_names == ["public.example"]
    assert server.hosts == [f"public.example:{server.port}"]
    with pytest.raises(FetchFailed, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
        asyncio.run(go("other.example"))
