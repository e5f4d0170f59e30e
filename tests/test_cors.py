"""CORS: none by default; with VIDGATE_CORS_ORIGINS, exactly those origins, no credentials."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from tests.conftest import auth
from vidgate.api import create_app
from vidgate.config import Settings
from vidgate.db import Database

ALLOWED = "https://app.example.com"
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
}


@pytest.fixture
def cors_client(settings: Settings, database: Database, api_key: str) -> Iterator[TestClient]:
    settings.cors_origins = [ALLOWED, "http://localhost:5173"]
    with TestClient(create_app(settings, run_worker=False), headers=auth(api_key)) as c:
        yield c


def _cors_headers(response: object) -> dict[str, str]:
    headers = response.headers  # type: ignore[attr-defined]
    return {k: v for k, v in headers.items() if k.lower().startswith("access-control-")}


def test_default_sends_no_cors_headers(client: TestClient) -> None:
    for origin in (ALLOWED, "null", "http://127.0.0.1:9999"):
        preflight = client.options("/v1/videos/generations", headers={"Origin": origin, **PREFLIGHT})
        assert _cors_headers(preflight) == {}, origin
        plain = client.get("/v1/models", headers={"Origin": origin})
        assert plain.status_code == 200
        assert _cors_headers(plain) == {}, origin
        page = client.get("/", headers={"Origin": origin})
        assert _cors_headers(page) == {}, origin


def test_configured_origin_preflight(cors_client: TestClient) -> None:
    response = cors_client.options("/v1/videos/generations", headers={"Origin": ALLOWED, **PREFLIGHT})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert "access-control-allow-credentials" not in response.headers
    methods = {m.strip() for m in response.headers["access-control-allow-methods"].split(",")}
    assert methods == {"GET", "POST"}
    allowed = {h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")}
    assert {
        "authorization",
        "content-type",
        "idempotency-key",
        "prefer",
        "x-apimart-response-version",
        "accept-language",
    } <= allowed
    assert int(response.headers["access-control-max-age"]) > 0
    # Other paths and the second configured origin too.
    poll = cors_client.options(
        "/v1/tasks/task_x",
        headers={"Origin": "http://localhost:5173", "Access-Control-Request-Method": "GET"},
    )
    assert poll.status_code == 200
    assert poll.headers["access-control-allow-origin"] == "http://localhost:5173"


def test_configured_origin_reads_answers_and_exposed_headers(cors_client: TestClient) -> None:
    ok = cors_client.get("/v1/models", headers={"Origin": ALLOWED})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == ALLOWED
    exposed = {h.strip().lower() for h in ok.headers["access-control-expose-headers"].split(",")}
    assert {
        "retry-after",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "idempotency-replayed",
        "preference-applied",
        "x-request-id",
    } <= exposed
    assert "access-control-allow-credentials" not in ok.headers
    # Errors are readable too (a page must be able to show "invalid key" or a 404).
    denied = cors_client.get("/v1/models", headers={"Origin": ALLOWED, "Authorization": "Bearer vg_nope"})
    assert denied.status_code == 401
    assert denied.headers["access-control-allow-origin"] == ALLOWED
    poll = cors_client.get("/v1/tasks/task_missing", headers={"Origin": ALLOWED})
    assert poll.status_code == 404
    assert poll.headers["access-control-allow-origin"] == ALLOWED


def test_other_origins_are_not_allowed(cors_client: TestClient) -> None:
    for origin in (
        "https://evil.example.com",
        "https://app.example.com.evil.net",
        "null",
        "http://app.example.com",
    ):
        preflight = cors_client.options("/v1/videos/generations", headers={"Origin": origin, **PREFLIGHT})
        assert preflight.status_code == 400, origin
        assert "access-control-allow-origin" not in preflight.headers, origin
        plain = cors_client.get("/v1/models", headers={"Origin": origin})
        assert "access-control-allow-origin" not in plain.headers, origin


def test_disallowed_method_and_header_are_refused(cors_client: TestClient) -> None:
    delete = cors_client.options(
        "/v1/tasks/task_x", headers={"Origin": ALLOWED, "Access-Control-Request-Method": "DELETE"}
    )
    assert delete.status_code == 400
    cookie = cors_client.options(
        "/v1/models",
        headers={
            "Origin": ALLOWED,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "x-custom-secret",
        },
    )
    assert cookie.status_code == 400


def test_origins_setting_parses_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDGATE_CORS_ORIGINS", " https://a.example.com/ , http://127.0.0.1:8080,,")
    assert Settings().cors_origins == ["https://a.example.com", "http://127.0.0.1:8080"]
    monkeypatch.setenv("VIDGATE_CORS_ORIGINS", "")
    assert Settings().cors_origins == []
    monkeypatch.setenv("VIDGATE_CORS_ORIGINS", "http://[::1]:8000,*")
    assert Settings().cors_origins == ["http://[::1]:8000", "*"]
    for bad in ("app.example.com", "https://a.example.com/path", "ftp://a.example.com", "https://u@a.com"):
        monkeypatch.setenv("VIDGATE_CORS_ORIGINS", bad)
        with pytest.raises(ValidationError, match="is not an origin"):
            Settings()
