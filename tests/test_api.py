"""The HTTP contract: envelopes, error types, both response versions, idempotency, isolation."""

from __future__ import annotations

import re
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from vidgate import db, keys, leases, tasks
from vidgate.db import Database
from vidgate.errors import TaskFailure
from vidgate.status import Status

from .conftest import auth

PIX = {"model": "pixverse-v6", "prompt": "a red kite over the sea"}
VIDU = {"model": "viduq3", "prompt": "the cat walks", "image_urls": ["https://example.com/cat.png"]}


def submit(client: TestClient, body: dict[str, Any], **headers: str) -> Any:
    return client.post("/v1/videos/generations", json=body, headers=headers)


def assert_error(response: Any, status: int, type_: str, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert error["code"] == status
    assert error["type"] == type_
    assert isinstance(error["message"], str) and error["message"]
    if param is not None:
        assert error["param"] == param
        assert param.split("[")[0] in error["message"] or status in (404, 409)
    return dict(error)


def run_to(database: Database, task_id: str, outcome: str) -> None:
    """Drive a pending task to a terminal state through the real queue operations."""
    claimed = leases.claim(
        database, owner="test:1:x", providers=frozenset({"local"}), limit=50, lease_seconds=30
    )
    row = next(r for r in claimed if r.id == task_id)
    lease = leases.lease_of(row)
    if outcome == "completed":
        result = {
            "video": f"results/{task_id}/video.mp4",
            "thumbnail": f"results/{task_id}/thumbnail.jpg",
            "width": 960,
            "height": 540,
            "duration": 5.0,
            "fps": 24,
            "has_audio": False,
        }
        leases.complete(database, lease, result, ttl_seconds=86400)
    else:
        failure = TaskFailure("image_too_small", param="image_urls[0]", min=128, width=64, height=64)
        leases.fail(database, lease, failure.as_error())


# --- auth ---------------------------------------------------------------------------------------


def test_missing_or_wrong_key_is_401(client: TestClient) -> None:
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}):
        assert_error(
            client.post("/v1/videos/generations", json=PIX, headers=headers), 401, "authentication_error"
        )
        assert_error(
            client.get("/v1/tasks/task_01KA040M0HP1GJWBJYZMKX1XS1", headers=headers),
            401,
            "authentication_error",
        )
        assert_error(client.get("/v1/models", headers=headers), 401, "authentication_error")


def test_revoked_key_is_401(client: TestClient, database: Database) -> None:
    record, secret = keys.create(database, "short-lived")
    assert client.get("/v1/models", headers=auth(secret)).status_code == 200
    assert keys.revoke(database, record.id)
    assert_error(client.get("/v1/models", headers=auth(secret)), 401, "authentication_error")


def test_keys_are_stored_hashed(database: Database, api_key: str) -> None:
    with database.read() as conn:
        stored = conn.execute(sa.select(db.api_keys.c.key_hash, db.api_keys.c.prefix)).all()
    assert all(api_key not in (h, p) for h, p in stored)
    assert keys.hash_key(api_key) in {h for h, _ in stored}


# --- submit and query, legacy contract -------------------------------------------------------------


def test_submit_legacy_envelope_and_pending_task(client: TestClient) -> None:
    response = submit(client, PIX)
    assert response.status_code == 200
    body = response.json()
    assert body["code"] == 200
    assert isinstance(body["data"], list) and len(body["data"]) == 1
    assert body["data"][0]["status"] == "submitted"
    task_id = body["data"][0]["task_id"]
    assert re.fullmatch(r"task_[0-9A-HJKMNP-TV-Z]{26}", task_id)
    assert "X-APIMart-Response-Version" not in response.headers

    polled = client.get(f"/v1/tasks/{task_id}")
    assert polled.status_code == 200
    data = polled.json()["data"]
    assert polled.json()["code"] == 200
    assert data["id"] == task_id
    assert data["status"] == "pending"
    assert data["progress"] == 0
    assert isinstance(data["created"], int)
    assert data["estimated_time"] > 0
    assert data["cost"] == 0
    assert "result" not in data and "error" not in data and "completed" not in data


def test_completed_task_shape(client: TestClient, database: Database) -> None:
    task_id = submit(client, PIX).json()["data"][0]["task_id"]
    run_to(database, task_id, "completed")
    data = client.get(f"/v1/tasks/{task_id}").json()["data"]
    assert data["status"] == "completed" and data["progress"] == 100
    assert data["completed"] >= data["created"]
    assert data["actual_time"] >= 0
    video = data["result"]["videos"][0]
    assert isinstance(video["url"], list) and video["url"][0].startswith("http://testserver/files/results/")
    assert video["expires_at"] == data["completed"] + 86400
    assert "/files/results/" in data["result"]["thumbnail_url"]


