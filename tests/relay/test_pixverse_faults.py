"""The `pixverse` relay under PixVerse's failures, injected with the fake's knobs: each ends in the
right task state and error, failures cost nothing, and no task ever makes a second job."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ImageServer, png_bytes
from vidgate import tasks
from vidgate.db import Database
from vidgate.providers.pixverse import (
    IMAGES_KEY,
    INSUFFICIENT_CREDITS_ERRCODE,
    TRACE_KEY,
    generate_call,
)
from vidgate.status import Phase, Status
from vidgate.testing.fake_serve import free_port

from .conftest import wait_for
from .test_pixverse import (
    KEY,
    PIX,
    Gateway,
    assert_one_job_per_task,
    dead_owner,
    gateway,
    images,
    job_of,
    quick_backoff,
    request,
    row_of,
    run,
    running,
    served_video,
    staged_task,
    stats,
    submit,
)

__all__ = ["gateway", "images", "quick_backoff"]  # fixtures shared with test_pixverse.py


def failed(data: dict[str, Any], code: str, type_: str) -> dict[str, Any]:
    assert data["status"] == "failed", data
    assert data["error"]["code"] == code and data["error"]["type"] == type_, data["error"]
    assert data["cost"] == 0 and "result" not in data
    assert data["provider"] == "pixverse"
    error: dict[str, Any] = data["error"]
    return error


# --- refusals at submit ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("knobs", "code", "type_", "needle"),
    [
        (
            {"submit_errors": [{"code": 500054, "count": 1}]},
            "content_policy_violation",
            "invalid_request_error",
            "",
        ),
        (
            {"submit_errors": [{"code": 500063, "count": 1}]},
            "content_policy_violation",
            "invalid_request_error",
            "",
        ),
        (
            {"submit_errors": [{"code": 400017, "count": 1}]},
            "upstream_rejected",
            "invalid_request_error",
            "400017",
        ),
        ({"credits_balance": 0}, "upstream_quota_exceeded", "bad_gateway", "out of credits"),
        ({"api_key": "another-key"}, "upstream_auth_failed", "bad_gateway", "credentials"),
    ],
    ids=["500054", "500063", "400017", "no-credits", "bad-key"],
)
def test_refused_submits_fail_the_task_without_a_job(
    gateway: Gateway, pixverse: tuple[Any, str], knobs: dict[str, Any], code: str, type_: str, needle: str
) -> None:
    app, _ = pixverse
    app.fake.configure(**knobs)
    with running(gateway) as (client, _database):
        error = failed(run(client, PIX), code, type_)
    assert "PixVerse" in error["message"] and needle in error["message"]
    assert stats(app)["jobs_created"] == 0


def test_insufficient_credits_code_matches_the_fake() -> None:
    # Both are the same guess (the real code is unknown); this keeps them from drifting apart.
    from vidgate.testing.fake_pixverse_spec import FakePixVerseConfig

    assert FakePixVerseConfig().insufficient_credits_errcode == INSUFFICIENT_CREDITS_ERRCODE


def test_a_prompt_over_pixverse_limit_is_rejected_clearly(
    gateway: Gateway, pixverse: tuple[Any, str]
) -> None:
    app, _ = pixverse
    with running(gateway) as (client, _database):
        error = failed(
            run(client, {**PIX, "prompt": "a" * 3000}), "upstream_rejected", "invalid_request_error"
        )
    assert error["param"] == "prompt"
    assert "3000 characters" in error["message"] and "at most 2048" in error["message"]
    assert stats(app)["submit_errors"] == {"400018": 1}


def test_an_image_pixverse_cannot_read_fails_naming_it(
    gateway: Gateway, pixverse: tuple[Any, str], images: dict[str, str]
) -> None:
    app, _ = pixverse
    app.fake.configure(submit_errors=[{"code": 500032, "count": 1, "endpoints": ["upload"]}])
    with running(gateway) as (client, _database):
        data = run(client, {**PIX, "image_urls": [images["wide"]]})
    error = failed(data, "invalid_image", "invalid_request_error")
    assert error["param"] == "image_urls[0]" and "500032" in error["message"]
    assert stats(app)["jobs_created"] == 0


# --- busy: come back later, never fail while time remains --------------------------------------------------


def test_a_500044_burst_is_waited_out_with_one_job_and_one_upload(
    gateway: Gateway, pixverse: tuple[Any, str], images: dict[str, str]
) -> None:
    app, _ = pixverse
    app.fake.configure(submit_errors=[{"code": 500044, "count": 3}])
    with running(gateway) as (client, database):
        data = run(client, {**PIX, "image_urls": [images["wide"]]})
        assert data["status"] == "completed" and data["provider"] == "pixverse"
        state = row_of(database, data["id"]).upstream_state
    snap = stats(app)
    assert snap["submit_errors"] == {"500044": 3} and snap["jobs_created"] == 1
    assert snap["uploads"] == 1  # the img_id was kept across the busy retries
    # Each refused call had its own trace id: a reused one could replay the refusal.
    assert sorted(snap["submits_by_trace_id"].values()) == [1, 1, 1, 1]
    assert state["busy"] == 3


def test_pixverse_concurrency_limit_below_the_cap_only_delays(
    gateway: Gateway, pixverse: tuple[Any, str]
) -> None:
    app, _ = pixverse
    app.fake.configure(concurrency=2)
    with running(gateway, pixverse_max_in_flight=4) as (client, _database):
        ids = [submit(client, {**PIX, "seed": n}) for n in range(4)]
        finals = [wait_for(client, task_id, timeout=30) for task_id in ids]
    assert [d["status"] for d in finals] == ["completed"] * 4
    snap = stats(app)
    assert snap["jobs_created"] == 4 and snap["max_in_flight"] == 2
    assert snap["submit_errors"].get("500044", 0) >= 1


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_http_error_bursts_on_generate_are_retried(
    gateway: Gateway, pixverse: tuple[Any, str], tmp_path: Path, status: int
) -> None:
    app, _ = pixverse
    app.fake.configure(http_errors=[{"status": status, "count": 2, "endpoints": ["generate"]}])
    with running(gateway) as (client, _database):
        served_video(client, run(client, PIX), tmp_path)
    assert stats(app)["injected"] == {f"http:{status}:generate": 2}
    assert_one_job_per_task(app)


@pytest.mark.parametrize("status", [429, 500, 503])
def test_http_error_bursts_on_polls_are_retried(
    gateway: Gateway, pixverse: tuple[Any, str], tmp_path: Path, status: int
) -> None:
    app, _ = pixverse
    app.fake.configure(http_errors=[{"status": status, "count": 4, "endpoints": ["result"]}])
    with running(gateway) as (client, _database):
        served_video(client, run(client, PIX), tmp_path)
    assert stats(app)["injected"] == {f"http:{status}:result": 4}
    assert_one_job_per_task(app)


def test_an_unreachable_pixverse_hands_the_task_to_local(make_gateway: Gateway) -> None:
    dead = f"http://127.0.0.1:{free_port('127.0.0.1')}/openapi/v2"
    with make_gateway(pixverse_api_key="k", pixverse_base_url=dead, upstream_poll_seconds=0.05) as (
        client,
        db,
    ):
        data = run(client, {**PIX, "resolution": "360p"}, timeout=60)
        assert row_of(db, data["id"]).upstream_id is None
    assert data["status"] == "completed" and data["provider"] == "local"


def test_a_5xx_after_a_lost_answer_never_leaves_pixverse(gateway: Gateway, pixverse: tuple[Any, str]) -> None:
    """The first call timed out (its job exists); the retries then meet 503s. The task may not move
    to another provider: it waits and replays the first call's trace id."""
    app, _ = pixverse
    app.fake.configure(
        slow=[{"delay_s": 1.0, "count": 1, "endpoints": ["generate"]}],
        http_errors=[{"status": 503, "count": 2, "endpoints": ["generate"]}],
    )
    with running(gateway, upstream_timeout_seconds=0.5) as (client, _database):
        data = run(client, PIX)
    assert data["status"] == "completed" and data["provider"] == "pixverse"
    snap = stats(app)
    assert snap["jobs_created"] == 1 and snap["replays"] == 1
    assert list(snap["submits_by_trace_id"].values()) == [2]


