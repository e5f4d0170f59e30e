"""Money safety: the ledger identity under random histories, racing submits, and what clients see.

The identity, for a metered key, after every step: balance = top-ups - captures - open holds, never
below zero, and `used` = the sum of captures. Holds taken while a key was still unlimited took
nothing from any balance, so they give nothing back either (`ledger.hold`); the audit counts only
holds that took money. Every step goes through the real code paths: `tasks.create` (the hold),
`leases.claim` + `leases.complete` / `leases.fail` / `leases.finish_cancel` (capture or release in the
state change's transaction), `tasks.request_cancel` and `ledger.top_up`.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vidgate import catalog, db, keys, leases, ledger, tasks
from vidgate.api import create_app
from vidgate.config import Settings
from vidgate.db import Database
from vidgate.errors import PaymentRequired, RateLimited
from vidgate.status import TERMINAL, Status

from .conftest import auth
from .test_api import assert_error, run_to, submit

BODY = {"model": "pixverse-v6", "prompt": "waves"}
REQUEST = catalog.parse(BODY)
RESULT = {"video": "results/x/video.mp4", "thumbnail": "results/x/thumbnail.jpg"}
ZERO = Decimal(0)
_providers = itertools.count()


def create(database: Database, key_id: str, cost: Decimal, *, provider: str = "local", **kw: Any) -> Any:
    row, _ = tasks.create(
        database,
        key_id=key_id,
        request=REQUEST,
        body=BODY,
        provider=provider,
        estimated_time=10,
        cost=cost,
        **kw,
    )
    return row


# --- the audit: the ledger identity, from the rows alone -------------------------------------------


def audit(database: Database, key_id: str) -> tuple[Decimal | None, Decimal]:
    """Check every money rule for a key from its rows; returns (balance, used)."""
    L, T = db.ledger, db.tasks
    with database.read() as conn:
        rows = conn.execute(
            sa.select(L.c.task_id, L.c.kind, L.c.amount, L.c.balance_after).where(L.c.key_id == key_id)
        ).all()
        key = conn.execute(sa.select(db.api_keys).where(db.api_keys.c.id == key_id)).one()
        task_rows = conn.execute(sa.select(T.c.id, T.c.status, T.c.cost).where(T.c.key_id == key_id)).all()
    money = {(r.task_id, r.kind): Decimal(str(r.amount)) for r in rows if r.task_id is not None}
    assert len(money) == len([r for r in rows if r.task_id is not None]), "one row per task and kind"
    deducted = {r.task_id for r in rows if r.kind == "hold" and r.balance_after is not None}
    topups = sum((Decimal(str(r.amount)) for r in rows if r.kind == "topup"), ZERO)
    captures = sum((a for (t, kind), a in money.items() if kind == "capture"), ZERO)
    charged = sum((a for (t, kind), a in money.items() if kind == "capture" and t in deducted), ZERO)
    open_holds = ZERO
    for task in task_rows:
        hold = money[(task.id, "hold")]
        closed = (task.id, "capture") in money or (task.id, "release") in money
        assert closed == (Status(task.status) in TERMINAL), f"{task.status} task with hold closed={closed}"
        if not closed and task.id in deducted:
            open_holds += hold
        if task.status == Status.COMPLETED:
            assert money[(task.id, "capture")] == Decimal(str(task.cost)) <= hold
        elif Status(task.status) in TERMINAL:
            assert (task.id, "capture") not in money and money[(task.id, "release")] == hold
            assert Decimal(str(task.cost)) == ZERO
    balance = None if key.balance is None else Decimal(str(key.balance))
    used = Decimal(str(key.used))
    assert used == captures
    if balance is None:
        assert topups == ZERO
    else:
        assert balance >= ZERO
        assert balance == topups - charged - open_holds
    return balance, used


# --- random histories ------------------------------------------------------------------------------

AMOUNTS = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("6"), places=2)
#: Submits and claims come up more often than the rest, so that histories have tasks to act on.
KINDS = ["submit"] * 4 + ["claim"] * 2 + ["complete"] * 2 + ["fail", "cancel", "top_up"]
#: (what, an amount: a cost, a charge or a top-up, which task or how many)
STEPS = st.tuples(st.sampled_from(KINDS), st.one_of(st.just(ZERO), AMOUNTS), st.integers(0, 50))
HISTORIES = st.lists(STEPS, min_size=5, max_size=40)


@dataclass
class Model:
    """What the balance must be, computed in Python beside the database."""

    balance: Decimal | None
    used: Decimal = ZERO
    #: task id -> (hold, whether it took money)
    holds: dict[str, tuple[Decimal, bool]] = field(default_factory=dict)
    leases: dict[str, leases.Lease] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)

    def give_back(self, task_id: str, amount: Decimal) -> None:
        _, took = self.holds.pop(task_id)
        if took and self.balance is not None:
            self.balance += amount


def run_history(database: Database, start: Decimal | None, steps: list[Any], *, pending_cancel: bool) -> None:
    record, secret = keys.create(database, "history", balance=start)
    key_id = record.id
    provider = f"prop{next(_providers)}"  # claims see this history's tasks only
    model = Model(balance=start)
    for step in steps:
        kind = step[0]
        if kind == "submit":
            cost = step[1]
            short = model.balance is not None and model.balance < cost
            try:
                row = create(database, key_id, cost, provider=provider)
            except PaymentRequired:
                assert short, "refused although the balance covers the cost"
            else:
                assert not short, "accepted although the balance does not cover the cost"
                took = model.balance is not None and cost > ZERO
                if took:
                    model.balance -= cost  # type: ignore[operator]
                model.holds[row.id] = (cost, took)
                model.pending.append(row.id)
        elif kind == "claim":
            claimed = leases.claim(
                database,
                owner="prop",
                providers=frozenset({provider}),
                limit=1 + step[2] % 3,
                lease_seconds=60,
            )
            for row in claimed:
                model.leases[row.id] = leases.lease_of(row)
                model.pending.remove(row.id)
        elif kind in ("complete", "fail") and model.leases:
            task_id = sorted(model.leases)[step[2] % len(model.leases)]
            lease = model.leases.pop(task_id)
            hold = model.holds[task_id][0]
            if kind == "complete":
                leases.complete(database, lease, RESULT, ttl_seconds=60, cost=step[1])
                charged = min(step[1], hold)
                model.used += charged
                model.give_back(task_id, hold - charged)
            else:
                leases.fail(database, lease, {"code": "render_failed", "type": "server_error", "params": {}})
                model.give_back(task_id, hold)
        elif kind == "cancel":
            # A held task: the owner asks, its worker stops it. A pending one is cancelled at once.
            choices = sorted(model.leases) + (model.pending if pending_cancel else [])
            if not choices:
                continue
            task_id = choices[step[2] % len(choices)]
            tasks.request_cancel(database, task_id, key_id)
            if task_id in model.leases:
                leases.finish_cancel(database, model.leases.pop(task_id))
            else:
                model.pending.remove(task_id)
            model.give_back(task_id, model.holds[task_id][0])
        elif kind == "top_up" and step[1] > ZERO:
            balance = ledger.top_up(database, key_id, step[1])
            model.balance = (model.balance or ZERO) + step[1]
            assert balance == model.balance
        assert audit(database, key_id) == (model.balance, model.used), step
        # What /v1/balance shows comes from the authentication read (a raw driver read on SQLite).
        seen = keys.authenticate(database, secret)
        assert seen is not None and (seen.balance, seen.used) == (model.balance, model.used), step


HISTORY = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@HISTORY
@given(start=st.one_of(st.none(), AMOUNTS), steps=HISTORIES)
def test_ledger_identity_holds_after_every_step(
    any_database: Database, start: Decimal | None, steps: list[Any]
) -> None:
    run_history(any_database, start, steps, pending_cancel=False)


@settings(HISTORY)
@given(start=st.one_of(st.none(), AMOUNTS), steps=HISTORIES)
def test_ledger_identity_with_pending_cancellations(
    database: Database, start: Decimal | None, steps: list[Any]
) -> None:
    run_history(database, start, steps, pending_cancel=True)


def test_cancelling_a_pending_task_returns_its_hold(database: Database) -> None:
    key_id = keys.create(database, "cancel", balance=Decimal(10))[0].id
    row = create(database, key_id, Decimal(3))
    tasks.request_cancel(database, row.id, key_id)
    assert ledger.totals(database, key_id)[0] == Decimal(10)


def test_failing_an_unleased_task_returns_its_hold(database: Database) -> None:
    key_id = keys.create(database, "unleased", balance=Decimal(10))[0].id
    row = create(database, key_id, Decimal(3))
    assert leases.fail_unleased(
        database, row.id, {"code": "worker_lost", "type": "server_error", "params": {}}
    )
    assert ledger.totals(database, key_id)[0] == Decimal(10)


def test_exact_amounts_despite_binary_floating_point(any_database: Database) -> None:
    """SQLite computes in doubles: 0.1 + 0.2 and 1.2 - 0.5 - 0.5 must still be exactly 0.3 and 0.2."""
    record, secret = keys.create(any_database, "cents", balance=Decimal("0.1"))
    ledger.top_up(any_database, record.id, Decimal("0.2"))
    create(any_database, record.id, Decimal("0.3"))  # the whole balance, not a hair less
    ledger.top_up(any_database, record.id, Decimal("1.2"))
    create(any_database, record.id, Decimal("0.5"))
    create(any_database, record.id, Decimal("0.5"))
    seen = keys.authenticate(any_database, secret)
    assert seen is not None and seen.balance == Decimal("0.2") and str(float(seen.balance)) == "0.2"
    create(any_database, record.id, Decimal("0.2"))
    with pytest.raises(PaymentRequired):
        create(any_database, record.id, Decimal("0.000001"))
    assert audit(any_database, record.id) == (ZERO, ZERO)


# --- races -----------------------------------------------------------------------------------------


def race(n: int, attempt: Any) -> list[str]:
    """Run `attempt` in n threads released at once; returns each one's outcome."""
    barrier = threading.Barrier(n)
    outcomes: list[str] = []
    lock = threading.Lock()

    def run() -> None:
        barrier.wait()
        try:
            attempt()
            outcome = "accepted"
        except (PaymentRequired, RateLimited) as exc:
            outcome = f"{exc.status} {exc.type}"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return outcomes


