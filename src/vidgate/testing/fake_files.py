"""Expiring, signed result URLs served by the fakes themselves, behaving like a CDN.

A URL is minted at answer time (as real providers re-sign on every query) and carries its expiry
in virtual time plus an HMAC, so nothing is stored per URL: thousands of jobs cost nothing until a
file is fetched. Fetching checks the signature (403 `SignatureDoesNotMatch`), the expiry
(403 `AccessDenied` by default, like an expired OSS/S3 signed URL) and the job (404 `NoSuchKey`),
then serves the bytes with single-range `Range` support (206 / 416), `HEAD`, `ETag` and
`Accept-Ranges`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from vidgate.testing.fake_clock import Clock, http_date


@dataclass(frozen=True)
class FileBody:
    data: bytes
    content_type: str


Resolver = Callable[[str, str], Awaitable[FileBody | None]]

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _cdn_error(status: int, code: str, message: str) -> Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    )
    return Response(body, status_code=status, media_type="application/xml")


class SignedFiles:
    """Mints and checks `/_files/{job_id}/{name}?expires=..&sig=..` URLs."""

    def __init__(self, clock: Clock, secret: bytes) -> None:
        self._clock = clock
        self._secret = secret

    def _sig(self, job_id: str, name: str, expires: int) -> str:
        msg = f"{job_id}/{name}:{expires}".encode()
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()[:32]

    def url(self, base_url: str, job_id: str, name: str, ttl_s: float) -> str:
        expires = int(self._clock.now() + ttl_s)
        sig = self._sig(job_id, name, expires)
        return f"{base_url.rstrip('/')}/_files/{quote(job_id)}/{quote(name)}?expires={expires}&sig={sig}"

    def check(self, job_id: str, name: str, expires: str, sig: str, expired_status: int) -> Response | None:
        """None when the URL is valid now, else the CDN-style error response."""
        if not expires.isdigit() or not hmac.compare_digest(self._sig(job_id, name, int(expires)), sig):
            return _cdn_error(
                403, "SignatureDoesNotMatch", "The request signature we calculated does not match."
            )
        if self._clock.now() > int(expires):
            return _cdn_error(expired_status, "AccessDenied", "Request has expired.")
        return None


def parse_range(header: str | None, total: int) -> tuple[int, int] | str | None:
    """(first, last) inclusive for a satisfiable single range, None to send the whole file,
    or "unsatisfiable" (416). Multi-range and malformed headers are ignored, as RFC 9110 allows."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        return None
    first_s, last_s = match.groups()
    if not first_s and not last_s:
        return None
    if not first_s:  # suffix range: the last N bytes
        n = int(last_s)
        if n == 0:
            return "unsatisfiable"
        return max(0, total - n), total - 1
    first = int(first_s)
    last = int(last_s) if last_s else total - 1
    if last_s and last < first:
        return None
    if first >= total:
        return "unsatisfiable"
    return first, min(last, total - 1)


def file_response(request: Request, body: FileBody, last_modified: float) -> tuple[Response, bool]:
    """The response for `body` honouring Range/HEAD; the flag says whether a range was requested."""
    total = len(body.data)
    etag = '"' + hashlib.md5(body.data, usedforsecurity=False).hexdigest() + '"'
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Last-Modified": http_date(last_modified),
        "Cache-Control": "private, max-age=3600",
    }
    head = request.method == "HEAD"
    header = request.headers.get("range")
    wanted = parse_range(header, total)
    if wanted == "unsatisfiable":
        headers["Content-Range"] = f"bytes */{total}"
        return Response(b"", status_code=416, headers=headers), True
    if isinstance(wanted, tuple):
        first, last = wanted
        headers["Content-Range"] = f"bytes {first}-{last}/{total}"
        chunk = body.data[first : last + 1]
        headers["Content-Length"] = str(len(chunk))
        return Response(
            b"" if head else chunk, status_code=206, headers=headers, media_type=body.content_type
        ), True
    headers["Content-Length"] = str(total)
    return Response(
        b"" if head else body.data, status_code=200, headers=headers, media_type=body.content_type
    ), bool(header)