# --- lost and garbled answers -----------------------------------------------------------------------------


def test_a_generate_slower_than_the_timeout_is_replayed_not_repeated(
    gateway: Gateway, pixverse: tuple[Any, str], tmp_path: Path
) -> None:
    app, _ = pixverse
    app.fake.configure(slow=[{"delay_s": 1.0, "count": 1, "endpoints": ["generate"]}])
    with running(gateway, upstream_timeout_seconds=0.5) as (client, database):
        data = run(client, PIX)
        served_video(client, data, tmp_path)
        job = job_of(app, database, data["id"])
    snap = stats(app)
    assert snap["jobs_created"] == 1 and snap["replays"] == 1
    assert snap["replays_by_endpoint"] == {"generate": 1}
    assert snap["submits_by_trace_id"] == {job.trace_id: 2}


@pytest.mark.parametrize("mode", ["invalid_json", "missing_fields", "empty_body", "html"])
def test_a_garbled_generate_answer_is_replayed(
    gateway: Gateway, pixverse: tuple[Any, str], tmp_path: Path, mode: str
) -> None:
    app, _ = pixverse
    app.fake.configure(malformed=[{"mode": mode, "count": 1, "endpoints": ["generate"]}])
    with running(gateway) as (client, _database):
        served_video(client, run(client, PIX), tmp_path)
    snap = stats(app)
    assert snap["jobs_created"] == 1 and snap["replays_by_endpoint"] == {"generate": 1}


