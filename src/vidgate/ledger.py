"""The ledger: every movement of money, written in the same transaction as the state change.

For a key with a balance, `balance` = top-ups - captures - open holds, always, and never below
zero (a CHECK constraint refuses it). Per task there is at most one row of each kind (a UNIQUE
constraint), so a re-run of any step can neither charge nor refund twice:

- `hold` when the task is accepted (the quoted cost leaves the balance; 402 if it cannot);
- `capture` when it completes (what it finally cost; any difference to the hold returns);
- `release` when it fails, is cancelled or times out (the hold returns in full).

Keys without a balance (unlimited) get the same rows, so usage is reported for every key.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from vidgate import db
from vidgate.errors import PaymentRequired

L = db.ledger
K = db.api_keys
ZERO = Decimal(0)


_INSERT = L.insert()  # built once: its compiled form is cached (see tasks._INSERT_EVENT)


def _row(
    conn: Connection,
    *,
    key_id: str,
    task_id: str | None,
    kind: str,
    amount: Decimal,
    balance_after: Decimal | None,
    note: str | None = None,
) -> None:
    conn.execute(
        _INSERT,
        {
            "key_id": key_id,
            "task_id": task_id,
            "kind": kind,
            "amount": amount,
            "balance_after": balance_after,
            "created_at": time.time(),
            "note": note,
        },
    )


def _exact(amount: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """Money arithmetic rounded to the column's 6 decimals. SQLite computes it in binary floating
    point (1.2 - 0.5 - 0.5 = 0.19999999999999996); rounding every result keeps the stored value the
    closest double to an exact amount, so comparisons (`balance >= cost`) and raw reads stay exact.
    PostgreSQL's NUMERIC is exact already."""
    return sa.func.round(amount, 6)


def _balance(conn: Connection, key_id: str) -> Decimal | None:
    value = conn.execute(sa.select(K.c.balance).where(K.c.id == key_id)).scalar()
    return None if value is None else Decimal(value)


def hold(conn: Connection, *, key_id: str, task_id: str, amount: Decimal) -> None:
    """Reserve `amount` for a new task, or raise PaymentRequired and change nothing.

    The hold row's `balance_after` is NULL exactly when nothing left the balance (an unlimited key,
    or a free task): only a hold that took money gives money back, even if the key has become
    metered by a top-up in between.
    """
    deducted: Decimal | None = None
    if amount > ZERO:
        # One conditional UPDATE: atomic on every dialect, so racing submits cannot overdraw.
        deducted = conn.execute(
            K.update()
            .where(K.c.id == key_id, K.c.balance.is_not(None), K.c.balance >= amount)
            .values(balance=_exact(K.c.balance - amount))
            .returning(K.c.balance)
        ).scalar()
        if deducted is None and _balance(conn, key_id) is not None:
            raise PaymentRequired()
    _row(conn, key_id=key_id, task_id=task_id, kind="hold", amount=amount, balance_after=deducted)


def _held(conn: Connection, task_id: str) -> tuple[str, Decimal, bool, set[str]] | None:
    """(key, amount held, whether it left the balance, kinds of rows so far) for a task."""
    rows = conn.execute(
        sa.select(L.c.key_id, L.c.kind, L.c.amount, L.c.balance_after).where(L.c.task_id == task_id)
    ).all()
    holds = [r for r in rows if r.kind == "hold"]
    if not holds:
        return None
    first = holds[0]
    return first.key_id, Decimal(first.amount), first.balance_after is not None, {r.kind for r in rows}


def capture(conn: Connection, *, task_id: str, amount: Decimal) -> Decimal:
    """Charge a completed task `amount` (at most what was held); returns what was charged."""
    held = _held(conn, task_id)
    if held is None:
        return ZERO
    key_id, reserved, deducted, kinds = held
    if "capture" in kinds or "release" in kinds:
        return ZERO
    charged = min(amount, reserved)
    refund = reserved - charged
    if refund > ZERO and deducted:
        conn.execute(
            K.update()
            .where(K.c.id == key_id, K.c.balance.is_not(None))
            .values(balance=_exact(K.c.balance + refund))
        )
    conn.execute(K.update().where(K.c.id == key_id).values(used=_exact(K.c.used + charged)))
    balance = _balance(conn, key_id)
    _row(conn, key_id=key_id, task_id=task_id, kind="capture", amount=charged, balance_after=balance)
    if refund > ZERO and deducted:
        _row(
            conn,
            key_id=key_id,
            task_id=task_id,
            kind="release",
            amount=refund,
            balance_after=balance,
            note="difference to the quote",
        )
    return charged


def release(conn: Connection, *, task_id: str, note: str | None = None) -> None:
    """Return a failed or cancelled task's hold in full (once)."""
    held = _held(conn, task_id)
    if held is None:
        return
    key_id, reserved, deducted, kinds = held
    if "capture" in kinds or "release" in kinds:
        return
    if reserved > ZERO and deducted:
        conn.execute(
            K.update()
            .where(K.c.id == key_id, K.c.balance.is_not(None))
            .values(balance=_exact(K.c.balance + reserved))
        )
    _row(
        conn,
        key_id=key_id,
        task_id=task_id,
        kind="release",
        amount=reserved,
        balance_after=_balance(conn, key_id),
        note=note,
    )


def top_up(database: db.Database, key_id: str, amount: Decimal, *, note: str | None = None) -> Decimal:
    """Add money to a key (a key without a balance becomes a metered one); returns the balance."""
    with database.write() as conn:
        return credit(conn, key_id, amount, note=note)


def credit(conn: Connection, key_id: str, amount: Decimal, *, note: str | None = None) -> Decimal:
    """`top_up` inside the caller's transaction (e.g. a key created with a balance)."""
    if amount <= ZERO:
        raise ValueError("a top-up must be positive")
    result = conn.execute(
        K.update().where(K.c.id == key_id).values(balance=_exact(sa.func.coalesce(K.c.balance, 0) + amount))
    )
    if result.rowcount != 1:
        raise KeyError(key_id)
    balance = _balance(conn, key_id)
    _row(conn, key_id=key_id, task_id=None, kind="topup", amount=amount, balance_after=balance, note=note)
    assert balance is not None
    return balance


def entries(database: db.Database, key_id: str, *, limit: int = 100, before: int | None = None) -> list[Any]:
    """A key's ledger rows, newest first; `before` (a row id) pages back."""
    query = sa.select(L).where(L.c.key_id == key_id)
    if before is not None:
        query = query.where(L.c.id < before)
    with database.read() as conn:
        return list(conn.execute(query.order_by(L.c.id.desc()).limit(limit)).all())


def totals(database: db.Database, key_id: str) -> tuple[Decimal | None, Decimal]:
    """(balance or None when unlimited, used)."""
    with database.read() as conn:
        row = conn.execute(sa.select(K.c.balance, K.c.used).where(K.c.id == key_id)).one()
    return (None if row.balance is None else Decimal(row.balance)), Decimal(row.used)
