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

from vidgate import db, ids, ledger, webhooks

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

    @property
    def state(self) -> str:
        """active, revoked or expired."""
        if self.revoked_at is not None:
            return "revoked"
        return "active" if self.active else "expired"


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


LIMIT_FIELDS = ("expires_at", "allowed_models", "rpm", "max_in_flight")


def create(
    database: db.Database, name: str, *, balance: Decimal | str | None = None, **limits: Any
) -> tuple[ApiKey, str]:
    """Create a key; returns the stored record and the secret, which is never stored or shown again.

    `limits` may set expires_at, allowed_models, rpm and max_in_flight. A new key is unlimited in
    money until it gets a top-up (`ledger.top_up`), which makes it metered; `balance` is such a
    top-up, written in the transaction that creates the key.
    """
    if not name.strip() or len(name.strip()) > 200:
        raise InvalidSetting("name", "must be 1 to 200 characters")
    limits = check_limits(limits)
    amount = None if balance is None else parse_amount(balance, "balance")
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    row: dict[str, Any] = {
        "id": ids.new_id("key"),
        "name": name.strip(),
        "key_hash": hash_key(secret),
        "prefix": secret[:10],
        "created_at": time.time(),
        "webhook_secret": webhooks.new_secret(),
        **{k: v for k, v in limits.items() if v is not None},
    }
    with database.write() as conn:
        conn.execute(db.api_keys.insert().values(**row))
        if amount is not None:
            ledger.credit(conn, row["id"], amount, note="initial balance")
        stored = conn.execute(sa.select(db.api_keys).where(db.api_keys.c.id == row["id"])).one()
    return _from_row(stored), secret


def webhook_secret(database: db.Database, key_id: str) -> str | None:
    """The key's webhook signing secret (for showing once, right after `create`); None: no such key."""
    with database.read() as conn:
        value = conn.execute(
            sa.select(db.api_keys.c.webhook_secret).where(db.api_keys.c.id == key_id)
        ).scalar()
    return None if value is None else str(value)


def rotate_webhook_secret(database: db.Database, key_id: str) -> str | None:
    """Replace the key's webhook signing secret; answers the new one (None: no such key). Attempts
    from then on are signed with it, retries of older events included."""
    secret = webhooks.new_secret()
    with database.write() as conn:
        result = conn.execute(
            db.api_keys.update().where(db.api_keys.c.id == key_id).values(webhook_secret=secret)
        )
    return secret if result.rowcount == 1 else None


def update(database: db.Database, key_id: str, **limits: Any) -> ApiKey | None:
    """Change a key's limits (None clears one); None if there is no such key."""
    limits = check_limits(limits)
    with database.write() as conn:
        if limits:
            conn.execute(db.api_keys.update().where(db.api_keys.c.id == key_id).values(**limits))
        row = conn.execute(sa.select(db.api_keys).where(db.api_keys.c.id == key_id)).first()
    return _from_row(row) if row is not None else None


def get(database: db.Database, key_id: str) -> ApiKey | None:
    with database.read() as conn:
        row = conn.execute(sa.select(db.api_keys).where(db.api_keys.c.id == key_id)).first()
    return _from_row(row) if row is not None else None


_BY_HASH = sa.select(db.api_keys).where(db.api_keys.c.key_hash == sa.bindparam("key_hash"))


def authenticate(database: db.Database, secret: str) -> ApiKey | None:
    """The active key for `secret`, or None (one indexed read: this runs on every request)."""
    row = database.read_one(_BY_HASH, {"key_hash": hash_key(secret)})
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


def _from_row(row: Any) -> ApiKey:
    m = row._mapping if hasattr(row, "_mapping") else row
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
        balance=None if m["balance"] is None else Decimal(str(m["balance"])),
        used=Decimal(str(m["used"] or 0)),
    )


# --- settings: checks shared by every writer, and parsing of what people type ------------------------


class InvalidSetting(ValueError):
    """A key setting that cannot be stored; `param` names it (the admin API's 400s say it)."""

    def __init__(self, param: str, detail: str) -> None:
        super().__init__(f"{param} {detail}")
        self.param = param
        self.detail = detail


MAX_RPM = 1_000_000
MAX_IN_FLIGHT = 100_000
#: Largest single top-up: far from the Numeric(18, 6) ceiling however many are added.
MAX_AMOUNT = Decimal(1_000_000_000)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
#: Expiry times are kept between the epoch and the year 9999 (what ISO 8601 can write).
_LATEST = 253_402_300_799.0


