"""The model beside the database for the task-lifecycle state machine, and the invariants read
back from the database after every step (`test_lifecycle_machine.py` runs them; no tests here)."""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple

import sqlalchemy as sa

from vidgate import db, leases
from vidgate.db import Database
from vidgate.status import TERMINAL, TRANSITIONS, Phase, Status

ZERO = Decimal(0)
START = 1_900_000_000.0


class Clock:
    """What `time.time()` answers inside `vidgate.tasks` and `vidgate.leases` while the machine runs."""

    def __init__(self) -> None:
        self.now = START

    def time(self) -> float:
        return self.now


@dataclass
class KeyModel:
    id: str
    initial: Decimal | None
    cap: int | None
    balance: Decimal | None
    used: Decimal = ZERO


@dataclass
class TaskModel:
    """What the row must hold; compared column by column after every step."""

    id: str
    key: KeyModel
    hold: Decimal
    took: bool  #: whether the hold left the balance (metered key, cost above zero)
    status: Status = Status.PENDING
    phase: Phase = Phase.QUEUED
    progress: int = 0
    owner: str | None = None
    token: int = 0
    lease_until: float | None = None
    next_run_at: float | None = None
    attempts: int = 0
    cancel_requested: bool = False
    upstream_id: str | None = None
    cost: Decimal = ZERO

    def close(self, status: Status, charged: Decimal = ZERO) -> None:
        """Finished: the lease and the schedule go, the hold is captured or given back."""
        self.status, self.phase, self.cost = status, Phase.DONE, charged
        self.owner = self.lease_until = self.next_run_at = None
        if status is Status.COMPLETED:
            self.progress = 100
        self.key.used += charged
        if self.took and self.key.balance is not None:
            self.key.balance += self.hold - charged


@dataclass
class Worker:
    name: str
    skew: float  #: its clock's offset from the true time (used where it passes `now`)
    lease_seconds: float
    #: What it believes it holds, oldest first; some moved on (a takeover, even by itself after
    #: its lease ran out; a cancel; its own release or finish). It forgets one on LeaseLost.
    leases: list[leases.Lease] = field(default_factory=list)


class Rows(NamedTuple):
    tasks: dict[str, Any]
    events: list[Any]
    ledger: list[Any]
    keys: list[Any]


def read(database: Database, key_ids: list[str]) -> Rows:
    """These keys' task rows, events, ledger rows and key rows, straight from the database."""
    T, E, L, K = db.tasks, db.task_events, db.ledger, db.api_keys
    with database.read() as conn:
        rows = {r.id: r for r in conn.execute(sa.select(T).where(T.c.key_id.in_(key_ids)))}
        events = conn.execute(
            sa.select(E).join(T, T.c.id == E.c.task_id).where(T.c.key_id.in_(key_ids)).order_by(E.c.id)
        ).all()
        money = conn.execute(sa.select(L).where(L.c.key_id.in_(key_ids)).order_by(L.c.id)).all()
        key_rows = conn.execute(sa.select(K).where(K.c.id.in_(key_ids)).order_by(K.c.id)).all()
    return Rows(rows, list(events), list(money), list(key_rows))


def snapshot(database: Database, key_ids: list[str]) -> Any:
    """Everything these keys own, comparable: what a refused or fenced-off call must not change."""
    rows = read(database, key_ids)
    return sorted(tuple(r) for r in rows.tasks.values()), [
        tuple(r) for r in (*rows.events, *rows.ledger, *rows.keys)
    ]


# --- invariants -------------------------------------------------------------------------------------


def check_row(row: Any, t: TaskModel) -> None:
    seen = (
        row.status,
        row.phase,
        row.progress,
        row.lease_owner,
        row.lease_token,
        row.lease_until,
        row.next_run_at,
        row.attempts,
        bool(row.cancel_requested),
        row.upstream_id,
        Decimal(str(row.cost)),
    )
    expected = (
        t.status.value,
        t.phase.value,
        t.progress,
        t.owner,
        t.token,
        t.lease_until,
        t.next_run_at,
        t.attempts,
        t.cancel_requested,
        t.upstream_id,
        t.cost,
    )
    assert seen == expected, f"{t.id}: database {seen} != model {expected}"
    if row.lease_owner is not None:
        assert row.status == Status.PROCESSING and row.lease_until is not None


def check_history(row: Any, history: list[Any]) -> None:
    """task_events: a continuous chain of allowed transitions, ending at the row's status."""
    steps = [(e.from_status, e.to_status, e.detail) for e in history]
    assert steps and steps[0][:2] == (None, Status.PENDING), steps
    for (_, before, _), (source, target, detail) in itertools.pairwise(steps):
        assert Status(before) not in TERMINAL, f"an event after {before}: {steps}"
        assert source == before, f"the history skips {before} -> {source}: {steps}"
        if source == target:  # a takeover of a dead worker's lease is recorded, not a change
            assert source == Status.PROCESSING and "took_over_from" in (detail or {}), steps
        else:
            assert Status(target) in TRANSITIONS[Status(source)], steps
    assert steps[-1][1] == row.status, f"the history ends at {steps[-1][1]}, the task is {row.status}"


def check_money(row: Any, t: TaskModel, entries: list[Any]) -> None:
    """One hold per task; closed exactly once when it finishes (captured or given back)."""
    kinds = [e.kind for e in entries]
    assert len(kinds) == len(set(kinds)), f"two ledger rows of one kind: {kinds}"
    amounts = {e.kind: Decimal(str(e.amount)) for e in entries}
    hold = next(e for e in entries if e.kind == "hold")
    assert amounts["hold"] == t.hold and (hold.balance_after is not None) == t.took
    status = Status(row.status)
    if status not in TERMINAL:
        assert kinds == ["hold"], f"{status} task with {kinds}"
    elif status is Status.COMPLETED:
        charged = amounts["capture"]
        assert charged == Decimal(str(row.cost)) <= t.hold
        refund = t.hold - charged
        assert amounts.get("release") == (refund if t.took and refund > ZERO else None), amounts
    else:
        assert "capture" not in amounts and amounts["release"] == t.hold, amounts
        assert Decimal(str(row.cost)) == ZERO


def check_balance(key: KeyModel, key_row: Any, entries: list[Any]) -> None:
    """balance = initial - captures - open holds (of holds that took money), never below zero."""
    by_task: dict[str, dict[str, Any]] = defaultdict(dict)
    for e in entries:
        if e.task_id is not None:
            by_task[e.task_id][e.kind] = e
    captured = sum((Decimal(str(k["capture"].amount)) for k in by_task.values() if "capture" in k), ZERO)
    assert Decimal(str(key_row.used)) == captured == key.used
    if key.initial is None:
        assert key_row.balance is None
        return
    took = [k for k in by_task.values() if k["hold"].balance_after is not None]
    charged = sum((Decimal(str(k["capture"].amount)) for k in took if "capture" in k), ZERO)
    open_holds = sum(
        (Decimal(str(k["hold"].amount)) for k in took if "capture" not in k and "release" not in k), ZERO
    )
    balance = Decimal(str(key_row.balance))
    assert balance == key.initial - charged - open_holds == key.balance
    assert balance >= ZERO
