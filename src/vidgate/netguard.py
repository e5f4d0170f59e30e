"""An HTTP GET that only reaches public addresses, for URLs that strangers hand us (SSRF guard).

The host is resolved once, every resolved address is checked, and the connection goes to the
checked IP itself while the `Host` header and TLS SNI/certificate check keep the original name,
so a DNS answer that changes between check and connect (rebinding) cannot steer the request.
Redirects are followed by hand and every hop is checked the same way.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import httpx

from vidgate import __version__

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# (host, port) -> addresses; the default asks the system resolver in a thread.
Resolver = Callable[[str, int], Awaitable[Sequence[IPAddress]]]
# address -> why it is refused, or None; the default is `address_forbidden`.
Policy = Callable[[IPAddress], str | None]
# Told each body chunk's size as it arrives; may raise to abort (e.g. a budget shared by many fetches).
ChunkHook = Callable[[int], None]

_HEADERS = {
    "User-Agent": f"vidgate/{__version__}",
    "Accept": "image/*, */*;q=0.5",
    "Accept-Encoding": "gzip, deflate",
}
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}
# A last label that is a number can only be an IP literal in a form that `ipaddress` rejects
# (2130706433, 0x7f.1, 127.1, 0177.0.0.1); resolvers would still turn it into an address.
_NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+", re.IGNORECASE)


class UrlForbidden(Exception):
    """The URL may not be fetched (scheme, credentials, or a non-public address); nothing was sent."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


class FetchFailed(Exception):
    """The fetch was attempted and failed (HTTP status, timeout, size, connection, ...)."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


class ResponseTooLarge(FetchFailed):
    """The body, or its announced Content-Length, exceeds `max_bytes`."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        super().__init__(f"response larger than {max_bytes} bytes")


@dataclass(frozen=True)
class Fetched:
    data: bytes
    content_type: str | None
    final_url: str


def _nets(*rules: tuple[str, str]) -> tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...]:
    return tuple((ipaddress.ip_network(net), why) for net, why in rules)


