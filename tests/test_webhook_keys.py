"""Webhook signing secrets of API keys: shown once by `vidgate keys create` and `POST /admin/keys`,
never by listings, replaced (and shown once) by a rotation."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import auth
from tests.e2e.conftest import run_cli
from vidgate import keys
from vidgate.api import create_app
from vidgate.config import Settings
from vidgate.db import Database

TOKEN = "admin-token-for-webhook-keys"


def test_cli_shows_the_webhook_secret_once_and_rotates_it(tmp_path: Path) -> None:
    env = {**os.environ, "VIDGATE_DATA_DIR": str(tmp_path / "data")}
    created = run_cli(env, "keys", "create", "--name", "hooks")
    assert created.returncode == 0, created.stderr
    # stdout stays the API key alone (scripts read it); the webhook secret goes to the terminal.
    [secret] = created.stdout.split()
    assert secret.startswith("vg_")
    [webhook_secret] = [w for w in created.stderr.split() if w.startswith("whsec_")]
    database = Database(f"sqlite:///{tmp_path / 'data' / 'vidgate.db'}")
    try:
        key = keys.authenticate(database, secret)
        assert key is not None and keys.webhook_secret(database, key.id) == webhook_secret

        listed = run_cli(env, "keys", "list")
        assert listed.returncode == 0 and key.id in listed.stdout
        assert "whsec_" not in listed.stdout + listed.stderr

        rotated = run_cli(env, "keys", "rotate-webhook-secret", key.id)
        assert rotated.returncode == 0, rotated.stderr
        new = rotated.stdout.strip()
        assert new.startswith("whsec_") and new != webhook_secret
        assert keys.webhook_secret(database, key.id) == new
        missing = run_cli(env, "keys", "rotate-webhook-secret", "key_missing")
        assert missing.returncode == 1 and "key_missing" in missing.stderr
    finally:
        database.dispose()


@pytest.fixture
def admin(settings: Settings, database: Database) -> Iterator[TestClient]:
    configured = settings.model_copy(update={"admin_token": TOKEN})
    with TestClient(create_app(configured, run_worker=False), headers=auth(TOKEN)) as client:
        yield client


def test_admin_api_shows_the_webhook_secret_once_and_rotates_it(
    admin: TestClient, database: Database
) -> None:
    created = admin.post("/admin/keys", json={"name": "partner"})
    assert created.status_code == 201, created.text
    key_id, webhook_secret = created.json()["id"], created.json()["webhook_secret"]
    assert webhook_secret.startswith("whsec_") and keys.webhook_secret(database, key_id) == webhook_secret
    for later in (admin.get("/admin/keys"), admin.get(f"/admin/keys/{key_id}")):
        assert later.status_code == 200 and "whsec_" not in later.text and "webhook_secret" not in later.text

    rotated = admin.post(f"/admin/keys/{key_id}/rotate-webhook-secret")
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["webhook_secret"]
    assert new.startswith("whsec_") and new != webhook_secret
    assert keys.webhook_secret(database, key_id) == new and rotated.json()["id"] == key_id
    missing = admin.post("/admin/keys/key_missing/rotate-webhook-secret")
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "key_id"
    assert admin.post(f"/admin/keys/{key_id}/rotate-webhook-secret", headers=auth("wrong")).status_code == 401
