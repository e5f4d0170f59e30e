"""Key management: expiry and revocation (401), allowed models (403), the /admin HTTP API (every
route, its token, its 400s, absent without a token) and the `vidgate keys` commands."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from vidgate import keys, ledger
from vidgate.api import create_app
from vidgate.config import Settings
from vidgate.db import Database

from .conftest import auth, png_bytes
from .e2e.conftest import run_cli
from .test_api import PIX, VIDU, assert_error, submit

TOKEN = "admin-test-token-0123456789"
ADMIN = auth(TOKEN)


def every_v1_route(client: TestClient, secret: str, task_id: str) -> list[Any]:
    """One request of each kind a key can make."""
    headers = auth(secret)
    return [
        submit(client, PIX, **headers),
        client.get(f"/v1/tasks/{task_id}", headers=headers),
        client.get("/v1/tasks", headers=headers),
        client.post(f"/v1/tasks/{task_id}/cancel", headers=headers),
        client.get("/v1/models", headers=headers),
        client.get("/v1/model-schema", params={"model": "viduq3"}, headers=headers),
        client.get("/v1/balance", headers=headers),
        client.get("/v1/user/balance", headers=headers),
        client.post("/v1/uploads/images", files={"file": ("a.png", png_bytes((1, 2, 3)))}, headers=headers),
    ]


# --- expiry, revocation, allowed models ----------------------------------------------------------------


@pytest.mark.parametrize("ending", ["expired", "revoked"])
def test_an_expired_or_revoked_key_gets_401_everywhere(
    client: TestClient, database: Database, ending: str
) -> None:
    record, secret = keys.create(database, "ends", expires_at=time.time() + 3600)
    task_id = submit(client, PIX, **auth(secret)).json()["data"][0]["task_id"]
    assert client.get(f"/v1/tasks/{task_id}", headers=auth(secret)).status_code == 200
    if ending == "expired":
        keys.update(database, record.id, expires_at=time.time() - 1)
    else:
        keys.revoke(database, record.id)
    for response in every_v1_route(client, secret, task_id):
        assert_error(response, 401, "authentication_error")
    assert keys.get(database, record.id).state == ending  # type: ignore[union-attr]


def test_a_key_expires_by_itself(client: TestClient, database: Database) -> None:
    _, secret = keys.create(database, "brief", expires_at=time.time() + 1.0)
    assert client.get("/v1/models", headers=auth(secret)).status_code == 200
    time.sleep(1.1)
    assert_error(client.get("/v1/models", headers=auth(secret)), 401, "authentication_error")


def test_models_not_allowed_are_403_naming_the_model(client: TestClient, database: Database) -> None:
    _, secret = keys.create(database, "vidu only", allowed_models=["viduq3", "viduq3-mix"])
    refused = submit(client, PIX, **auth(secret))
    error = assert_error(refused, 403, "permission_error", "model")
    assert "pixverse-v6" in error["message"]
    zh = client.post("/v1/videos/generations?language=zh", json=PIX, headers=auth(secret))
    zh_error = assert_error(zh, 403, "permission_error")
    assert zh_error["param"] == "model" and "无权使用模型 pixverse-v6" in zh_error["message"]
    assert submit(client, VIDU, **auth(secret)).status_code == 200
    assert client.get("/v1/tasks", headers=auth(secret)).json()["data"][0]["model"] == "viduq3"


# --- the admin API ----------------------------------------------------------------------------------


@pytest.fixture
def admin(settings: Settings, database: Database) -> Iterator[TestClient]:
    settings.admin_token = TOKEN
    with TestClient(create_app(settings, run_worker=False), headers=ADMIN) as c:
        yield c


ROUTES = [
    ("GET", "/admin/keys"),
    ("POST", "/admin/keys"),
    ("GET", "/admin/keys/key_x"),
    ("PATCH", "/admin/keys/key_x"),
    ("POST", "/admin/keys/key_x/revoke"),
    ("POST", "/admin/keys/key_x/top-up"),
    ("GET", "/admin/keys/key_x/ledger"),
]


def test_without_a_token_the_admin_api_does_not_exist(client: TestClient) -> None:
    for method, path in [*ROUTES, ("GET", "/admin"), ("DELETE", "/admin/keys")]:
        for headers in ({}, ADMIN, auth("")):
            response = client.request(method, path, json={"name": "x"}, headers=headers)
            assert_error(response, 404, "not_found_error")
    assert "/admin/keys" not in client.get("/openapi.json").text


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_admin_route_needs_the_token(admin: TestClient, api_key: str, method: str, path: str) -> None:
    for headers in ({"Authorization": ""}, auth("wrong"), auth(TOKEN + "x"), auth(api_key), auth(TOKEN[:-1])):
        response = admin.request(method, path, json={"name": "x"}, headers=headers)
        assert_error(response, 401, "authentication_error")
    assert admin.get("/admin/keys", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401


def test_create_shows_the_secret_once(admin: TestClient) -> None:
    response = admin.post(
        "/admin/keys",
        json={
            "name": "partner",
            "expires_in": "30d",
            "allowed_models": ["pixverse-v6", "pixverse-v6", "viduq3"],
            "rpm": 60,
            "max_in_flight": 4,
            "balance": "12.5",
        },
    )
    assert response.status_code == 201, response.text
    created = response.json()
    secret = created.pop("secret")
    assert secret.startswith("vg_") and created["prefix"] == secret[:10]
    assert created.pop("webhook_secret").startswith("whsec_")  # shown once too (tests/test_webhooks.py)
    assert created | {"id": None, "created_at": None, "expires_at": None} == {
        "object": "api_key",
        "id": None,
        "name": "partner",
        "prefix": secret[:10],
        "status": "active",
        "created_at": None,
        "last_used_at": None,
        "revoked_at": None,
        "expires_at": None,
        "allowed_models": ["pixverse-v6", "viduq3"],
        "rpm": 60,
        "max_in_flight": 4,
        "unlimited_quota": False,
        "balance": "12.5",
        "used": "0",
    }
    assert abs(created["expires_at"] - (time.time() + 30 * 86400)) < 5
    # The secret works, and no later answer shows it again.
    assert admin.get("/v1/balance", headers=auth(secret)).json()["remain_balance"] == 12.5
    for later in (admin.get("/admin/keys"), admin.get(f"/admin/keys/{created['id']}")):
        assert secret not in later.text and "secret" not in later.text
    listed = admin.get("/admin/keys").json()
    assert listed["object"] == "list" and [k["id"] for k in listed["data"]] == [created["id"]]
    assert admin.get(f"/admin/keys/{created['id']}").json()["last_used_at"] is not None


def test_create_with_only_a_name_is_unlimited(admin: TestClient) -> None:
    created = admin.post("/admin/keys", json={"name": "plain", "expires_at": "2099-01-01T00:00:00Z"}).json()
    assert created["unlimited_quota"] is True and created["balance"] is None
    assert created["rpm"] is None and created["allowed_models"] is None
    assert created["expires_at"] == 4070908800
    assert admin.get("/v1/balance", headers=auth(created["secret"])).json()["remain_balance"] == -1


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": 5}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": "x", "rpm": 0}, "rpm"),
        ({"name": "x", "rpm": "10"}, "rpm"),
        ({"name": "x", "rpm": 1.5}, "rpm"),
        ({"name": "x", "rpm": True}, "rpm"),
        ({"name": "x", "rpm": 10**7}, "rpm"),
        ({"name": "x", "max_in_flight": -1}, "max_in_flight"),
        ({"name": "x", "allowed_models": []}, "allowed_models"),
        ({"name": "x", "allowed_models": ["sora"]}, "allowed_models"),
        ({"name": "x", "allowed_models": "viduq3"}, "allowed_models"),
        ({"name": "x", "allowed_models": [1]}, "allowed_models"),
        ({"name": "x", "expires_in": "soon"}, "expires_in"),
        ({"name": "x", "expires_in": "-1d"}, "expires_in"),
        ({"name": "x", "expires_in": 0}, "expires_in"),
        ({"name": "x", "expires_at": "2001-01-01"}, "expires_at"),
        ({"name": "x", "expires_at": "next tuesday"}, "expires_at"),
        ({"name": "x", "expires_at": 5}, "expires_at"),
        ({"name": "x", "expires_at": "inf"}, "expires_at"),
        ({"name": "x", "expires_at": "NaN"}, "expires_at"),
        ({"name": "x", "expires_at": 1e300}, "expires_at"),
        ({"name": "x", "expires_at": True}, "expires_at"),
        ({"name": "x", "expires_at": ["2030-01-01"]}, "expires_at"),
        ({"name": "x", "expires_in": "1e300"}, "expires_in"),
        ({"name": "x", "expires_in": True}, "expires_in"),
        ({"name": "x", "expires_at": 4070908800, "expires_in": "1d"}, "expires_in"),
        ({"name": "x", "balance": 0}, "balance"),
        ({"name": "x", "balance": "-1"}, "balance"),
        ({"name": "x", "balance": "ten"}, "balance"),
        ({"name": "x", "balance": "NaN"}, "balance"),
        ({"name": "x", "balance": 1.0000001}, "balance"),
        ({"name": "x", "balance": 1e12}, "balance"),
        ({"name": "x", "secret": "vg_mine"}, "secret"),
    ],
)
def test_create_refuses_bad_fields_naming_them(
    admin: TestClient, database: Database, body: dict[str, Any], param: str
) -> None:
    assert_error(admin.post("/admin/keys", json=body), 400, "invalid_request_error", param)
    assert keys.list_keys(database) == []


def test_bodies_must_be_json_objects(admin: TestClient) -> None:
    for content in (b"{", b"[1, 2]", b'"name"', b"\xff"):
        response = admin.post("/admin/keys", content=content, headers={"Content-Type": "application/json"})
        assert "JSON object" in assert_error(response, 400, "invalid_request_error")["message"]
    too_big = admin.post("/admin/keys", content=b" " * (65 * 1024) + b"{}")
    assert_error(too_big, 413, "invalid_request_error")


def test_patch_sets_and_clears_limits(admin: TestClient) -> None:
    created = admin.post("/admin/keys", json={"name": "k", "rpm": 5, "allowed_models": ["viduq3"]}).json()
    path = f"/admin/keys/{created['id']}"
    changed = admin.patch(path, json={"max_in_flight": 2, "expires_in": 3600, "allowed_models": None})
    assert changed.status_code == 200, changed.text
    view = changed.json()
    assert (view["rpm"], view["max_in_flight"], view["allowed_models"]) == (5, 2, None)
    assert abs(view["expires_at"] - (time.time() + 3600)) < 5
    cleared = admin.patch(path, json={"rpm": None, "expires_at": None}).json()
    assert (cleared["rpm"], cleared["expires_at"], cleared["max_in_flight"]) == (None, None, 2)
    assert admin.patch(path, json={}).json() == cleared
    assert "secret" not in cleared
    assert_error(admin.patch(path, json={"rpm": 0}), 400, "invalid_request_error", "rpm")
    assert_error(admin.patch(path, json={"name": "renamed"}), 400, "invalid_request_error", "name")
    assert_error(admin.patch(path, json={"balance": 5}), 400, "invalid_request_error", "balance")
    assert_error(admin.patch("/admin/keys/key_missing", json={"rpm": 1}), 404, "not_found_error", "key_id")


def test_a_new_rpm_applies_at_once_in_this_process(admin: TestClient) -> None:
    created = admin.post("/admin/keys", json={"name": "k"}).json()
    secret = created["secret"]
    task_id = submit(admin, PIX, **auth(secret)).json()["data"][0]["task_id"]
    assert admin.get(f"/v1/tasks/{task_id}", headers=auth(secret)).status_code == 200  # cached: no rpm
    admin.patch(f"/admin/keys/{created['id']}", json={"rpm": 1})
    assert admin.get(f"/v1/tasks/{task_id}", headers=auth(secret)).status_code == 200
    assert_error(admin.get(f"/v1/tasks/{task_id}", headers=auth(secret)), 429, "rate_limit_error")


def test_revoke_is_final_and_idempotent(admin: TestClient) -> None:
    created = admin.post("/admin/keys", json={"name": "k"}).json()
    path = f"/admin/keys/{created['id']}/revoke"
    first = admin.post(path).json()
    assert first["status"] == "revoked" and first["revoked_at"] is not None
    assert admin.post(path).json() == first
    assert_error(admin.get("/v1/models", headers=auth(created["secret"])), 401, "authentication_error")
    assert_error(admin.post("/admin/keys/key_missing/revoke"), 404, "not_found_error", "key_id")


def test_top_up_and_the_ledger(admin: TestClient, database: Database) -> None:
    created = admin.post("/admin/keys", json={"name": "k"}).json()
    key_id = created["id"]
    topped = admin.post(f"/admin/keys/{key_id}/top-up", json={"amount": 10, "note": "invoice 7"})
    assert topped.status_code == 200, topped.text
    assert (topped.json()["balance"], topped.json()["unlimited_quota"]) == ("10", False)
    again = admin.post(f"/admin/keys/{key_id}/top-up", json={"amount": "0.25"}).json()
    assert again["balance"] == "10.25"
    assert admin.get("/v1/balance", headers=auth(created["secret"])).json()["remain_balance"] == 10.25
    for body, param in (
        ({}, "amount"),
        ({"amount": 0}, "amount"),
        ({"amount": "x"}, "amount"),
        ({"amount": 1, "note": "n" * 201}, "note"),
        ({"amount": 1, "note": 5}, "note"),
        ({"amount": 1, "currency": "EUR"}, "currency"),
    ):
        refused = admin.post(f"/admin/keys/{key_id}/top-up", json=body)
        assert_error(refused, 400, "invalid_request_error", param)
    assert_error(admin.post("/admin/keys/key_x/top-up", json={"amount": 1}), 404, "not_found_error", "key_id")

    submit(admin, PIX, **auth(created["secret"]))  # a (free) hold
    page = admin.get(f"/admin/keys/{key_id}/ledger", params={"limit": 2}).json()
    assert (page["balance"], page["used"], page["unlimited_quota"]) == ("10.25", "0", False)
    assert [(e["kind"], e["amount"]) for e in page["data"]] == [("hold", "0"), ("topup", "0.25")]
    assert page["has_more"] is True and page["data"][0]["task_id"].startswith("task_")
    rest = admin.get(f"/admin/keys/{key_id}/ledger", params={"before": page["next_before"]}).json()
    assert [(e["kind"], e["note"], e["balance_after"]) for e in rest["data"]] == [
        ("topup", "invoice 7", "10")
    ]
    assert rest["has_more"] is False and rest["next_before"] is None
    assert len(ledger.entries(database, key_id)) == 3
    assert_error(admin.get(f"/admin/keys/{key_id}/ledger", params={"limit": 0}), 400, "invalid_request_error")
    assert_error(admin.get("/admin/keys/key_x/ledger"), 404, "not_found_error", "key_id")
    assert_error(admin.get("/admin/keys/key_x"), 404, "not_found_error", "key_id")


# --- the CLI ----------------------------------------------------------------------------------------


def test_keys_commands(tmp_path: Path) -> None:
    env = {**os.environ, "VIDGATE_DATA_DIR": str(tmp_path / "data")}
    created = run_cli(
        env,
        "keys",
        "create",
        "--name",
        "cli key",
        "--expires-in",
        "30d",
        "--models",
        "pixverse-v6,viduq3",
        "--rpm",
        "20",
        "--max-in-flight",
        "3",
        "--balance",
        "7.5",
    )
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip().splitlines()[-1]
    assert secret.startswith("vg_") and " " not in secret and len(secret) > 40
    database = Database(f"sqlite:///{tmp_path / 'data' / 'vidgate.db'}")
    try:
        key = keys.authenticate(database, secret)
        assert key is not None and key.name == "cli key" and key.state == "active"
        assert (key.rpm, key.max_in_flight, key.allowed_models) == (20, 3, ("pixverse-v6", "viduq3"))
        assert key.balance == Decimal("7.5") and key.expires_at is not None
        assert abs(key.expires_at - time.time() - 30 * 86400) < 60
        assert key.id in created.stderr and secret not in created.stderr

        listed = run_cli(env, "keys", "list")
        assert listed.returncode == 0, listed.stderr
        row = next(line for line in listed.stdout.splitlines() if key.id in line)
        for shown in ("cli key", "active", "pixverse-v6,viduq3", "20", "3", "7.5", secret[:10]):
            assert shown in row
        assert secret not in listed.stdout

        updated = run_cli(
            env, "keys", "update", key.id, "--rpm", "none", "--models", "all", "--expires-at", "none"
        )
        assert updated.returncode == 0, updated.stderr
        key = keys.get(database, key.id)
        assert key is not None and (key.rpm, key.allowed_models, key.expires_at) == (None, None, None)

        topped = run_cli(env, "keys", "top-up", key.id, "2.5", "--note", "bonus")
        assert topped.returncode == 0 and "balance 10" in topped.stdout, topped.stderr
        usage = run_cli(env, "keys", "usage", key.id)
        assert usage.returncode == 0, usage.stderr
        assert "bonus" in usage.stdout and "initial balance" in usage.stdout and "topup" in usage.stdout
        assert usage.stdout.strip().splitlines()[-1] == f"{key.id} balance 10, used 0"

        for args, message in (
            (["keys", "create", "--name", "x", "--rpm", "0"], "--rpm"),
            (["keys", "create", "--name", "x", "--models", "sora"], "--models"),
            (["keys", "create", "--name", "x", "--expires-in", "soon"], "--expires-in"),
            (["keys", "create", "--name", "x", "--expires-at", "2001-01-01"], "--expires-at"),
            (["keys", "create", "--name", "x", "--balance", "-3"], "--balance"),
            (["keys", "update", key.id], "KEY_ID"),
            (["keys", "update", key.id, "--rpm", "lots"], "--rpm"),
            (["keys", "top-up", key.id, "0"], "AMOUNT"),
        ):
            refused = run_cli(env, *args)
            assert refused.returncode == 2 and message in refused.stderr, (args, refused.stderr)
            assert "Traceback" not in refused.stderr
        for args in (["keys", "top-up", "key_missing", "1"], ["keys", "usage", "key_missing"]):
            missing = run_cli(env, *args)
            assert missing.returncode == 1 and "key_missing" in missing.stderr

        revoked = run_cli(env, "keys", "revoke", key.id)
        assert revoked.returncode == 0 and keys.authenticate(database, secret) is None
        assert "revoked" in next(
            line for line in run_cli(env, "keys", "list").stdout.splitlines() if key.id in line
        )
        assert run_cli(env, "keys", "revoke", key.id).returncode == 1
        assert len(keys.list_keys(database)) == 1  # no refused command created anything
    finally:
        database.dispose()
