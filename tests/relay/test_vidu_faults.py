"""The `vidu` provider's fault matrix against the fake Vidu: every fault ends in the right state and
error, a failed task costs nothing, and no task ever makes a second upstream job."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.conftest import ImageServer
from tests.relay.conftest import wait_for
from tests.relay.test_vidu import (
    Gateway,
    assert_failed,
    fast_backoff,
    jobs_of,
    open_gateway,
    submit,
    wait_row,
)
from vidgate.testing.fake_serve import free_port
from vidgate.testing.fake_vidu_tasks import ViduStats

pytestmark = pytest.mark.usefixtures("fast_backoff")
__all__ = ["fast_backoff"]  # the fixture, imported for pytestmark


def run_one(
    app: Any, make_gateway: Gateway, base: str, images: ImageServer, **settings: Any
) -> dict[str, Any]:
    with open_gateway(make_gateway, base, **settings) as (client, _database):
        task_id = submit(client, images, duration=3)
        data = wait_for(client, task_id)
    data["jobs"] = jobs_of(app, task_id)
    return data


def attempts(app: Any, endpoint: str = "submit") -> int:
    """Requests that reached `endpoint`, counting those a transport fault answered before the API."""
    stats: ViduStats = app.fake.stats
    injected = stats.injected.items()
    bursts = sum(n for name, n in injected if name.startswith("http:") and name.endswith(f":{endpoint}"))
    return (stats.submits if endpoint == "submit" else stats.lists) + bursts


def one_job(app: Any, data: dict[str, Any]) -> None:
    """Completed on vidu by exactly one upstream job, whatever the retries."""
    assert data["status"] == "completed" and data["provider"] == "vidu", data
    assert len(data["jobs"]) == 1 and app.fake.stats.jobs_created == 1
    assert app.fake.stats.submits_by_payload == {data["id"]: 1}


# --- refused at submit: a clear failure, no job --------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "code", "type_"),
    [
        ("CreditInsufficient", "upstream_quota_exceeded", "bad_gateway"),
        ("AuditSubmitIllegal", "content_policy_violation", "invalid_request_error"),
        ("TaskPromptPolicyViolation", "content_policy_violation", "invalid_request_error"),
        ("FieldInvalid", "upstream_rejected", "invalid_request_error"),
        ("ImageFormatInvalid", "invalid_image", "invalid_request_error"),
        ("Forbidden", "upstream_auth_failed", "bad_gateway"),
    ],
)
def test_submit_refusals_fail_the_task(
    vidu: tuple[Any, str],
    make_gateway: Gateway,
    image_server: ImageServer,
    reason: str,
    code: str,
    type_: str,
) -> None:
    app, base = vidu
    app.fake.configure(submit_errors=[{"code": reason, "count": 1}])
    data = run_one(app, make_gateway, base, image_server)
    assert_failed(data, code, type_)
    assert "Vidu" in data["error"]["message"]
    assert app.fake.stats.jobs_created == 0 and app.fake.stats.submits == 1


def test_out_of_credits_and_a_wrong_key(
    vidu: tuple[Any, str], make_gateway: Gateway, image_server: ImageServer
) -> None:
    app, base = vidu
    app.fake.configure(credits_balance=10)
    assert_failed(run_one(app, make_gateway, base, image_server), "upstream_quota_exceeded", "bad_gateway")
    app.fake.configure(credits_balance=None)
    wrong = run_one(app, make_gateway, base, image_server, vidu_api_key="wrong")
    assert_failed(wrong, "upstream_auth_failed", "bad_gateway")
    assert app.fake.stats.unauthorized == 1 and app.fake.stats.jobs_created == 0


# --- failed upstream -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("err_code", "code", "type_"),
    [
        ("CreationPolicyViolation", "content_policy_violation", "invalid_request_error"),
        ("InternalServiceFailure", "upstream_failed", "server_error"),
    ],
)
def test_job_failures(
    vidu: tuple[Any, str],
    make_gateway: Gateway,
    image_server: ImageServer,
    err_code: str,
    code: str,
    type_: str,
) -> None:
    app, base = vidu
    app.fake.configure(task_failures=[{"code": err_code, "count": 1}])
    data = run_one(app, make_gateway, base, image_server)
    assert_failed(data, code, type_)
    assert len(data["jobs"]) == 1 and data["jobs"][0].err_code == err_code
    if code == "upstream_failed":
        assert err_code in data["error"]["message"]


def test_expired_result_url_fails_without_a_file(
    vidu: tuple[Any, str], make_gateway: Gateway, image_server: ImageServer
) -> None:
    app, base = vidu
    app.fake.configure(url_ttl_s=0.001)  # expires ~10 microseconds of real time after the poll
    data = run_one(app, make_gateway, base, image_server)
    assert_failed(data, "upstream_result_expired", "bad_gateway")
    assert app.fake.stats.files_rejected.get("403", 0) >= 1 and len(data["jobs"]) == 1


def test_a_job_that_vanished_upstream_fails_after_a_few_polls(
    vidu: tuple[Any, str], make_gateway: Gateway, image_server: ImageServer
) -> None:
    app, base = vidu
    app.fake.configure(processing_base_s=10_000)
    with open_gateway(make_gateway, base) as (client, database):
        task_id = submit(client, image_server, duration=3)
        wait_row(database, task_id, lambda r: r.upstream_id)
        app.fake.reset()  # the fake forgets every job: polls now get 404 TaskNotFound
        data = wait_for(client, task_id)
    assert_failed(data, "upstream_failed", "server_error")
    assert "TaskNotFound" in data["error"]["message"] and app.fake.stats.polls >= 3


# --- busy and unavailable: retried, still one job ---------------------------------------------------


@pytest.mark.parametrize(
    "faults",
    [
        {"submit_errors": [{"code": "QuotaExceeded", "count": 2}]},
        {
            "submit_errors": [
                {"code": "TooManyRequests", "count": 1},
                {"code": "SystemThrottling", "count": 1},
            ]
        },
        {"submit_errors": [{"code": "OperationInProcess", "count": 2}]},
        {"http_errors": [{"status": 429, "count": 2, "endpoints": ["submit"]}]},
    ],
    ids=["QuotaExceeded", "TooManyRequests+SystemThrottling", "OperationInProcess", "http429"],
)
def test_busy_submits_are_retried_into_one_job(
    vidu: tuple[Any, str], make_gateway: Gateway, image_server: ImageServer, faults: dict[str, Any]
) -> None:
    app, base = vidu
    app.fake.configure(**faults)
    data = run_one(app, make_gateway, base, image_server)
    one_job(app, data)
    assert attempts(app) == 3  # two refused submits, then the one that took


def test_internal_failure_falls_back_to_local(
    vidu: tuple[Any, str], make_gateway: Gateway, image_server: ImageServer
) -> None:
    app, base = vidu
    app.fake.configure(submit_errors=[{"code": "InternalServiceFailure", "count": 1}])
    data = run_one(app, make_gateway, base, image_server)
    assert data["status"] == "completed" and data["provider"] == "local", data
    assert app.fake.stats.jobs_created == 0 and app.fake.stats.submits == 1


@pytest.mark.parametrize(
    "faults",
    [
        {"submit_errors": [{"code": "InternalServiceFailure", "count": 2}]},
        {"http_errors": [{"status": 503, "count": 1, "endpoints": ["submit"]}]},
        # A proxy's 502 may hide an accepted create: vidgate looks before it tries again.
        {"http_errors": [{"status": 502, "count": 1, "endpoints": ["submit"]}]},
    ],
    ids=["InternalServiceFailure", "http503", "http502"],
)
def test_unavailable_without_fallback_retries_until_it_recovers(
    vidu: tuple[Any, str], make_gateway: Gateway, image_server: ImageServer, faults: dict[str, Any]
) -> None:
    app, base = vidu
    app.fake.configure(**faults)
    data = run_one(app, make_gateway, base, image_server, routes={"viduq3": ["vidu"]})
    one_job(app, data)
    assert attempts(app) >= 2


@pytest.mark.parametrize(
    "faults",
    [
        {"slow": [{"delay_s": 1.5, "count": 1, "endpoints": ["submit"]}]},
        {"malformed": [{"mode": "invalid_json", "count": 1, "endpoints": ["submit"]}]},
        {"malformed": [{"mode": "missing_fields", "count": 1, "endpoints": ["submit"]}]},
        {"malformed": [{"mode": "html", "count": 1, "endpoints": ["submit"]}]},
        {"malformed": [{"mode": "empty_body", "count": 1, "endpoints": ["submit"]}]},
        # The answer is lost and the list is down too: retried later, it still finds the job.
        {
            "slow": [{"delay_s": 1.5, "count": 1, "endpoints": ["submit"]}],
            "http_errors": [{"status": 503, "count": 2, "endpoints": ["list"]}],
        },
    ],
    ids=["slow", "invalid_json", "missing_fields", "html", "empty_body", "slow+list-down"],
)
def test_a_lost_create_answer_is_found_by_payload(
    vidu: tuple[Any, str], make_gateway: Gateway, image_server: ImageServer, faults: dict[str, Any]
) -> None:
    app, base = vidu
    app.fake.configure(**faults)
    data = run_one(app, make_gateway, base, image_server, upstream_timeout_seconds=0.5)
    one_job(app, data)
    assert app.fake.stats.submits == 1 and app.fake.stats.lists >= 1


@pytest.mark.parametrize(
    "faults",
    [
        {"http_errors": [{"status": 429, "count": 3, "endpoints": ["poll"]}]},
        {"http_errors": [{"status": s, "count": 1, "endpoints": ["poll"]} for s in (500, 502, 503, 504)]},
        {"slow": [{"delay_s": 1.0, "count": 2, "endpoints": ["poll"]}]},
        {
            "malformed": [
                {"mode": m, "count": 1, "endpoints": ["poll"]}
                for m in ("invalid_json", "missing_fields", "html", "empty_body")
            ]
        },
    ],
    ids=["http429", "http5xx", "slow", "malformed"],
)
def test_poll_faults_do_not_stop_a_job(
    vidu: tuple[Any, str], make_gateway: Gateway, image_server: ImageServer, faults: dict[str, Any]
) -> None:
    app, base = vidu
    app.fake.configure(**faults)
    data = run_one(app, make_gateway, base, image_server, upstream_timeout_seconds=0.5)
    one_job(app, data)
    assert app.fake.stats.submits == 1


def test_queuing_spelling_counts_as_queued(
    vidu: tuple[Any, str], make_gateway: Gateway, image_server: ImageServer
) -> None:
    app, base = vidu
    app.fake.configure(queueing_spelling="queuing", queueing_s=100)
    with open_gateway(make_gateway, base) as (client, database):
        task_id = submit(client, image_server, duration=3)
        queued = wait_row(database, task_id, lambda r: (r.upstream_state or {}).get("state") == "queuing")
        assert queued.progress == 2 and queued.status == "processing"  # queued, not an unknown state
        assert wait_for(client, task_id)["status"] == "completed"


# --- until the deadline ------------------------------------------------------------------------------


def test_busy_until_the_deadline_fails_upstream_busy(
    vidu: tuple[Any, str], make_gateway: Gateway, image_server: ImageServer
) -> None:
    app, base = vidu
    app.fake.configure(submit_errors=[{"code": "QuotaExceeded", "probability": 1.0}])
    data = run_one(app, make_gateway, base, image_server, task_deadline_seconds=1.0)
    assert_failed(data, "upstream_busy", "server_error")
    assert app.fake.stats.jobs_created == 0


def test_unreachable_until_the_deadline_fails_upstream_unavailable(
    make_gateway: Gateway, image_server: ImageServer
) -> None:
    settings = {"routes": {"viduq3": ["vidu"]}, "task_deadline_seconds": 1.0}
    with open_gateway(make_gateway, f"http://127.0.0.1:{free_port()}", **settings) as (client, _database):
        started = time.time()
        data = wait_for(client, submit(client, image_server, duration=3))
    assert_failed(data, "upstream_unavailable", "bad_gateway")
    assert time.time() - started < 10


def test_an_unknowable_submit_fails_submit_interrupted_at_the_deadline(
    vidu: tuple[Any, str], make_gateway: Gateway, image_server: ImageServer
) -> None:
    app, base = vidu
    app.fake.configure(
        slow=[{"delay_s": 1.0, "count": 1, "endpoints": ["submit"]}],
        http_errors=[{"status": 503, "probability": 1.0, "endpoints": ["list"]}],
    )
    data = run_one(
        app, make_gateway, base, image_server, upstream_timeout_seconds=0.3, task_deadline_seconds=2.0
    )
    assert_failed(data, "submit_interrupted", "server_error")
    # It never created a second job while it could not tell whether the first one existed.
    assert attempts(app) == 1 and attempts(app, "list") >= 2