def test_fifty_racing_submits_against_a_balance_for_ten(any_database: Database) -> None:
    key_id = keys.create(any_database, "race", balance=Decimal(10))[0].id
    outcomes = race(50, lambda: create(any_database, key_id, Decimal(1)))
    assert outcomes.count("accepted") == 10
    assert outcomes.count("402 payment_required") == 40
    assert audit(any_database, key_id) == (ZERO, ZERO)
    with any_database.read() as conn:
        holds = conn.execute(
            sa.select(sa.func.count()).where(db.ledger.c.key_id == key_id, db.ledger.c.kind == "hold")
        ).scalar_one()
    assert holds == 10


def test_in_flight_cap_returns_429_with_retry_after(database: Database) -> None:
    key_id = keys.create(database, "cap", max_in_flight=2)[0].id
    create(database, key_id, ZERO, max_in_flight=2)
    create(database, key_id, ZERO, max_in_flight=2)
    with pytest.raises(RateLimited) as refused:
        create(database, key_id, ZERO, max_in_flight=2)
    assert refused.value.status == 429 and refused.value.headers["Retry-After"].isdigit()


def test_in_flight_cap_holds_under_racing_submits(any_database: Database) -> None:
    key_id = keys.create(any_database, "cap-race", max_in_flight=3)[0].id
    outcomes = race(20, lambda: create(any_database, key_id, ZERO, max_in_flight=3))
    assert outcomes.count("accepted") == 3
    assert outcomes.count("429 rate_limit_error") == 17