def test_failed_task_shape_and_language(client: TestClient, database: Database) -> None:
    task_id = submit(client, PIX).json()["data"][0]["task_id"]
    run_to(database, task_id, "failed")
    data = client.get(f"/v1/tasks/{task_id}").json()["data"]
    assert data["status"] == "failed"
    assert data["cost"] == 0
    assert data["error"]["code"] == "image_too_small"
    assert data["error"]["type"] == "invalid_request_error"
    assert data["error"]["param"] == "image_urls[0]"
    assert "at least 128x128" in data["error"]["message"]
    zh = client.get(f"/v1/tasks/{task_id}?language=zh").json()["data"]["error"]["message"]
    assert "像素" in zh and "image_urls[0]" in zh
    assert_error(client.get(f"/v1/tasks/{task_id}?language=xx"), 400, "invalid_request_error", "language")


# --- the 2026-07-27 contract ------------------------------------------------------------------------


def test_new_response_version(client: TestClient, database: Database) -> None:
    headers = {"X-APIMart-Response-Version": "2026-07-27"}
    response = submit(client, PIX, **headers)
    assert response.status_code == 200
    assert response.headers["X-APIMart-Response-Version"] == "2026-07-27"
    data = response.json()["data"]
    assert isinstance(data, dict)
    assert data["object"] == "generation.task"
    assert data["status"] == "pending" and data["model"] == "pixverse-v6"
    assert {"id", "progress", "created", "estimated_time", "cost"} <= set(data)
    polled = client.get(f"/v1/tasks/{data['id']}", headers=headers)
    assert polled.headers["X-APIMart-Response-Version"] == "2026-07-27"
    assert polled.json()["data"]["object"] == "generation.task"
    legacy = client.get(f"/v1/tasks/{data['id']}").json()["data"]
    assert "object" not in legacy
    bad = submit(client, PIX, **{"X-APIMart-Response-Version": "latest"})
    assert_error(bad, 400, "invalid_request_error", "X-APIMart-Response-Version")


# --- idempotency ------------------------------------------------------------------------------------


def _task_count(database: Database) -> int:
    with database.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(db.tasks)).scalar_one())


def test_idempotent_replay(client: TestClient, database: Database) -> None:
    first = submit(client, PIX, **{"Idempotency-Key": "order-42"})
    again = submit(client, dict(reversed(list(PIX.items()))), **{"Idempotency-Key": "order-42"})
    assert first.status_code == again.status_code == 200
    assert "Idempotency-Replayed" not in first.headers
    assert again.headers["Idempotency-Replayed"] == "true"
    assert again.json()["data"][0]["task_id"] == first.json()["data"][0]["task_id"]
    assert _task_count(database) == 1


def test_idempotency_key_reused_with_other_body_is_409(client: TestClient, database: Database) -> None:
    submit(client, PIX, **{"Idempotency-Key": "order-43"})
    conflict = submit(client, {**PIX, "duration": 8}, **{"Idempotency-Key": "order-43"})
    assert_error(conflict, 409, "invalid_request_error", "Idempotency-Key")
    assert _task_count(database) == 1


def test_idempotency_keys_are_per_api_key(client: TestClient, other_key: str) -> None:
    a = submit(client, PIX, **{"Idempotency-Key": "shared"}).json()["data"][0]["task_id"]
    b = client.post(
        "/v1/videos/generations", json=PIX, headers={**auth(other_key), "Idempotency-Key": "shared"}
    )
    assert b.json()["data"][0]["task_id"] != a


@pytest.mark.parametrize("value", ["", "has space", "x" * 192, "ümlaut"])
def test_bad_idempotency_key(client: TestClient, value: str) -> None:
    response = client.post(
        "/v1/videos/generations",
        json=PIX,
        headers={"Idempotency-Key": value.encode("utf-8")},  # type: ignore[dict-item]
    )
    assert_error(response, 400, "invalid_request_error", "Idempotency-Key")


# --- isolation --------------------------------------------------------------------------------------


def test_other_keys_task_is_404(client: TestClient, other_key: str) -> None:
    task_id = submit(client, PIX).json()["data"][0]["task_id"]
    response = client.get(f"/v1/tasks/{task_id}", headers=auth(other_key))
    error = assert_error(response, 404, "not_found_error")
    assert task_id in error["message"]
    missing = client.get("/v1/tasks/task_01KA040M0HP1GJWBJYZMKX1XS1")
    assert missing.json() == {
        "error": {**missing.json()["error"], "message": missing.json()["error"]["message"]}
    }
    assert_error(missing, 404, "not_found_error")
    # Same body, same status: nothing tells a foreign task from a missing one.
    assert response.json()["error"]["type"] == missing.json()["error"]["type"]


