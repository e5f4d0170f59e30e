"""Per-key requests per minute: the GCRA arithmetic on both backends, its atomicity under racing
requests, the 429 and headers over HTTP (the hot poll path included), and one budget shared by two
real `vidgate serve --no-worker` processes (on SQLite, PostgreSQL, and Redis)."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from vidgate import keys, migrations, ratelimit
from vidgate.api import create_app
from vidgate.config import Settings
from vidgate.db import Database

from .conftest import auth, fresh_postgres
from .e2e.conftest import Server, free_port, make_server, run_cli
from .test_api import PIX, assert_error, submit

REDIS_URL = "redis://127.0.0.1:6379/7"
NOW = 1_800_000_000_000_000  # microseconds
SECOND = 1_000_000
RATE_HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A prefix no other test uses; its keys are deleted afterwards."""
    prefix = f"vidgate-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    for name in client.scan_iter(f"{prefix}*"):
        client.delete(name)
    client.close()


@pytest.fixture(params=["sqlite", "postgresql", "redis"])
def limiter(request: pytest.FixtureRequest) -> Iterator[ratelimit.Limiter]:
    """Each backend: the database one on SQLite and on PostgreSQL, and Redis."""
    if request.param == "sqlite":
        yield ratelimit.DatabaseLimiter(request.getfixturevalue("database"))
    elif request.param == "postgresql":
        with fresh_postgres() as url:
            database = Database(url)
            migrations.upgrade(database)
            yield ratelimit.DatabaseLimiter(database)
            database.dispose()
    else:
        backend = ratelimit.RedisLimiter(REDIS_URL, request.getfixturevalue("redis_prefix"))
        yield backend
        backend.close()


def hit(limiter: ratelimit.Limiter, bucket: str, rpm: int, now: int) -> ratelimit.Decision:
    decision = limiter.hit(bucket, rpm, now=now)
    assert decision is not None
    return decision


# --- the arithmetic --------------------------------------------------------------------------------


def test_a_burst_of_rpm_then_one_every_60_over_rpm_seconds(limiter: ratelimit.Limiter) -> None:
    decisions = [hit(limiter, "key_a", 10, NOW) for _ in range(10)]
    assert all(d.allowed for d in decisions)
    assert [d.remaining for d in decisions] == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    assert [d.reset for d in decisions] == [6, 12, 18, 24, 30, 36, 42, 48, 54, 60]
    refused = hit(limiter, "key_a", 10, NOW + SECOND)
    assert not refused.allowed and refused.retry_after == 5 and refused.remaining == 0
    assert refused.headers() == {
        "X-RateLimit-Limit": "10",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": "59",
        "Retry-After": "5",
    }
    # A refusal costs nothing: exactly when Retry-After said, one more request passes, then none.
    assert hit(limiter, "key_a", 10, NOW + 6 * SECOND).allowed
    assert not hit(limiter, "key_a", 10, NOW + 6 * SECOND).allowed
    # After a quiet minute the whole burst is back; other keys never shared any of it.
    assert hit(limiter, "key_a", 10, NOW + 66 * SECOND).remaining == 9
    assert hit(limiter, "key_b", 10, NOW).remaining == 9


@pytest.mark.parametrize("rpm", [1, 3, 7, 60, 601])
def test_burst_is_exactly_rpm_without_float_drift(limiter: ratelimit.Limiter, rpm: int) -> None:
    allowed = [hit(limiter, f"k{rpm}", rpm, NOW).allowed for _ in range(rpm + 2)]
    assert allowed == [True] * rpm + [False, False]