def test_a_garbled_upload_answer_does_not_upload_twice(
    gateway: Gateway, pixverse: tuple[Any, str], images: dict[str, str], tmp_path: Path
) -> None:
    app, _ = pixverse
    app.fake.configure(malformed=[{"mode": "missing_fields", "count": 1, "endpoints": ["upload"]}])
    with running(gateway) as (client, _database):
        served_video(client, run(client, {**PIX, "image_urls": [images["square"]]}), tmp_path)
    snap = stats(app)
    assert snap["uploads"] == 1 and snap["replays_by_endpoint"] == {"upload": 1}
    assert_one_job_per_task(app)


@pytest.mark.parametrize("mode", ["invalid_json", "missing_fields", "html"])
def test_garbled_poll_answers_are_retried(
    gateway: Gateway, pixverse: tuple[Any, str], tmp_path: Path, mode: str
) -> None:
    app, _ = pixverse
    app.fake.configure(malformed=[{"mode": mode, "count": 3, "endpoints": ["result"]}])
    with running(gateway) as (client, _database):
        served_video(client, run(client, PIX), tmp_path)
    assert stats(app)["injected"] == {f"malformed:{mode}:result": 3}
    assert_one_job_per_task(app)


# --- how the job ends -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "type_", "needle"),
    [
        (7, "content_policy_violation", "invalid_request_error", "content policy"),
        (8, "upstream_failed", "server_error", "status 8"),
        (6, "upstream_failed", "server_error", "deleted"),
    ],
)
def test_final_status_fails_the_task(
    gateway: Gateway, pixverse: tuple[Any, str], status: int, code: str, type_: str, needle: str
) -> None:
    app, _ = pixverse
    app.fake.configure(final_status=[{"status": status, "count": 1}])
    with running(gateway) as (client, database):
        data = run(client, PIX)
        job = job_of(app, database, data["id"])
    error = failed(data, code, type_)
    assert needle in error["message"] and job.status == status
    assert_one_job_per_task(app)