# --- over HTTP: 402, the in-flight 429, balances -------------------------------------------------------


@pytest.fixture
def priced(settings: Settings, database: Database, tmp_path: Path) -> Any:
    """The API with a price on the local renderer: pixverse-v6 at 540p costs 0.1 a second."""
    prices = tmp_path / "prices.toml"
    prices.write_text('[local."pixverse-v6"]\nper_second = { "540p" = 0.1 }\n')
    settings.prices_file = str(prices)
    with TestClient(create_app(settings, run_worker=False)) as client:
        yield client


def test_balance_hold_capture_release_over_http(priced: TestClient, database: Database) -> None:
    record, secret = keys.create(database, "metered", balance=Decimal("1.2"))
    headers = auth(secret)
    body = {"model": "pixverse-v6", "prompt": "waves", "duration": 5}  # 0.5
    first = submit(priced, body, **headers).json()["data"][0]["task_id"]
    second = submit(priced, body, **headers).json()["data"][0]["task_id"]
    refused = submit(priced, body, **headers)
    assert "balance" in assert_error(refused, 402, "payment_required")["message"].lower()
    for path in ("/v1/balance", "/v1/user/balance"):
        assert priced.get(path, headers=headers).json() == {
            "success": True,
            "remain_balance": 0.2,
            "used_balance": 0.0,
            "unlimited_quota": False,
        }
    claimed = leases.claim(database, owner="w", providers=frozenset({"local"}), limit=5, lease_seconds=30)
    held = {row.id: leases.lease_of(row) for row in claimed}
    leases.complete(database, held[first], RESULT, ttl_seconds=60, cost=Decimal("0.5"))
    leases.fail(database, held[second], {"code": "render_failed", "type": "server_error", "params": {}})
    assert priced.get(f"/v1/tasks/{first}", headers=headers).json()["data"]["cost"] == 0.5
    assert priced.get(f"/v1/tasks/{second}", headers=headers).json()["data"]["cost"] == 0
    assert priced.get("/v1/balance", headers=headers).json() == {
        "success": True,
        "remain_balance": 0.7,
        "used_balance": 0.5,
        "unlimited_quota": False,
    }
    assert audit(database, record.id) == (Decimal("0.7"), Decimal("0.5"))
    kinds = [e.kind for e in reversed(ledger.entries(database, record.id))]
    assert kinds == ["topup", "hold", "hold", "capture", "release"]