def check_limits(limits: dict[str, Any]) -> dict[str, Any]:
    """The limits as stored (models deduplicated), or InvalidSetting naming the first bad one."""
    from vidgate import catalog

    unknown = set(limits) - set(LIMIT_FIELDS)
    if unknown:
        name = sorted(unknown)[0]
        raise InvalidSetting(name, f"is not a key setting (settings: {', '.join(LIMIT_FIELDS)})")
    out = dict(limits)
    for name, top in (("rpm", MAX_RPM), ("max_in_flight", MAX_IN_FLIGHT)):
        value = out.get(name)
        if value is not None and (type(value) is not int or not 1 <= value <= top):
            raise InvalidSetting(name, f"must be a whole number from 1 to {top}")
    models = out.get("allowed_models")
    if models is not None:
        if not isinstance(models, list | tuple) or not all(isinstance(m, str) for m in models):
            raise InvalidSetting("allowed_models", "must be a list of model ids")
        unknown_models = [m for m in models if m not in catalog.MODELS]
        if not models or unknown_models:
            raise InvalidSetting(
                "allowed_models",
                f"must name models this gateway serves ({', '.join(catalog.MODELS)})"
                + (f"; unknown: {', '.join(unknown_models)}" if unknown_models else ""),
            )
        out["allowed_models"] = list(dict.fromkeys(models))
    expires = out.get("expires_at")
    if expires is not None and (
        isinstance(expires, bool) or not isinstance(expires, int | float) or not 0 <= expires <= _LATEST
    ):
        raise InvalidSetting("expires_at", "must be a time in UNIX seconds before the year 10000")
    return out


def parse_duration(text: str | int | float, param: str = "expires_in") -> float:
    """Seconds in `30d`, `12h`, `90m`, `45s`, `2w`, or a plain number of seconds; more than 0."""
    raw = str(text).strip().lower()
    number, unit = (raw[:-1], raw[-1]) if raw[-1:] in _UNITS else (raw, "s")
    try:
        seconds = float(number) * _UNITS[unit]
    except ValueError:
        seconds = -1.0
    if isinstance(text, bool) or not 0 < seconds <= _LATEST:
        raise InvalidSetting(param, f"must be a duration such as 30d, 12h, 90m or 3600 (got {text!r})")
    return seconds


def parse_time(text: str | int | float, param: str = "expires_at") -> float:
    """UNIX seconds from a number or an ISO 8601 date or date-time (UTC unless it says otherwise)."""
    import datetime

    at = float("nan")
    if isinstance(text, int | float) and not isinstance(text, bool):
        at = float(text)
    elif isinstance(text, str):
        try:
            at = float(text)
        except ValueError:
            try:
                when = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
                at = (when if when.tzinfo else when.replace(tzinfo=datetime.UTC)).timestamp()
            except (ValueError, OverflowError):
                pass
    if not 0 <= at <= _LATEST:  # also false for NaN
        raise InvalidSetting(
            param, f"must be UNIX seconds or an ISO 8601 time such as 2030-01-31T12:00:00Z (got {text!r})"
        )
    return at


def expiry(
    *, expires_at: str | int | float | None = None, expires_in: str | int | float | None = None
) -> float | None:
    """The expiry given either as a time or as a duration from now; it must lie in the future."""
    if expires_at is not None and expires_in is not None:
        raise InvalidSetting("expires_in", "cannot be given together with expires_at")
    if expires_in is not None:
        return time.time() + parse_duration(expires_in)
    if expires_at is None:
        return None
    at = parse_time(expires_at)
    if at <= time.time():
        raise InvalidSetting("expires_at", "must be in the future (revoke a key to stop it now)")
    return at


def parse_amount(value: Any, param: str = "amount") -> Decimal:
    """Money from a number or a decimal string: more than 0, at most 6 decimals, at most 1e9."""
    from decimal import InvalidOperation

    try:
        amount = Decimal(str(value).strip()) if not isinstance(value, bool) else Decimal("NaN")
    except InvalidOperation:
        amount = Decimal("NaN")
    if not amount.is_finite() or not 0 < amount <= MAX_AMOUNT:
        raise InvalidSetting(param, f"must be a number above 0 and at most {MAX_AMOUNT} (got {value!r})")
    if amount != amount.quantize(Decimal("0.000001")):
        raise InvalidSetting(param, f"must have at most 6 decimal places (got {value!r})")
    return amount