def test_an_expired_result_url_fails_clearly(gateway: Gateway, pixverse: tuple[Any, str]) -> None:
    app, _ = pixverse
    app.fake.configure(url_ttl_s=0.001)
    with running(gateway) as (client, _database):
        error = failed(run(client, PIX), "upstream_result_expired", "bad_gateway")
    assert "HTTP 403" in error["message"]
    assert stats(app)["files_rejected"] == {"403": 1}


def test_a_job_unknown_upstream_fails_after_a_few_polls(gateway: Gateway, pixverse: tuple[Any, str]) -> None:
    app, _ = pixverse
    app.fake.configure(generation_base_s=6000.0)  # a minute real time: the test removes it first
    with running(gateway) as (client, database):
        task_id = submit(client, PIX)
        deadline = time.time() + 10
        while row_of(database, task_id).upstream_id is None and time.time() < deadline:
            time.sleep(0.02)
        video_id = int(row_of(database, task_id).upstream_id)
        with app.fake.lock:
            del app.fake.jobs[video_id]
        polls = stats(app)["polls"]
        error = failed(wait_for(client, task_id), "upstream_failed", "server_error")
    assert "unknown at PixVerse" in error["message"]
    assert stats(app)["polls"] - polls == 3


def test_an_image_server_is_only_read_by_vidgate(gateway: Gateway, pixverse: tuple[Any, str]) -> None:
    """PixVerse gets uploaded bytes, never the client's URL (§2.3)."""
    app, _ = pixverse
    server = ImageServer()
    try:
        url = server.add("/a.png", png_bytes((9, 9, 9), (200, 200)))
        with running(gateway) as (client, _database):
            data = run(client, {**PIX, "image_urls": [url]})
        assert data["status"] == "completed"
        assert server.hits == {"/a.png": 1} and stats(app)["uploads"] == 1
    finally:
        server.close()


# --- crash recovery -------------------------------------------------------------------------------------


def crashed_in_submitting(database: Database, body: dict[str, Any], trace: str) -> str:
    """A task whose worker died right after committing `submitting` with its trace id."""
    now = time.time()
    return staged_task(
        database,
        body,
        provider="pixverse",
        status=Status.PROCESSING.value,
        phase=Phase.SUBMITTING.value,
        upstream_state={TRACE_KEY: trace, IMAGES_KEY: []},
        lease_owner=dead_owner(),
        lease_until=now - 1,
        lease_token=1,
        attempts=1,
        started_at=now,
    )


@pytest.mark.parametrize("call_arrived", [True, False], ids=["job-created", "call-lost"])
def test_a_task_crashed_in_submitting_finds_its_job_by_trace_id(
    gateway: Gateway, pixverse: tuple[Any, str], tmp_path: Path, call_arrived: bool
) -> None:
    app, base = pixverse
    body = {**PIX, "size": "3:4"}
    trace = str(uuid.uuid4())
    created = None
    if call_arrived:  # the dead worker's generate call reached PixVerse
        path, payload = generate_call(request(size="3:4"), [], None)
        answer = httpx.post(
            f"{base}/openapi/v2{path}", json=payload, headers={"API-KEY": KEY, "Ai-trace-id": trace}
        ).json()
        created = answer["Resp"]["video_id"]
    with running(gateway) as (client, database):
        task_id = crashed_in_submitting(database, body, trace)
        data = wait_for(client, task_id)
        served_video(client, data, tmp_path)
        row = row_of(database, task_id)
    snap = stats(app)
    assert snap["jobs_created"] == 1
    assert snap["submits_by_trace_id"] == {trace: 2 if call_arrived else 1}
    assert snap["replays"] == (1 if call_arrived else 0)
    if created is not None:
        assert row.upstream_id == str(created)
    events = tasks.events(database, task_id)
    assert any((e.detail or {}).get("took_over_from") for e in events)
