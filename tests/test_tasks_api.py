"""vidgate's task extensions: `GET /v1/tasks` (own tasks, keyset pages, filters), cancellation, readiness."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from vidgate import leases
from vidgate.db import Database

from .conftest import auth
from .test_api import PIX, VIDU, assert_error, run_to, submit


def _ids(client: TestClient, **params: object) -> tuple[list[str], dict[str, object]]:
    body = client.get("/v1/tasks", params=params).json()
    return [t["id"] for t in body["data"]], body


def test_list_pages_newest_first_and_is_stable(client: TestClient) -> None:
    made = [submit(client, {**PIX, "prompt": f"clip {i}"}).json()["data"][0]["task_id"] for i in range(7)]
    first, body = _ids(client, limit=3)
    assert body["object"] == "list" and body["has_more"] is True
    assert first == made[::-1][:3]
    # A task submitted between pages does not shift the next page.
    submit(client, PIX)
    second, body2 = _ids(client, limit=3, cursor=body["next_cursor"])
    assert second == made[::-1][3:6]
    third, body3 = _ids(client, limit=3, cursor=body2["next_cursor"])
    assert third == made[:1] and body3["has_more"] is False and body3["next_cursor"] is None


def test_list_filters_and_isolation(client: TestClient, database: Database, other_key: str) -> None:
    vidu = submit(client, VIDU).json()["data"][0]["task_id"]
    run_to(database, vidu, "completed")
    pix = submit(client, PIX).json()["data"][0]["task_id"]
    client.post("/v1/videos/generations", json=PIX, headers=auth(other_key))
    assert _ids(client, model="viduq3")[0] == [vidu]
    assert _ids(client, status="pending")[0] == [pix]
    assert _ids(client, status="completed")[0] == [vidu]
    assert _ids(client, created_after=time.time() + 60)[0] == []
    assert set(_ids(client, created_before=time.time() + 60)[0]) == {pix, vidu}
    listed = client.get("/v1/tasks").json()["data"]
    completed = next(t for t in listed if t["id"] == vidu)
    assert completed["result"]["videos"][0]["url"][0].startswith("http://testserver/files/")
    assert len(client.get("/v1/tasks", headers=auth(other_key)).json()["data"]) == 1


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"status": "done"}, "status"),
        ({"cursor": "garbage"}, "cursor"),
        ({"created_after": "yesterday"}, "created_after"),
    ],
)
def test_list_rejects_bad_parameters(client: TestClient, params: dict[str, object], param: str) -> None:
    assert_error(client.get("/v1/tasks", params=params), 400, "invalid_request_error", param)


def test_cancel_pending_at_once(client: TestClient, database: Database) -> None:
    task_id = submit(client, PIX).json()["data"][0]["task_id"]
    response = client.post(f"/v1/tasks/{task_id}/cancel")
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["status"] == "cancelled" and data["cost"] == 0 and "completed" in data
    assert client.get(f"/v1/tasks/{task_id}").json()["data"]["status"] == "cancelled"
    # Nothing can claim it any more.
    assert leases.claim(database, owner="w", providers=frozenset({"local"}), limit=5, lease_seconds=5) == []
    again = client.post(f"/v1/tasks/{task_id}/cancel")
    assert "cancelled" in assert_error(again, 409, "invalid_request_error", "task_id")["message"]


def test_cancel_finished_or_foreign_task(client: TestClient, database: Database, other_key: str) -> None:
    task_id = submit(client, PIX).json()["data"][0]["task_id"]
    assert_error(client.post(f"/v1/tasks/{task_id}/cancel", headers=auth(other_key)), 404, "not_found_error")
    run_to(database, task_id, "completed")
    assert_error(client.post(f"/v1/tasks/{task_id}/cancel"), 409, "invalid_request_error", "task_id")
    assert client.get(f"/v1/tasks/{task_id}").json()["data"]["status"] == "completed"


def test_cancel_held_task_is_finished_by_its_worker(client: TestClient, database: Database) -> None:
    task_id = submit(client, PIX).json()["data"][0]["task_id"]
    (row,) = leases.claim(database, owner="w", providers=frozenset({"local"}), limit=1, lease_seconds=30)
    lease = leases.lease_of(row)
    response = client.post(f"/v1/tasks/{task_id}/cancel")
    assert response.json()["data"]["status"] == "processing"
    assert leases.heartbeat(database, lease, 30) is True  # the worker learns of it at its next heartbeat
    leases.finish_cancel(database, lease)
    assert client.get(f"/v1/tasks/{task_id}").json()["data"]["status"] == "cancelled"


def test_cancel_stops_a_running_render(worker_client: TestClient) -> None:
    body = {**PIX, "duration": 15, "resolution": "1080p"}
    task_id = submit(worker_client, body).json()["data"][0]["task_id"]
    deadline = time.time() + 30
    while worker_client.get(f"/v1/tasks/{task_id}").json()["data"]["status"] != "processing":
        assert time.time() < deadline
        time.sleep(0.02)
    worker_client.post(f"/v1/tasks/{task_id}/cancel")
    while (data := worker_client.get(f"/v1/tasks/{task_id}").json()["data"])["status"] == "processing":
        assert time.time() < deadline
        time.sleep(0.05)
    assert data["status"] == "cancelled" and "result" not in data


def test_readyz(client: TestClient) -> None:
    body = client.get("/readyz", headers={"Authorization": ""}).json()
    assert body["status"] == "ready" and body["revision"]
