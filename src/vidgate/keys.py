"""API keys: created once and shown once, stored only as a SHA-256 hash, checked on every request.

Keys carry 256 bits of randomness, so a fast hash is enough (a slow KDF protects guessable
passwords, not random tokens) and lets authentication stay one indexed lookup.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

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

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create(database: db.Database, name: str) -> tuple[ApiKey, str]:
    """Create a key; returns the stored record and the secret, which is never stored or shown again."""
    if not name.strip():
        raise ValueError("a key needs a non-empty name")
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    time_created = time.time()
    row: dict[str, str | float] = {
        "id": ids.new_id("key"),
        "name": name.strip(),
        "key_hash": hash_key(secret),
        "prefix": secret[:10],
        "created_at": time_created,
    }
    with database.write() as conn:
        conn.execute(db.api_keys.insert().values(**row))
    return ApiKey(str(row["id"]), name.strip(), secret[:10], time_created, None, None), secret


def authenticate(database: db.Database, secret: str) -> ApiKey | None:
    """The active key for `secret`, or None."""
    with database.read() as conn:
        row = conn.execute(sa.select(db.api_keys).where(db.api_keys.c.key_hash == hash_key(secret))).first()
    if row is None or row.revoked_at is not None:
        return None
    return _from_row(row)


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
    return ApiKey(m["id"], m["name"], m["prefix"], m["created_at"], m["last_used_at"], m["revoked_at"])
