"""`/docs` (Swagger UI) and `/redoc` served from vidgate itself, never from a CDN.

FastAPI's own pages load their scripts from jsdelivr, which fails on a server without internet and
breaks under a strict Content-Security-Policy. The scripts and styles come from the
`fastapi-offline` package (a maintained copy of swagger-ui-dist 5 and ReDoc 2) and are served under
`/docs/assets/`; Swagger UI is started by a script file instead of an inline one, so both pages
carry a CSP that allows scripts from this origin only.
"""

from __future__ import annotations

import html

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

ASSETS = "/docs/assets"
_INIT = "swagger-init.js"

# Swagger UI and ReDoc set inline styles and ReDoc searches in a blob: worker; scripts come from
# this origin only, and the pages may fetch nothing but this origin (the OpenAPI document).
_CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "worker-src 'self' blob:",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)
_HEADERS = {"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff"}

# Reads the document's URL from the page, so the script itself is static.
_SWAGGER_INIT = b"""\
"use strict";
(function () {
  var node = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: node.getAttribute("data-openapi-url"),
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  });
})();
"""

_SWAGGER_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="{assets}/swagger-ui.css">
<link rel="icon" href="{assets}/favicon.png">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{openapi}"></div>
<script src="{assets}/swagger-ui-bundle.js"></script>
<script src="{assets}/{init}"></script>
</body>
</html>
"""


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def install(app: FastAPI) -> None:
    """Adds `/docs`, `/redoc` and their assets (the app is built with `docs_url=redoc_url=None`)."""
    openapi_url = app.openapi_url or "/openapi.json"

    async def swagger(request: Request) -> Response:
        root = _root(request)
        page = _SWAGGER_PAGE.format(
            title=html.escape(f"{app.title} API"),
            assets=root + ASSETS,
            openapi=html.escape(root + openapi_url),
            init=_INIT,
        )
        return HTMLResponse(page, headers=_HEADERS)

    async def redoc(request: Request) -> Response:
        root = _root(request)
        page = get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} API",
            redoc_js_url=f"{root}{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS}/favicon.png",
            with_google_fonts=False,
        )
        return HTMLResponse(page.body, headers=_HEADERS)

    async def swagger_init(request: Request) -> Response:
        return Response(_SWAGGER_INIT, media_type="text/javascript; charset=utf-8")

    app.router.routes.extend(
        [
            Route("/docs", swagger, methods=["GET"], include_in_schema=False),
            Route("/redoc", redoc, methods=["GET"], include_in_schema=False),
            Route(f"{ASSETS}/{_INIT}", swagger_init, methods=["GET"], include_in_schema=False),
            Mount(ASSETS, StaticFiles(packages=[("fastapi_offline", "static")]), name="docs-assets"),
        ]
    )
