"""Fuzzing: schemathesis generates requests for every operation of the app's own OpenAPI schema, sent
in-process with a valid key and with bad keys. Bounded: a few examples per operation.

Every answer must be: not a 5xx; for any error, the `{"error": {code, message, type}}` envelope with
`code` equal to the HTTP status; and nothing of another key's task (its id never shows up).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, settings

from tests.conftest import auth
from vidgate import keys, migrations
from vidgate.api import create_app
from vidgate.config import Settings
from vidgate.db import Database

FUZZ_EXAMPLES = 6
ADMIN_TOKEN = "fuzz-admin-token"


def _settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, admin_token=ADMIN_TOKEN, allow_private_urls=False)


# The schema of an app with every optional router on (admin included); no lifespan is needed for it.
schema = schemathesis.openapi.from_dict(
    create_app(_settings(Path("/nonexistent")), run_worker=False).openapi()
)


class Fuzzed:
    def __init__(self, client: TestClient, mine: str, other: str, other_task: str) -> None:
        self.client, self.mine, self.other, self.other_task = client, mine, other, other_task


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    configured = _settings(tmp_path_factory.mktemp("fuzz"))
    configured.data_dir.mkdir(parents=True, exist_ok=True)
    database = Database(configured.effective_database_url)
    migrations.upgrade(database)
    mine = keys.create(database, "mine")[1]
    other = keys.create(database, "other")[1]
    with TestClient(create_app(configured, run_worker=False), raise_server_exceptions=False) as client:
        body = {"model": "pixverse-v6", "prompt": "x", "resolution": "360p", "duration": 1}
        task = client.post("/v1/videos/generations", json=body, headers=auth(other))
        assert task.status_code == 200, task.text
        yield Fuzzed(client, mine, other, task.json()["data"][0]["task_id"])
    database.dispose()


def send(fuzzed: Fuzzed, case: Any, authorization: dict[str, Any]) -> Any:
    kwargs = case.as_transport_kwargs(base_url="http://testserver")
    headers = {**(kwargs.pop("headers", None) or {}), **authorization}
    headers.pop("Content-Length", None)
    method, url = kwargs.pop("method"), kwargs.pop("url")
    extra = {
        k: v for k, v in kwargs.items() if k in ("params", "json", "data", "content", "files", "cookies")
    }
    if "data" in extra and isinstance(extra["data"], bytes | str):
        extra["content"] = extra.pop("data")
    if isinstance(extra.get("files"), list):
        extra["files"] = [(name, form_part(part)) for name, part in extra["files"]]
    return fuzzed.client.request(method, url, headers=headers, **extra)


def form_part(part: Any) -> Any:
    """A generated non-file form field as text, as a browser sends it (the client cannot encode a
    bare number: it would fail inside the app's body read and look like a server error)."""
    if isinstance(part, tuple) and part[0] is None and not isinstance(part[1], bytes | str):
        return (None, orjson.dumps(part[1]).decode())
    return part


def check(response: Any, fuzzed: Fuzzed, case: Any) -> None:
    where = f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
    assert response.status_code < 500, where
    is_json = response.headers.get("content-type", "").startswith("application/json")
    # A HEAD answer carries the headers of the GET, never its body.
    if response.status_code >= 400 and is_json and case.method.upper() != "HEAD":
        error = response.json().get("error")
        assert isinstance(error, dict), where
        assert error.get("code") == response.status_code, where
        assert isinstance(error.get("message"), str) and error["message"], where
        assert isinstance(error.get("type"), str) and error["type"], where
    assert fuzzed.other_task not in response.text, f"another key's task leaked: {where}"


FUZZ_SETTINGS = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)


@schema.parametrize()
@FUZZ_SETTINGS
def test_fuzz_with_a_valid_key(case: Any, fuzzed: Fuzzed) -> None:
    authorization = auth(ADMIN_TOKEN) if case.formatted_path.startswith("/admin") else auth(fuzzed.mine)
    check(send(fuzzed, case, authorization), fuzzed, case)


BAD_KEYS = [
    {},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer vg_" + "A" * 43},
    {"Authorization": "Basic dXNlcjpwYXNz"},
    {"Authorization": "Bearer " + "\u00e9" * 10},
]


@schema.parametrize()
@FUZZ_SETTINGS
def test_fuzz_with_bad_keys(case: Any, fuzzed: Fuzzed) -> None:
    for authorization in BAD_KEYS:
        headers = {k: v.encode("utf-8") for k, v in authorization.items()}  # raw bytes on the wire
        response = send(fuzzed, case, headers)
        check(response, fuzzed, case)
        path = case.formatted_path
        if path.startswith(("/v1/videos", "/v1/tasks", "/v1/uploads", "/admin")):
            assert response.status_code in (400, 401, 404, 405, 413, 422), (path, response.text[:200])