def test_extension_source_rules(client: TestClient, database: Database, other_key: str) -> None:
    pending_source = submit(client, PIX).json()["data"][0]["task_id"]
    body = {**PIX, "extend_from_task_id": pending_source}
    assert_error(submit(client, body), 400, "invalid_request_error", "extend_from_task_id")
    run_to(database, pending_source, "completed")
    assert submit(client, body).status_code == 200
    # Another key may not extend it: to that key the task does not exist.
    foreign = client.post("/v1/videos/generations", json=body, headers=auth(other_key))
    assert_error(foreign, 400, "invalid_request_error", "extend_from_task_id")
    vidu_source = submit(client, VIDU).json()["data"][0]["task_id"]
    run_to(database, vidu_source, "completed")
    wrong_model = submit(client, {**PIX, "extend_from_task_id": vidu_source})
    assert (
        "pixverse-v6"
        in assert_error(wrong_model, 400, "invalid_request_error", "extend_from_task_id")["message"]
    )
    missing = submit(client, {**PIX, "extend_from_task_id": "task_nope"})
    assert_error(missing, 400, "invalid_request_error", "extend_from_task_id")


# --- request errors ---------------------------------------------------------------------------------


def test_validation_errors_change_nothing(client: TestClient, database: Database) -> None:
    cases = [
        ({**PIX, "duraton": 5}, "duraton"),
        ({**PIX, "duration": "5"}, "duration"),
        ({**VIDU, "image_urls": []}, "image_urls"),
        ({"prompt": "x"}, "model"),
        ({**PIX, "model": "sora-9"}, "model"),
    ]
    for body, param in cases:
        assert_error(submit(client, body), 400, "invalid_request_error", param)
    for raw in (b"{not json", b"[1, 2]", b'"text"'):
        response = client.post(
            "/v1/videos/generations", content=raw, headers={"Content-Type": "application/json"}
        )
        assert_error(response, 400, "invalid_request_error")
    assert_error(
        client.post("/v1/videos/generations", content=b"{" + b" " * 2_000_000 + b"}"),
        413,
        "invalid_request_error",
    )
    assert _task_count(database) == 0


def test_zh_validation_message(client: TestClient) -> None:
    response = client.post("/v1/videos/generations?language=zh", json={**PIX, "duration": 99})
    message = assert_error(response, 400, "invalid_request_error", "duration")["message"]
    assert "之间" in message


def test_unknown_route_and_method(client: TestClient) -> None:
    assert_error(client.get("/v1/nothing"), 404, "not_found_error")
    assert_error(client.delete("/v1/videos/generations"), 405, "invalid_request_error")


# --- discovery and account ----------------------------------------------------------------------------


def test_models_schema_docs_balance_health(client: TestClient) -> None:
    models = client.get("/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["viduq3", "viduq3-mix", "pixverse-v6"]
    assert all(m["providers"] == ["local"] for m in models["data"])
    schema = client.get("/v1/model-schema?model=viduq3-mix&operation=video_generation").json()
    assert schema["model"] == "viduq3-mix" and schema["operation"] == "video_generation"
    assert schema["input_schema"]["properties"]["duration"]["minimum"] == 1
    assert_error(client.get("/v1/model-schema?model=nope"), 400, "invalid_request_error", "model")
    assert_error(
        client.get("/v1/model-schema?model=viduq3&operation=image_generation"),
        400,
        "invalid_request_error",
        "operation",
    )
    assert_error(client.get("/v1/model-schema"), 400, "invalid_request_error", "model")
    docs = client.get("/v1/model-docs?model=pixverse-v6").json()
    assert docs["object"] == "model.documentation" and docs["model"] == "pixverse-v6"
    assert "extend_from_task_id" in docs["markdown"] and docs["stale"] is False
    assert set(docs) >= {"doc_url", "markdown_url", "fetched_at", "cache_ttl_seconds"}
    markdown = client.get(docs["markdown_url"].replace("http://testserver", ""))
    assert markdown.headers["content-type"].startswith("text/markdown")
    assert markdown.text == docs["markdown"]
    for path in ("/v1/balance", "/v1/user/balance"):
        assert client.get(path).json() == {
            "success": True,
            "remain_balance": -1,
            "used_balance": 0,
            "unlimited_quota": True,
        }
    assert client.get("/healthz", headers={"Authorization": ""}).json()["status"] == "ok"


def test_task_row_belongs_to_its_key(client: TestClient, database: Database, api_key: str) -> None:
    task_id = submit(client, PIX).json()["data"][0]["task_id"]
    row = tasks.get(database, task_id)
    assert row is not None and row.status == Status.PENDING
    owner = keys.authenticate(database, api_key)
    assert owner is not None and row.key_id == owner.id
