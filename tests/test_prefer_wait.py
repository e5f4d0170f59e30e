"""`Prefer: wait=N` on submit: hold up to N s, answer the task object with `Preference-Applied`."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from vidgate.api.videos import prefer_wait
from vidgate.errors import InvalidRequest

SHORT = {"model": "pixverse-v6", "prompt": "a kite", "duration": 1, "resolution": "360p"}


def test_short_render_finishes_within_the_wait(worker_client: TestClient) -> None:
    response = worker_client.post("/v1/videos/generations", json=SHORT, headers={"Prefer": "wait=60"})
    assert response.status_code == 200, response.text
    assert response.headers["preference-applied"] == "wait=60"
    assert response.headers["x-apimart-response-version"] == "2026-07-27"
    task = response.json()["data"]
    assert task["object"] == "generation.task"
    assert task["status"] == "completed", task
    assert task["result"]["videos"][0]["url"], task


def test_unfinished_task_is_answered_after_the_wait(client: TestClient) -> None:
    started = time.monotonic()
    response = client.post("/v1/videos/generations", json=SHORT, headers={"Prefer": "respond-async, wait=1"})
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert 1.0 <= elapsed < 5, elapsed
    assert response.headers["preference-applied"] == "wait=1"
    task = response.json()["data"]
    assert task["status"] in ("pending", "processing")
    assert task["id"].startswith("task_")


def test_without_prefer_the_legacy_answer_is_unchanged(client: TestClient) -> None:
    response = client.post("/v1/videos/generations", json=SHORT)
    assert response.status_code == 200
    assert "preference-applied" not in response.headers
    assert response.json()["data"][0]["status"] == "submitted"


@pytest.mark.parametrize("value", ["wait=61", "wait=-1", "wait=abc", "wait=", "wait=1.5"])
def test_bad_wait_is_a_400_naming_prefer(client: TestClient, value: str) -> None:
    response = client.post("/v1/videos/generations", json=SHORT, headers={"Prefer": value})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == "Prefer"
    assert "60" in error["message"]


def test_prefer_parsing() -> None:
    assert prefer_wait(None) is None
    assert prefer_wait("respond-async") is None
    assert prefer_wait("return=minimal, WAIT=30") == 30
    assert prefer_wait('wait="5"; foo=bar') == 5
    assert prefer_wait("wait=0") == 0
    with pytest.raises(InvalidRequest):
        prefer_wait("wait=600")
    with pytest.raises(InvalidRequest):
        prefer_wait("wait=\u00b2")
