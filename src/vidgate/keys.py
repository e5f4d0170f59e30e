"""API keys: created once and shown once, stored only as a SHA-256 hash, checked on every request.

Keys carry 256 bits of randomness, so a fast hash is enough (a slow KDF protects guessable
passwords, not random tokens) and lets authentication stay one indexed lookup.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from vidgate import db, ids

KEY_PREFIX = "vg_"


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    prefix: str
    created_at: float
    last_used_at: float | None
    revoked_at: float | None
    expires_at: float | None = None
    allowed_models: tuple[str, ...] | None = None
    rpm: int | None = None
    max_in_flight: int | None = None
    balance: Decimal | None = None
    used: Decimal = Decimal(0)

    @property
    def active(self) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > time.time())

    def may_use(self, model: str) -> bool:
        return self.allowed_models is None or model in self.allowed_models


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


LIMIT_FIELDS = ("expires_at", "allowed_models", "rpm", "max_in_flight")


def create(database: db.Database, name: str, **limits: Any) -> tuple[ApiKey, str]:
    """Create a key; returns the stored record and the secret, which is never stored or shown again.

    `limits` may set expires_at, allowed_models, rpm and max_in_flight. A new key is unlimited in
    money until it gets a top-up (`ledger.top_up`), which makes it metered.
    """
    if not name.strip():
        raise ValueError("a key needs a non-empty name")
    unknown = set(limits) - set(LIMIT_FIELDS)
    if unknown:
        raise ValueError(f"unknown key settings: {', '.join(sorted(unknown))}")
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    row: dict[str, Any] = {
        "id": ids.new_id("key"),
        "name": name.strip(),
        "key_hash": hash_key(secret),
        "prefix": secret[:10],
        "created_at": time.time(),
        **{k: v for k, v in limits.items() if v is not None},
    }
    with database.write() as conn:
        conn.execute(db.api_keys.insert().values(**row))
        stored = conn.execute(sa.select(db.api_keys).where(db.api_keys.c.id == row["id"])).one()
    return _from_row(stored), secret


def update(database: db.Database, key_id: str, **limits: Any) -> ApiKey | None:
    """Change a key's limits (None clears one); None if there is no such key."""
    unknown = set(limits) - set(LIMIT_FIELDS)
    if unknown:
        raise ValueError(f"unknown key settings: {', '.join(sorted(unknown))}")
    with database.write() as conn:
        if limits:
            conn.execute(db.api_keys.update().where(db.api_keys.c.id == key_id).values(**limits))
        row = conn.execute(sa.select(db.api_keys).where(db.api_keys.c.id == key_id)).first()
    return _from_row(row) if row is not None else None


def get(database: db.Database, key_id: str) -> ApiKey | None:
    with database.read() as conn:
        row = conn.execute(sa.select(db.api_keys).where(db.api_keys.c.id == key_id)).first()
    return _from_row(row) if row is not None else None


def authenticate(database: db.Database, secret: str) -> ApiKey | None:
    """The active key for `secret`, or None."""
    with database.read() as conn:
        row = conn.execute(sa.select(db.api_keys).where(db.api_keys.c.key_hash == hash_key(secret))).first()
    if row is None:
        return None
    key = _from_row(row)
    return key if key.active else None


def touch(database: db.Database, key_id: str, at: float) -> None:
    with database.write() as conn:
        conn.execute(db.api_keys.update().where(db.api_keys.c.id == key_id).values(last_used_at=at))


def list_keys(database: db.Database) -> list[ApiKey]:
    with database.read() as conn:
        rows = conn.execute(sa.select(db.api_keys).order_by(db.api_keys.c.created_at)).all()
    return [_from_row(r) for r in rows]


def revoke(database: db.Database, key_id: str) -> bool:
    with database.write() as conn:
        result = conn.execute(
            db.api_keys.update()
            .where(db.api_keys.c.id == key_id, db.api_keys.c.revoked_at.is_(None))
            .values(revoked_at=time.time())
        )
    return result.rowcount == 1


def _from_row(row: sa.Row[object]) -> ApiKey:
    m = row._mapping
    allowed = m["allowed_models"]
    if isinstance(allowed, str):
        allowed = json.loads(allowed)
    return ApiKey(
        id=m["id"],
        name=m["name"],
        prefix=m["prefix"],
        created_at=m["created_at"],
        last_used_at=m["last_used_at"],
        revoked_at=m["revoked_at"],
        expires_at=m["expires_at"],
        allowed_models=tuple(allowed) if allowed is not None else None,
        rpm=m["rpm"],
        max_in_flight=m["max_in_flight"],
        balance=None if m["balance"] is None else Decimal(m["balance"]),
        used=Decimal(m["used"] or 0),
    )
