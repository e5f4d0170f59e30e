"""Signed, expiring URLs for stored files: `/files/<key>?expires=<unix>&sig=<hmac>`.

The signature covers key and expiry, so neither can be changed; it needs no API key, which lets
a browser `<video>` tag play a result directly.

`Signer.url` always makes such a `/files/` URL (upload URLs, on every storage backend).
`Signer.link` makes the link a *result* gets: the storage backend's own (`Storage.url`: the same
`/files/` URL on local storage, a presigned GET on S3) once `build_gateway` has bound the backend
with `with_links`, else the `/files/` URL.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field, replace
from typing import Protocol
from urllib.parse import parse_qs, quote, unquote, urlsplit

import sqlalchemy as sa

from vidgate import db

FILES_PREFIX = "/files/"


def load_secret(database: db.Database, configured: str) -> bytes:
    """The configured secret, else one generated once and shared by every process via the database."""
    if configured:
        return configured.encode()
    with database.write() as conn:
        row = conn.execute(sa.select(db.meta.c.value).where(db.meta.c.name == "signing_key")).first()
        if row is None:
            value = secrets.token_urlsafe(48)
            conn.execute(db.meta.insert().values(name="signing_key", value=value))
            return value.encode()
        return str(row[0]).encode()


class LinkSource(Protocol):
    """Where result links come from: a storage backend (`storage.Storage.url`)."""

    def url(self, key: str, expires_at: int, base_url: str) -> str: ...


@dataclass(frozen=True)
class Signer:
    secret: bytes
    #: The storage backend that makes result links; not part of equality (nor of the URL caches).
    links: LinkSource | None = field(default=None, compare=False, repr=False)

    def with_links(self, links: LinkSource) -> Signer:
        """This signer, with result links made by `links`."""
        return replace(self, links=links)

    def link(self, base_url: str, key: str, expires: int) -> str:
        """The URL a client downloads a stored result from, valid until `expires`."""
        if self.links is None:
            return self.url(base_url, key, expires)
        return self.links.url(key, expires, base_url)

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - signers live as long as the process
    def signature(self, key: str, expires: int) -> str:
        mac = hmac.new(self.secret, f"{key}\n{expires}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac[:24]).decode().rstrip("=")

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - a pure function of its arguments
    def url(self, base_url: str, key: str, expires: int) -> str:
        sig = self.signature(key, expires)
        return f"{base_url.rstrip('/')}{FILES_PREFIX}{quote(key)}?expires={expires}&sig={sig}"

    def check(
        self, key: str, expires: str | None, sig: str | None, *, now: float | None = None
    ) -> str | None:
        """None when valid, else "invalid" or "expired" (a tampered link is invalid, not expired)."""
        if not expires or not sig or not (expires.isascii() and expires.isdigit()):
            return "invalid"
        # As bytes: compare_digest refuses str with non-ASCII characters (a tampered link may have them).
        if not hmac.compare_digest(self.signature(key, int(expires)).encode(), sig.encode()):
            return "invalid"
        if int(expires) < (time.time() if now is None else now):
            return "expired"
        return None

    def own_key(self, url: str) -> str | None:
        """The storage key if `url` is a valid, unexpired signed URL of ours (any host), else None."""
        parts = urlsplit(url)
        if not parts.path.startswith(FILES_PREFIX):
            return None
        key = unquote(parts.path[len(FILES_PREFIX) :])
        query = parse_qs(parts.query)
        expires, sig = query.get("expires", [""])[0], query.get("sig", [""])[0]
        status = self.check(key, expires, sig)
        return key if status is None else None