def test_racing_requests_share_one_budget(limiter: ratelimit.Limiter) -> None:
    barrier = threading.Barrier(40)
    results: list[bool] = []

    def one() -> None:
        barrier.wait()
        results.append(hit(limiter, "racing", 10, NOW).allowed)

    threads = [threading.Thread(target=one) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(results) == [False] * 30 + [True] * 10


def test_unreachable_redis_lets_requests_pass() -> None:
    backend = ratelimit.RedisLimiter(f"redis://127.0.0.1:{free_port()}/0")
    assert backend.hit("key", 1) is None
    backend.close()


# --- over HTTP, in one process -----------------------------------------------------------------------


@pytest.fixture
def limited(client: TestClient, database: Database) -> tuple[str, str]:
    record, secret = keys.create(database, "limited", rpm=3)
    return record.id, secret


def rate_headers(response: httpx.Response) -> dict[str, str]:
    return {h: response.headers[h] for h in RATE_HEADERS if h in response.headers}


def test_every_v1_route_counts_and_the_fourth_request_is_429(
    client: TestClient, limited: tuple[str, str]
) -> None:
    _, secret = limited
    created = submit(client, PIX, Authorization=f"Bearer {secret}")
    assert created.status_code == 200
    task_id = created.json()["data"][0]["task_id"]
    polled = client.get(f"/v1/tasks/{task_id}", headers=auth(secret))  # the bare hot path
    listed = client.get("/v1/models", headers=auth(secret))
    seen = [rate_headers(r) for r in (created, polled, listed)]
    assert [h["x-ratelimit-remaining"] for h in seen] == ["2", "1", "0"]
    assert all(h["x-ratelimit-limit"] == "3" for h in seen)
    for refused in (
        client.get(f"/v1/tasks/{task_id}", headers=auth(secret)),
        client.get("/v1/balance", headers=auth(secret)),
        submit(client, PIX, Authorization=f"Bearer {secret}"),
    ):
        error = assert_error(refused, 429, "rate_limit_error")
        assert "3 requests per minute" in error["message"]
        assert refused.headers["retry-after"] == "20"
        assert rate_headers(refused) == {
            "x-ratelimit-limit": "3",
            "x-ratelimit-remaining": "0",
            "x-ratelimit-reset": "60",
        }
    zh = client.get("/v1/models", headers=auth(secret), params={"language": "zh"})
    assert "每分钟 3 次请求" in assert_error(zh, 429, "rate_limit_error")["message"]


def test_errors_of_a_limited_key_carry_the_headers_too(client: TestClient, limited: tuple[str, str]) -> None:
    _, secret = limited
    missing = client.get("/v1/tasks/task_01KA040M0HP1GJWBJYZMKX1XS1", headers=auth(secret))
    assert_error(missing, 404, "not_found_error")
    assert rate_headers(missing)["x-ratelimit-remaining"] == "2"
    invalid = submit(client, {"model": "pixverse-v6"}, Authorization=f"Bearer {secret}")
    assert_error(invalid, 400, "invalid_request_error", "prompt")
    assert rate_headers(invalid)["x-ratelimit-remaining"] == "1"


def test_keys_without_rpm_get_no_headers_and_no_limit(client: TestClient, api_key: str) -> None:
    task_id = submit(client, PIX).json()["data"][0]["task_id"]
    for _ in range(30):
        for response in (client.get(f"/v1/tasks/{task_id}"), client.get("/v1/models")):
            assert response.status_code == 200 and rate_headers(response) == {}


def test_bad_keys_are_401_not_429(client: TestClient, database: Database, limited: tuple[str, str]) -> None:
    key_id, secret = limited
    for _ in range(5):
        assert_error(client.get("/v1/models", headers=auth("vg_wrong")), 401, "authentication_error")
        assert_error(client.get("/v1/tasks/task_x", headers=auth("vg_wrong")), 401, "authentication_error")
    assert client.get("/v1/models", headers=auth(secret)).status_code == 200  # the poll path caches it
    keys.revoke(database, key_id)  # behind this process's back, as another process would
    for path in ("/v1/models", "/v1/tasks/task_01KA040M0HP1GJWBJYZMKX1XS1"):
        for _ in range(4):
            assert_error(client.get(path, headers=auth(secret)), 401, "authentication_error")


def test_redis_backend_over_http(settings: Settings, database: Database, redis_prefix: str) -> None:
    settings.redis_url, settings.redis_prefix = REDIS_URL, redis_prefix
    record, secret = keys.create(database, "redis", rpm=2)
    with TestClient(create_app(settings, run_worker=False), headers=auth(secret)) as c:
        assert [c.get("/v1/models").status_code for _ in range(3)] == [200, 200, 429]
    assert redis.Redis.from_url(REDIS_URL).exists(f"{redis_prefix}rl:{record.id}")


# --- two real API processes, one budget --------------------------------------------------------------


def two_servers(tmp: Path, **env: str) -> tuple[Server, Server, str]:
    """Two `vidgate serve --no-worker` on one database, and a key with rpm 10 made by the CLI."""
    first = make_server(tmp, **env)
    created = run_cli(first.env, "keys", "create", "--name", "limited", "--rpm", "10")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip().splitlines()[-1]
    second = Server(data_dir=first.data_dir, port=free_port(), env=first.env, log=tmp / "serve-2.log")
    for server in (first, second):
        server.extra_args = ["--no-worker"]
        server.key = secret
    return first, second, secret


@pytest.fixture(params=["sqlite", "postgresql", "redis"])
def servers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    with contextlib.ExitStack() as stack:
        env: dict[str, str] = {}
        if request.param == "postgresql":
            env["VIDGATE_DATABASE_URL"] = stack.enter_context(fresh_postgres())
        if request.param == "redis":
            env["VIDGATE_REDIS_URL"] = REDIS_URL
            env["VIDGATE_REDIS_PREFIX"] = request.getfixturevalue("redis_prefix")
        first, second, _ = two_servers(tmp_path, **env)
        try:
            first.start()
            second.start()
            yield first, second
        finally:
            first.stop()
            second.stop()


@pytest.mark.e2e
def test_the_eleventh_request_across_two_processes_is_429(servers: tuple[Server, Server]) -> None:
    a, b = (s.client() for s in servers)
    try:
        created = a.post("/v1/videos/generations", json=PIX)
        assert created.status_code == 200, created.text
        task_id = created.json()["data"][0]["task_id"]
        calls: list[Any] = [
            lambda c: c.get(f"/v1/tasks/{task_id}"),
            lambda c: c.get("/v1/models"),
            lambda c: c.get("/v1/balance"),
        ]
        responses = [created]
        for i in range(9):
            responses.append(calls[i % 3](b if i % 2 == 0 else a))
        assert [r.status_code for r in responses] == [200] * 10, [r.text for r in responses]
        assert [int(r.headers["x-ratelimit-remaining"]) for r in responses] == list(range(9, -1, -1))
        for client in (b, a):
            refused = client.get(f"/v1/tasks/{task_id}")
            assert_error(refused, 429, "rate_limit_error")
            assert 1 <= int(refused.headers["retry-after"]) <= 6
            assert refused.headers["x-ratelimit-limit"] == "10"
            assert refused.headers["x-ratelimit-remaining"] == "0"
            assert 54 <= int(refused.headers["x-ratelimit-reset"]) <= 60
    finally:
        a.close()
        b.close()