def test_unlimited_key_reports_usage(priced: TestClient, database: Database) -> None:
    _, secret = keys.create(database, "unlimited")
    task_id = submit(priced, {"model": "pixverse-v6", "prompt": "waves"}, **auth(secret)).json()["data"][0][
        "task_id"
    ]
    (row,) = leases.claim(database, owner="w", providers=frozenset({"local"}), limit=1, lease_seconds=30)
    assert row.id == task_id
    leases.complete(database, leases.lease_of(row), RESULT, ttl_seconds=60, cost=Decimal("0.5"))
    assert priced.get("/v1/balance", headers=auth(secret)).json() == {
        "success": True,
        "remain_balance": -1,
        "used_balance": 0.5,
        "unlimited_quota": True,
    }


def test_in_flight_cap_over_http(priced: TestClient, database: Database) -> None:
    _, secret = keys.create(database, "capped", max_in_flight=1)
    body = {"model": "pixverse-v6", "prompt": "waves"}
    first = submit(priced, body, **auth(secret)).json()["data"][0]["task_id"]
    refused = submit(priced, body, **auth(secret))
    error = assert_error(refused, 429, "rate_limit_error")
    assert "1" in error["message"] and int(refused.headers["Retry-After"]) > 0
    run_to(database, first, "completed")
    assert submit(priced, body, **auth(secret)).status_code == 200  # a finished task frees its slot
