"""The browser-facing surface: the web console at `/` and the CORS policy for other origins.

The console is static files shipped in the package (`vidgate/console/`): an HTML page and plain
JavaScript modules that call the public API with the key the user typed (kept in the browser's
localStorage). Nothing is built at run time and nothing is loaded from another origin, so the
page can carry a strict Content-Security-Policy: no inline script, no eval, connections only to
this origin. Files are read once at start; each answer carries an ETag and `no-cache`, so a
browser revalidates with a cheap 304 and never runs a stale script after an upgrade.

CORS is off unless `VIDGATE_CORS_ORIGINS` names origins: the console is same-origin and needs
none, and keys are bearer tokens, never cookies, so no credentials are ever allowed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from urllib.parse import urlsplit

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from vidgate.config import Settings
from vidgate.errors import NotFound

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

CORS_METHODS = ["GET", "POST"]
CORS_HEADERS = [
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "Prefer",
    "X-APIMart-Response-Version",
    "Accept-Language",
]
CORS_EXPOSED = [
    "Retry-After",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "Idempotency-Replayed",
    "Preference-Applied",
    "X-APIMart-Response-Version",
    "X-Request-Id",
]
#: Preflight answers may be cached this long (seconds) by the browser.
CORS_MAX_AGE = 600


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def load_assets() -> dict[str, Asset]:
    """Every file of the console package directory, by name (a fixed set: no path ever reaches disk)."""
    folder = resources.files("vidgate") / "console"
    assets: dict[str, Asset] = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if not entry.is_file() or suffix not in _TYPES:
            continue
        body = entry.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        assets[entry.name] = Asset(body, _TYPES[suffix], etag)
    return assets


def _origin(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"


def media_origins(settings: Settings) -> list[str]:
    """Origins other than this one that serve files the page shows (videos, thumbnails, uploads)."""
    found: list[str] = []
    if settings.public_url:
        found.append(_origin(settings.public_url) or "")
    if settings.storage_url:
        endpoint = settings.s3_public_endpoint_url or settings.s3_endpoint_url
        # No endpoint: AWS S3 itself, whose presigned links name a regional or bucket host.
        found.append(_origin(endpoint) or "" if endpoint else "https://*.amazonaws.com")
    return sorted({origin for origin in found if origin})


def content_security_policy(settings: Settings) -> str:
    extra = "".join(" " + origin for origin in media_origins(settings))
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src 'self' blob:{extra}",
            f"media-src 'self' blob:{extra}",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


class ConsoleFiles:
    """Serves `/` (the page) and `/console/<name>` (its scripts and styles)."""

    def __init__(self, settings: Settings) -> None:
        self.assets = load_assets()
        self.headers = {
            "Content-Security-Policy": content_security_policy(settings),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY",
            # Revalidate every time (a 304 costs nothing); the ETag changes with the file.
            "Cache-Control": "no-cache",
        }

    async def index(self, request: Request) -> Response:
        return self._answer(request, "index.html")

    async def asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name == "index.html" or name not in self.assets:
            raise NotFound("route_not_found", method=request.method, path=request.url.path)
        return self._answer(request, name)

    def _answer(self, request: Request, name: str) -> Response:
        asset = self.assets[name]
        headers = {**self.headers, "ETag": asset.etag}
        wanted = request.headers.get("if-none-match", "")
        if asset.etag in {tag.strip().removeprefix("W/") for tag in wanted.split(",")} or wanted == "*":
            return Response(status_code=304, headers=headers)
        body = b"" if request.method == "HEAD" else asset.body
        response = Response(body, media_type=asset.content_type, headers=headers)
        if request.method == "HEAD":
            response.headers["content-length"] = str(len(asset.body))
        return response


def install_console(app: FastAPI, settings: Settings) -> None:
    """Adds the console routes unless `VIDGATE_CONSOLE=false`."""
    if not settings.console:
        return
    files = ConsoleFiles(settings)
    app.router.routes.append(Route("/", files.index, methods=["GET", "HEAD"], include_in_schema=False))
    app.router.routes.append(
        Route("/console/{name}", files.asset, methods=["GET", "HEAD"], include_in_schema=False)
    )


def install_cors(app: FastAPI, settings: Settings) -> None:
    """Adds CORS for `VIDGATE_CORS_ORIGINS`; call it last so it wraps every other layer (errors
    and rate-limit answers from inner layers then carry the headers a browser needs to read them)."""
    if not settings.cors_origins:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=CORS_METHODS,
        allow_headers=CORS_HEADERS,
        expose_headers=CORS_EXPOSED,
        allow_credentials=False,
        max_age=CORS_MAX_AGE,
    )
