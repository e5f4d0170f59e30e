"""Per-key request rate limits (requests per minute), one budget shared by every API process.

The algorithm is GCRA (the generic cell rate algorithm: a token bucket kept as one number). A key
with `rpm` = n may send n requests at once, then one every 60/n seconds; over any longer stretch
it gets n a minute, with no doubling at window edges. Its whole state is one time per key, the
theoretical arrival time (TAT) of its next request, in integer microseconds:

    tat = max(stored tat, now) + 60 s / n
    allowed when tat - now <= 60 s (then tat is stored); refused otherwise (nothing is stored,
    so a client retrying too early does not push its own budget further away)

Two backends run that one update atomically, so API processes on any number of machines share
one budget per key:
- `DatabaseLimiter` (the default): one UPSERT on `rate_limits`, whose ON CONFLICT DO UPDATE has a
  WHERE and returns the new TAT only when the request is allowed (SQLite >= 3.35 and PostgreSQL);
- `RedisLimiter` (`VIDGATE_REDIS_URL`): one Lua script per request on `<prefix>rl:<key id>`, a
  key that expires once its budget is full again. When Redis cannot be reached, requests pass
  (fail open, logged): money is guarded by the ledger, not by this limiter.

Headers (`Decision.headers`): `X-RateLimit-Limit` (rpm), `X-RateLimit-Remaining` (requests that
may be sent at once now), `X-RateLimit-Reset` (seconds until the whole budget is back) and, on a
429, `Retry-After` (seconds until the next request will be allowed).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from vidgate import db

if TYPE_CHECKING:
    from vidgate.config import Settings

log = logging.getLogger("vidgate.ratelimit")

#: The window `rpm` is counted over, in microseconds.
PERIOD_US = 60_000_000
_US = 1_000_000


@dataclass(frozen=True)
class Decision:
    """The outcome of one request against a key's budget."""

    allowed: bool
    limit: int
    #: Requests that may still be sent at once.
    remaining: int
    #: Seconds until the full budget is available again.
    reset: int
    #: Seconds until the next request is allowed (0 when this one was).
    retry_after: int

    def headers(self) -> dict[str, str]:
        out = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
        }
        if not self.allowed:
            out["Retry-After"] = str(self.retry_after)
        return out

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        return [(k.lower().encode(), v.encode()) for k, v in self.headers().items()]


def interval_us(rpm: int) -> int:
    """Microseconds one request uses of the budget (rounded down: never stricter than `rpm`)."""
    if not 1 <= rpm <= PERIOD_US:
        raise ValueError(f"rpm must be between 1 and {PERIOD_US}")
    return PERIOD_US // rpm


def decide(rpm: int, now_us: int, tat_us: int, allowed: bool) -> Decision:
    """The decision for a request at `now_us`, given the TAT stored after it (allowed) or the TAT
    that refused it."""
    step = interval_us(rpm)
    backlog = max(0, tat_us - now_us)
    if allowed:
        remaining = min(rpm, (PERIOD_US - backlog) // step)
        return Decision(True, rpm, remaining, math.ceil(backlog / _US), 0)
    wait = backlog + step - PERIOD_US
    return Decision(False, rpm, 0, math.ceil(backlog / _US), max(1, math.ceil(wait / _US)))


def now_us() -> int:
    return int(time.time() * _US)


class Limiter(Protocol):
    """Counts one request of `bucket` (a key id) against `rpm` and says whether it may pass."""

    backend: str

    def hit(self, bucket: str, rpm: int, *, now: int | None = None) -> Decision | None:
        """The decision, or None when the limit could not be checked (the request passes)."""
        ...

    def close(self) -> None: ...


R = db.rate_limits


class DatabaseLimiter:
    """GCRA state in the `rate_limits` table: one atomic UPSERT per request."""

    backend = "database"

    def __init__(self, database: db.Database) -> None:
        self.database = database
        self._insert: Any = (
            postgresql.insert if database.engine.dialect.name == "postgresql" else sqlite.insert
        )

    def hit(self, bucket: str, rpm: int, *, now: int | None = None) -> Decision:
        now = now_us() if now is None else now
        step = interval_us(rpm)
        at = sa.literal(now, sa.BigInteger)
        new_tat = sa.case((R.c.tat > at, R.c.tat), else_=at) + sa.literal(step, sa.BigInteger)
        statement = (
            self._insert(R)
            .values(bucket=bucket, tat=now + step)
            .on_conflict_do_update(
                index_elements=[R.c.bucket],
                set_={"tat": new_tat},
                where=new_tat - at <= sa.literal(PERIOD_US, sa.BigInteger),
            )
            .returning(R.c.tat)
        )
        with self.database.write() as conn:
            stored = conn.execute(statement).scalar()
            if stored is not None:
                return decide(rpm, now, int(stored), True)
            current = conn.execute(sa.select(R.c.tat).where(R.c.bucket == bucket)).scalar_one()
        return decide(rpm, now, int(current), False)

    def close(self) -> None:
        return None


#: KEYS[1] the bucket; ARGV now, interval and period in microseconds. Returns {allowed, tat}.
#: Numbers are formatted with %.0f: Lua 5.1's tostring would print 1.7e+15 and lose the digits.
_GCRA_LUA = """
local now = tonumber(ARGV[1])
local step = tonumber(ARGV[2])
local period = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new = tat + step
if new - now > period then
  return {0, string.format('%.0f', tat)}
end
redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX', math.ceil((new - now) / 1000) + 1)
return {1, string.format('%.0f', new)}
"""


class RedisLimiter:
    """GCRA state in Redis: one Lua script per request (atomic on the Redis server)."""

    backend = "redis"

    def __init__(self, url: str, prefix: str = "vidgate:") -> None:
        import redis

        self.prefix = prefix
        self.client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._script = self.client.register_script(_GCRA_LUA)
        self._errors: tuple[type[Exception], ...] = (redis.RedisError, OSError)
        self._logged_at = 0.0

    def key(self, bucket: str) -> str:
        return f"{self.prefix}rl:{bucket}"

    def hit(self, bucket: str, rpm: int, *, now: int | None = None) -> Decision | None:
        now = now_us() if now is None else now
        step = interval_us(rpm)
        try:
            allowed, tat = self._script(keys=[self.key(bucket)], args=[now, step, PERIOD_US])
        except self._errors as exc:
            if time.monotonic() - self._logged_at > 60:
                self._logged_at = time.monotonic()
                log.error("rate limits not enforced: Redis is unavailable (%s)", exc)
            return None
        return decide(rpm, now, int(tat), bool(allowed))

    def close(self) -> None:
        self.client.close()


def build(settings: Settings, database: db.Database) -> Limiter:
    """Redis when `VIDGATE_REDIS_URL` is set, else the database."""
    if settings.redis_url:
        return RedisLimiter(settings.redis_url, settings.redis_prefix)
    return DatabaseLimiter(database)