# Checked in order, so the more specific reason wins (metadata before link-local).
_V4_RULES = _nets(
    ("169.254.169.254/32", "cloud metadata"),
    ("0.0.0.0/8", "unspecified"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared (CGNAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
)
_V6_RULES = _nets(
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "IPv4-compatible"),  # deprecated; kernels may route it as IPv4
    ("64:ff9b:1::/48", "local NAT64"),
    ("100::/64", "discard"),
    ("2001::/23", "IETF protocol"),  # includes Teredo 2001::/32
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "segment routing"),
    ("fc00::/7", "private (unique local)"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _embedded_v4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 address stands for on the wire (mapped, NAT64, 6to4), if any."""
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped
    if ip in _NAT64:
        return "NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour
    return None


def address_forbidden(ip: IPAddress) -> str | None:
    """Why `ip` must not be contacted for a stranger's URL ("loopback address 127.0.0.1"), or None."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_v4(ip)
        if embedded is not None:
            kind, v4 = embedded
            reason = address_forbidden(v4)
            return f"{kind} {reason}" if reason else None
        rules = _V6_RULES
    else:
        rules = _V4_RULES
    for net, why in rules:
        if ip in net:
            return f"{why} address {ip}"
    # Catch-all for ranges the tables miss (IANA special-purpose registry as Python knows it).
    if not ip.is_global:
        return f"non-public address {ip}"
    return None


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    """Every address the system resolver gives for `host` (getaddrinfo runs in the loop's executor)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchFailed(f"cannot resolve host {host}") from exc
    found: list[IPAddress] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        try:
            ip = ipaddress.ip_address(str(sockaddr[0]))
        except ValueError:
            continue
        if ip not in found:
            found.append(ip)
    return found


def _parse(url: str | httpx.URL) -> httpx.URL:
    try:
        return httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise FetchFailed(f"invalid URL ({exc})") from exc


def _check_url(url: httpx.URL) -> tuple[str, int]:
    """Scheme, credential and host-form rules; returns the ASCII host and port to resolve."""
    if url.scheme not in _DEFAULT_PORTS:
        raise UrlForbidden(f"scheme {url.scheme or '(none)'}")
    if url.userinfo:
        raise UrlForbidden("credentials in URL")
    host = url.raw_host.decode("ascii").lower()
    if not host:
        raise UrlForbidden("missing host")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        last = host.rstrip(".").rsplit(".", 1)[-1]
        if _NUMERIC_LABEL.fullmatch(last):
            raise UrlForbidden(f"non-canonical IP address {host}") from None
    return host, url.port or _DEFAULT_PORTS[url.scheme]


async def _addresses(url: httpx.URL, resolver: Resolver, policy: Policy | None) -> list[IPAddress]:
    """Resolve once and vet every answer: one bad address refuses the URL (no round-robin luck)."""
    host, port = _check_url(url)
    try:
        addresses: Sequence[IPAddress] = [ipaddress.ip_address(host)]
    except ValueError:
        addresses = await resolver(host, port)
    if not addresses:
        raise FetchFailed(f"cannot resolve host {host}")
    if policy is not None:
        for ip in addresses:
            reason = policy(ip)
            if reason:
                raise UrlForbidden(reason)
    return list(addresses)


def describe(exc: httpx.HTTPError) -> str:
    """A short, safe account of a transport error (for task errors and delivery logs)."""
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


async def send_pinned(
    client: httpx.AsyncClient,
    method: str,
    url: httpx.URL,
    addresses: list[IPAddress],
    *,
    headers: dict[str, str],
    timeout: float,
    content: bytes | None = None,
) -> httpx.Response:
    """Send to the vetted addresses (never a fresh lookup), trying the next one only when connecting
    fails; no redirects, no client auth. The response is streamed: the caller reads and closes it.
    `headers` must carry the URL's `Host`, since the connection goes to a bare address."""
    extensions: dict[str, object] = {"timeout": dict.fromkeys(("connect", "read", "write", "pool"), timeout)}
    if url.scheme == "https":
        extensions["sni_hostname"] = url.raw_host.decode("ascii")
    last: httpx.HTTPError | None = None
    for ip in addresses:
        # Drop a zone id: only reachable with allow_private, and httpx URLs cannot carry one.
        target = url.copy_with(host=str(ip).split("%", 1)[0])
        # A bare Request, not client.build_request: the client's default headers, cookies and
        # base URL belong to whatever else it talks to, never to a stranger's URL.
        request = httpx.Request(method, target, headers=headers, content=content, extensions=extensions)
        try:
            return await client.send(request, stream=True, follow_redirects=False, auth=None)
        except httpx.ConnectError as exc:
            last = exc  # the next address may answer
        except httpx.HTTPError as exc:
            raise FetchFailed(describe(exc)) from exc
    assert last is not None
    raise FetchFailed(describe(last)) from last


async def _send(
    client: httpx.AsyncClient, url: httpx.URL, addresses: list[IPAddress], timeout: float
) -> httpx.Response:
    headers = {**_HEADERS, "Host": url.netloc.decode("ascii")}
    return await send_pinned(client, "GET", url, addresses, headers=headers, timeout=timeout)


async def _read(response: httpx.Response, max_bytes: int, on_chunk: ChunkHook | None) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise ResponseTooLarge(max_bytes)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > max_bytes:
                raise ResponseTooLarge(max_bytes)
            if on_chunk is not None:
                on_chunk(len(chunk))
            chunks.append(chunk)
    except httpx.HTTPError as exc:
        raise FetchFailed(describe(exc)) from exc
    return b"".join(chunks)


async def _follow(
    client: httpx.AsyncClient,
    url: httpx.URL,
    *,
    max_bytes: int,
    max_redirects: int,
    timeout: float,
    resolver: Resolver,
    policy: Policy | None,
    on_chunk: ChunkHook | None,
) -> Fetched:
    for _hop in range(max_redirects + 1):
        addresses = await _addresses(url, resolver, policy)
        response = await _send(client, url, addresses, timeout)
        try:
            status = response.status_code
            if status in _REDIRECTS:
                location = response.headers.get("location")
                if not location:
                    raise FetchFailed(f"HTTP {status} without Location")
                try:
                    url = url.join(location)
                except httpx.InvalidURL as exc:
                    raise FetchFailed(f"invalid redirect location ({exc})") from exc
                continue
            if not 200 <= status < 300:
                raise FetchFailed(f"HTTP {status}")
            data = await _read(response, max_bytes, on_chunk)
            return Fetched(data=data, content_type=response.headers.get("content-type"), final_url=str(url))
        finally:
            await response.aclose()
    raise FetchFailed(f"more than {max_redirects} redirects")


async def fetch(
    url: str,
    *,
    max_bytes: int,
    timeout: float,
    allow_private: bool = False,
    max_redirects: int = 5,
    client: httpx.AsyncClient | None = None,
    resolver: Resolver | None = None,
    policy: Policy | None = None,
    on_chunk: ChunkHook | None = None,
) -> Fetched:
    """GET `url` into memory, refusing anything but public http(s) hosts on every redirect hop.

    `timeout` bounds the whole fetch (resolution, redirects and a slowly dripping body).
    `allow_private` skips the address policy only; scheme, credential, numeric-host-form, size
    and time rules stay.
    `resolver` and `policy` replace the system resolver and `address_forbidden` (tests, custom
    allow lists). A caller-supplied `client` lends only its transport (TLS settings, pool); its
    auth, default headers and cookies are not sent. It must not use a proxy, or the connection
    would not go to the vetted address; without one, a fresh client that ignores proxy settings
    is used.
    """
    parsed = _parse(url)
    active_policy = None if allow_private else (policy or address_forbidden)

    async def follow(c: httpx.AsyncClient) -> Fetched:
        return await _follow(
            c,
            parsed,
            max_bytes=max_bytes,
            max_redirects=max_redirects,
            timeout=timeout,
            resolver=resolver or system_resolver,
            policy=active_policy,
            on_chunk=on_chunk,
        )

    try:
        async with asyncio.timeout(timeout):
            if client is not None:
                return await follow(client)
            # Pooled connections are keyed by IP, so one client per fetch keeps a TLS connection
            # verified for one name from carrying another name's request.
            async with httpx.AsyncClient(trust_env=False, follow_redirects=False, timeout=timeout) as own:
                return await follow(own)
    except TimeoutError:
        raise FetchFailed(f"timed out after {timeout:g} s") from None


# --- for callers that make their own request (webhook deliveries POST) ------------------------------


def check_url(url: str) -> httpx.URL:
    """The scheme, credential and host-form rules alone, without DNS (FetchFailed: not a URL)."""
    parsed = _parse(url)
    _check_url(parsed)
    return parsed


async def vetted_addresses(url: httpx.URL, *, allow_private: bool = False) -> list[IPAddress]:
    """Resolve once and check every address as `fetch` does; connect only to these (rebinding)."""
    return await _addresses(url, system_resolver, None if allow_private else address_forbidden)
