"""How the console's files are served (no browser needed): content types, CSP, caching, the switch
that turns the console off, and that the files ship with the package."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from vidgate.api import create_app
from vidgate.api.console import content_security_policy, load_assets
from vidgate.config import Settings
from vidgate.db import Database

ROOT = Path(__file__).resolve().parents[2]


def test_index_is_html_with_a_strict_csp(client: TestClient) -> None:
    response = client.get("/", headers={"Authorization": ""})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp
    assert "script-src 'self';" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "media-src 'self' blob:" in csp
    assert "connect-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    # No inline script or style, no handler attributes: everything comes from /console/.
    html = response.text
    assert '<script type="module" src="/console/console.js"></script>' in html
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    assert not re.search(r"\son[a-z]+=", html) and "<style" not in html and "style=" not in html


def test_assets_have_their_content_types(client: TestClient) -> None:
    types = {
        "console.js": "text/javascript; charset=utf-8",
        "api.js": "text/javascript; charset=utf-8",
        "form.js": "text/javascript; charset=utf-8",
        "tasks.js": "text/javascript; charset=utf-8",
        "dom.js": "text/javascript; charset=utf-8",
        "console.css": "text/css; charset=utf-8",
        "icon.svg": "image/svg+xml",
    }
    for name, content_type in types.items():
        response = client.get(f"/console/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"] == content_type, name
        assert response.headers["content-security-policy"]
    # Every module the page imports is served.
    for name in re.findall(r'from "\./([a-z]+\.js)"', client.get("/console/console.js").text):
        assert client.get(f"/console/{name}").status_code == 200, name


def test_etag_revalidation_and_head(client: TestClient) -> None:
    first = client.get("/console/console.js")
    etag = first.headers["etag"]
    assert first.headers["cache-control"] == "no-cache"
    again = client.get("/console/console.js", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    assert client.get("/console/console.js", headers={"If-None-Match": '"other"'}).status_code == 200
    head = client.head("/")
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(client.get("/").content)
    # The index and each asset have their own tags.
    assert client.get("/").headers["etag"] != etag


def test_unknown_assets_and_traversal_are_404_envelopes(client: TestClient) -> None:
    for path in ("/console/nope.js", "/console/..%2Fconfig.py", "/console/index.html", "/console/"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["type"] == "not_found_error", path
    assert client.post("/").status_code == 405


def test_other_routes_still_work(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs").status_code == 200
    assert client.get("/v1/models").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert "/" not in paths and not any(p.startswith("/console") for p in paths)


def test_console_can_be_turned_off(settings: Settings, database: Database) -> None:
    settings.console = False
    with TestClient(create_app(settings, run_worker=False)) as off:
        response = off.get("/")
        assert response.status_code == 404
        assert response.json()["error"]["type"] == "not_found_error"
        assert off.get("/console/console.js").status_code == 404
        assert off.get("/healthz").status_code == 200


def test_console_setting_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDGATE_CONSOLE", "0")
    assert Settings().console is False
    monkeypatch.setenv("VIDGATE_CONSOLE", "true")
    assert Settings().console is True


def test_csp_names_the_origins_files_come_from() -> None:
    assert "media-src 'self' blob:;" in content_security_policy(Settings())
    public = content_security_policy(Settings(public_url="https://videos.example.com/base/"))
    assert "media-src 'self' blob: https://videos.example.com;" in public
    minio = Settings(
        storage_url="s3://bucket/prefix",
        s3_endpoint_url="http://minio:9000",
        s3_public_endpoint_url="https://cdn.example.com",
    )
    assert "img-src 'self' blob: https://cdn.example.com;" in content_security_policy(minio)
    aws = content_security_policy(Settings(storage_url="s3://bucket"))
    assert "media-src 'self' blob: https://*.amazonaws.com;" in aws


def test_console_files_ship_with_the_package() -> None:
    """setuptools' package-data must match every console file, or a wheel would lack the page."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["vidgate"]
    shipped = load_assets()
    assert {"index.html", "console.js", "console.css"} <= set(shipped)
    for name in shipped:
        assert any(fnmatch.fnmatch(f"console/{name}", pattern) for pattern in patterns), name
