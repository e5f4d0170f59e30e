"""A Hypothesis state machine over the task lifecycle, on a SQLite file and on PostgreSQL.

The rules drive the real `tasks` module: submits (fresh, idempotent replays, a reused
Idempotency-Key with another body, over the balance, over the key's in-flight cap), claims by
three workers with their own clocks and lease lengths, checkpoints, heartbeats, hand-backs (a poll,
back to the queue, a batch, a reroute), completion, failure, lease expiry and takeover, writes
through leases that moved on, cancellation (pending, processing, finished), `fail_unleased` and
`poke`. A model beside the database (`test_lifecycle_machine_model.py`) predicts every outcome;
after every step the invariants are read back from the database itself (`check_database`).

`tasks` reads `time.time()`; the machine swaps in a fake clock for that module alone, so lease
expiry is a step instead of a sleep, and a failing run replays exactly and shrinks.
"""

from __future__ import annotations

import functools
import itertools
from collections import defaultdict
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import Phase as Phase_
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from vidgate import catalog, ids, keys, leases, tasks
from vidgate.db import Database
from vidgate.errors import Conflict, NotFound, PaymentRequired, RateLimited
from vidgate.status import TERMINAL, Phase, Status

from .test_lifecycle_machine_model import (
    START,
    ZERO,
    Clock,
    KeyModel,
    TaskModel,
    Worker,
    check_balance,
    check_history,
    check_money,
    check_row,
    read,
    snapshot,
)

BODIES = (
    {"model": "pixverse-v6", "prompt": "waves"},
    {"model": "pixverse-v6", "prompt": "fire", "duration": 3},
)
REQUESTS = tuple(catalog.parse(body) for body in BODIES)
ACTIVE = (Status.PENDING, Status.PROCESSING)
WORK_PHASES = (Phase.SUBMITTING, Phase.AWAITING_UPSTREAM, Phase.RENDERING, Phase.DOWNLOADING)
ERROR = {"code": "render_failed", "type": "server_error", "params": {}}
RESULT = {"video": "results/x/video.mp4", "thumbnail": "results/x/thumbnail.jpg"}

BALANCES = st.one_of(st.none(), st.decimals(min_value=Decimal("0.5"), max_value=Decimal(8), places=2))
CAPS = st.one_of(st.none(), st.integers(1, 3))
COSTS = st.one_of(st.just(ZERO), st.decimals(min_value=Decimal("0.01"), max_value=Decimal(5), places=2))
#: An index into a list the model keeps in creation order.
PICK = st.integers(0, 63)
PROGRESS = st.one_of(st.none(), st.integers(-5, 120))
_runs = itertools.count()


class LifecycleMachine(RuleBasedStateMachine):
    def __init__(self, database: Database, clock: Clock) -> None:
        super().__init__()
        self.db = database
        self.clock = clock
        clock.now = START
        self.provider = f"machine{next(_runs)}"  # claims see this run's tasks only
        self.keys: list[KeyModel] = []
        self.tasks: dict[str, TaskModel] = {}
        self.idem: dict[tuple[str, str], tuple[str, int]] = {}  # (key, Idempotency-Key) -> (task, body)
        self.workers = [Worker("w0", 0.0, 10.0), Worker("w1", 0.5, 4.0), Worker("w2", -0.5, 20.0)]
        self.frozen: dict[str, Any] = {}
        self.progress_seen: dict[str, int] = {}

    # --- helpers ----------------------------------------------------------------------------------

    def snapshot(self) -> Any:
        return snapshot(self.db, [k.id for k in self.keys])

    def held(self) -> list[tuple[Worker, leases.Lease]]:
        return [(w, lease) for w in self.workers for lease in w.leases]

    def pick_lease(self, i: int) -> tuple[Worker, leases.Lease, TaskModel]:
        held = self.held()
        worker, lease = held[i % len(held)]
        return worker, lease, self.tasks[lease.task_id]

    def current(self, lease: leases.Lease) -> bool:
        """Whether the database would accept a write through this lease (fencing, not the clock)."""
        t = self.tasks[lease.task_id]
        return t.status is Status.PROCESSING and (t.owner, t.token) == (lease.owner, lease.token)

    def stale_write(self, worker: Worker, lease: leases.Lease, call: Callable[[], object]) -> bool:
        """For a lease that moved on: the write raises LeaseLost and changes nothing. Returns
        whether it was stale (the caller stops); a worker that lost a task forgets it."""
        if self.current(lease):
            return False
        before = self.snapshot()
        with pytest.raises(leases.LeaseLost):
            call()
        assert self.snapshot() == before, "a write through a lost lease changed something"
        worker.leases.remove(lease)
        return True

    def refused(self, error: type[Exception], call: Callable[[], object]) -> None:
        before = self.snapshot()
        with pytest.raises(error):
            call()
        assert self.snapshot() == before, f"a refused call ({error.__name__}) changed something"

    # --- rules ------------------------------------------------------------------------------------

    @initialize(specs=st.lists(st.tuples(BALANCES, CAPS), min_size=2, max_size=3))
    def make_keys(self, specs: list[tuple[Decimal | None, int | None]]) -> None:
        for balance, cap in specs:
            record, _ = keys.create(self.db, "machine", balance=balance, max_in_flight=cap)
            self.keys.append(KeyModel(record.id, balance, cap, balance))

    # A few live tasks at a time, so that runs spend their steps working them rather than queueing.
    @precondition(lambda self: sum(t.status in ACTIVE for t in self.tasks.values()) < 5)
    @rule(k=PICK, body=st.integers(0, 1), idem=st.sampled_from([None, None, "a", "b"]), cost=COSTS)
    def submit(self, k: int, body: int, idem: str | None, cost: Decimal) -> None:
        key = self.keys[k % len(self.keys)]
        call = functools.partial(
            tasks.create,
            self.db,
            key_id=key.id,
            request=REQUESTS[body],
            body=BODIES[body],
            provider=self.provider,
            estimated_time=10,
            idempotency_key=idem,
            cost=cost,
            max_in_flight=key.cap,
        )
        original = self.idem.get((key.id, idem)) if idem is not None else None
        active = sum(1 for t in self.tasks.values() if t.key is key and t.status in ACTIVE)
        if original is not None and original[1] != body:
            return self.refused(Conflict, call)
        if original is not None:
            # A replay answers with the first task whatever it became, and changes nothing.
            before = self.snapshot()
            row, replayed = call()
            assert replayed and row.id == original[0]
            assert self.snapshot() == before
            return None
        if key.cap is not None and active >= key.cap:
            return self.refused(RateLimited, call)
        if key.balance is not None and cost > key.balance:
            return self.refused(PaymentRequired, call)
        row, replayed = call()
        assert not replayed and row.id not in self.tasks
        took = key.balance is not None and cost > ZERO
        if took:
            key.balance -= cost  # type: ignore[operator]
        self.tasks[row.id] = TaskModel(row.id, key, cost, took, next_run_at=self.clock.now, cost=cost)
        if idem is not None:
            self.idem[(key.id, idem)] = (row.id, body)
        return None

    @precondition(lambda self: any(t.status in ACTIVE for t in self.tasks.values()))
    @rule(w=st.integers(0, 2), limit=st.integers(1, 3))
    def claim(self, w: int, limit: int) -> None:
        worker = self.workers[w]
        now = self.clock.now + worker.skew
        due = {
            t.id
            for t in self.tasks.values()
            if t.status in ACTIVE
            and t.next_run_at is not None
            and t.next_run_at <= now
            and (t.lease_until is None or t.lease_until < now)
        }
        rows = leases.claim(
            self.db,
            owner=worker.name,
            providers=frozenset({self.provider}),
            limit=limit,
            lease_seconds=worker.lease_seconds,
            now=now,
        )
        got = [r.id for r in rows]
        # Only due tasks, none under another worker's live lease, each once, as many as asked.
        assert set(got) <= due and len(set(got)) == len(got) == min(limit, len(due)), (got, due)
        for row in sorted(rows, key=lambda r: r.id):  # ids grow with creation: a fixed order
            t = self.tasks[row.id]
            assert row.lease_token == t.token + 1, "a claim must move the fencing token on"
            t.status, t.owner, t.token = Status.PROCESSING, worker.name, t.token + 1
            t.lease_until, t.attempts = now + worker.lease_seconds, t.attempts + 1
            if t.phase is Phase.QUEUED:
                t.phase = Phase.FETCHING_INPUTS
            worker.leases.append(leases.lease_of(row))

    @precondition(lambda self: self.held())
    @rule(i=PICK, progress=PROGRESS)
    def heartbeat(self, i: int, progress: int | None) -> None:
        worker, lease, t = self.pick_lease(i)
        call = functools.partial(leases.heartbeat, self.db, lease, worker.lease_seconds, progress=progress)
        if self.stale_write(worker, lease, call):
            return
        assert call() == t.cancel_requested
        t.lease_until = self.clock.now + worker.lease_seconds
        if progress is not None:
            t.progress = max(t.progress, min(99, max(0, progress)))

    @precondition(lambda self: self.held())
    @rule(i=PICK, phase=st.sampled_from(WORK_PHASES))
    def checkpoint(self, i: int, phase: Phase) -> None:
        worker, lease, t = self.pick_lease(i)
        values = {"upstream_id": f"up-{t.id}"} if phase is Phase.AWAITING_UPSTREAM else {}
        call = functools.partial(
            leases.checkpoint, self.db, lease, phase=phase, lease_seconds=worker.lease_seconds, **values
        )
        if self.stale_write(worker, lease, call):
            return
        call()
        t.phase, t.lease_until = phase, self.clock.now + worker.lease_seconds
        t.upstream_id = values.get("upstream_id", t.upstream_id)

    def _released(self, t: TaskModel, delay: float, progress: int | None, requeue: bool) -> None:
        t.owner = t.lease_until = None
        t.next_run_at, t.attempts = self.clock.now + delay, 0
        if progress is not None:
            t.progress = max(t.progress, min(99, max(0, progress)))
        if requeue:
            t.status, t.phase = Status.PENDING, Phase.QUEUED

    # Handing back and finishing are one rule each (with a choice of how), so that a run is as
    # likely to keep working a task (heartbeat, checkpoint) as to let it go.
    @precondition(lambda self: self.held())
    @rule(
        i=PICK,
        how=st.sampled_from(["poll", "queue", "batch", "reroute"]),
        delay=st.sampled_from([0.0, 2.0, 30.0]),
        progress=PROGRESS,
    )
    def hand_back(self, i: int, how: str, delay: float, progress: int | None) -> None:
        """A poll that found the job still running (due again after `delay`), back to the queue,
        everything the worker holds in one transaction, or on to the next provider."""
        worker, lease, t = self.pick_lease(i)
        if how == "batch":
            return self.release_many(worker, delay, progress)
        if how == "reroute":
            call = functools.partial(
                leases.reroute, self.db, lease, provider=self.provider, upstream_state={"tried": ["x"]}
            )
        else:
            values: dict[str, Any] = {} if progress is None else {"progress": progress}
            phase = Phase.QUEUED if how == "queue" else None
            call = functools.partial(leases.release, self.db, lease, delay=delay, phase=phase, **values)
        if self.stale_write(worker, lease, call):
            return None
        call()
        if how == "reroute":
            self._released(t, 0.0, None, requeue=True)
            t.upstream_id = None
        else:
            self._released(t, delay, progress, requeue=how == "queue")
        return None

    def release_many(self, worker: Worker, delay: float, progress: int | None) -> None:
        held = list(worker.leases)
        values = None if progress is None else {"progress": progress}
        expected = [self.current(lease) for lease in held]
        applied = leases.release_many(self.db, [leases.Release(lease, delay, None, values) for lease in held])
        assert applied == expected  # each fenced by its own token; stale ones change nothing
        for lease, ok in zip(held, expected, strict=True):
            if ok:
                self._released(self.tasks[lease.task_id], delay, progress, requeue=False)
            else:
                worker.leases.remove(lease)

    @precondition(lambda self: self.held())
    @rule(
        i=PICK,
        outcome=st.sampled_from([Status.COMPLETED, Status.FAILED, Status.CANCELLED]),
        share=st.sampled_from([ZERO, Decimal("0.5"), Decimal(1), Decimal(2)]),
    )
    def finish(self, i: int, outcome: Status, share: Decimal) -> None:
        """Complete (charging a share of the quote; above it, share 2, is charged the quote only),
        fail, or stop a task whose owner asked to cancel it."""
        worker, lease, t = self.pick_lease(i)
        cost = t.hold * share
        call: Callable[[], None] = {
            Status.COMPLETED: functools.partial(
                leases.complete, self.db, lease, RESULT, ttl_seconds=60, cost=cost
            ),
            Status.FAILED: functools.partial(leases.fail, self.db, lease, ERROR),
            Status.CANCELLED: functools.partial(leases.finish_cancel, self.db, lease),
        }[outcome]
        if self.stale_write(worker, lease, call):
            return
        call()
        t.close(outcome, min(cost, t.hold) if outcome is Status.COMPLETED else ZERO)

    @rule(seconds=st.sampled_from([0.5, 3.0, 8.0, 25.0]))
    def tick(self, seconds: float) -> None:
        """Time passes: leases run out (their workers may be dead or just slow), polls come due."""
        self.clock.now += seconds

    @precondition(lambda self: self.tasks)
    @rule(i=PICK, which=st.sampled_from(["live", "live", "finished", "stranger"]))
    def request_cancel(self, i: int, which: str) -> None:
        """The owner cancels a live task or a finished one; another key tries to cancel it."""
        finished = [t for t in self.tasks.values() if t.status in TERMINAL]
        pool = {"live": [t for t in self.tasks.values() if t.status in ACTIVE], "finished": finished}
        candidates = pool.get(which) or list(self.tasks.values())
        t = candidates[i % len(candidates)]
        stranger = next(k for k in self.keys if k is not t.key)
        call = functools.partial(
            tasks.request_cancel, self.db, t.id, stranger.id if which == "stranger" else t.key.id
        )
        if which == "stranger":
            return self.refused(NotFound, call)  # another key's task does not exist for it
        if t.status in TERMINAL:
            return self.refused(Conflict, call)
        now = self.clock.now
        at_once = (
            t.status is Status.PENDING
            and t.upstream_id is None
            and (t.lease_until is None or t.lease_until < now)
        )
        row = call()
        t.cancel_requested = True
        if at_once:
            t.close(Status.CANCELLED)
        else:
            t.next_run_at = now  # its worker (or the next claimer) finishes the cancellation
        assert (row.status, row.cancel_requested) == (t.status.value, True)
        return None

    def unheld(self) -> list[TaskModel]:
        """Live tasks a worker has had that no live lease holds now (their worker died, or it
        handed them back)."""
        now = self.clock.now
        return [
            t
            for t in self.tasks.values()
            if t.status in ACTIVE and t.token and (t.lease_until is None or t.lease_until < now)
        ]

    @precondition(lambda self: self.unheld())
    @rule(i=PICK, finished=st.sampled_from([False, False, True]))
    def fail_unleased(self, i: int, finished: bool) -> None:
        """A supervisor fails a task that no live worker holds (the only use it is documented for);
        a finished task stays as it is."""
        done = [t for t in self.tasks.values() if t.status in TERMINAL]
        if finished and done:
            before = self.snapshot()
            assert not leases.fail_unleased(self.db, done[i % len(done)].id, ERROR)
            assert self.snapshot() == before
            return
        unheld = self.unheld()
        t = unheld[i % len(unheld)]
        assert leases.fail_unleased(self.db, t.id, ERROR)
        t.close(Status.FAILED)

    @precondition(lambda self: any(t.upstream_id for t in self.tasks.values()))
    @rule(i=PICK, right=st.booleans())
    def poke(self, i: int, right: bool) -> None:
        """A verified callback names an upstream job: only a live task with that job comes due."""
        known = [t for t in self.tasks.values() if t.upstream_id]
        t = known[i % len(known)]
        upstream = (t.upstream_id or "") if right else "up-unknown"
        expected = right and t.status in ACTIVE
        assert tasks.poke(self.db, t.id, provider=self.provider, upstream_id=upstream) == expected
        if expected:
            t.next_run_at = self.clock.now

    # --- invariants, from the database ------------------------------------------------------------

    @invariant()
    def check_database(self) -> None:
        if not self.keys:
            return
        rows, events, money, key_rows = read(self.db, [k.id for k in self.keys])
        assert set(rows) == set(self.tasks), "tasks appeared or vanished"
        history: dict[str, list[Any]] = defaultdict(list)
        for event in events:
            history[event.task_id].append(event)
        ledger: dict[str, list[Any]] = defaultdict(list)
        for entry in money:
            ledger[entry.task_id].append(entry)
        for task_id, t in self.tasks.items():
            row = rows[task_id]
            check_row(row, t)
            check_history(row, history[task_id])
            check_money(row, t, ledger[task_id])
            assert row.progress >= self.progress_seen.get(task_id, 0), "shown progress went back"
            self.progress_seen[task_id] = row.progress
            if Status(row.status) in TERMINAL:
                final = (
                    tuple(row),
                    [tuple(e) for e in history[task_id]],
                    [tuple(e) for e in ledger[task_id]],
                )
                assert self.frozen.setdefault(task_id, final) == final, "a finished task changed"
            holders = [w.name for w, lease in self.held() if lease.task_id == task_id and self.current(lease)]
            assert len(holders) <= 1, f"{task_id} leased by {holders}"
        for key, key_row in zip(sorted(self.keys, key=lambda k: k.id), key_rows, strict=True):
            check_balance(key, key_row, [e for e in money if e.key_id == key.id])


MACHINE = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    # No "explain" phase: it replays a failure many more times, which costs minutes here.
    phases=[Phase_.explicit, Phase_.reuse, Phase_.generate, Phase_.target, Phase_.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    """The fake clock, and task ids in creation order: claims break ties in due time by id, so
    random ids would make a replayed run take other tasks (and Hypothesis could not shrink it)."""
    fake = Clock()
    numbers = itertools.count(1)
    monkeypatch.setattr(tasks, "time", fake)
    monkeypatch.setattr(leases, "time", fake)
    monkeypatch.setattr(ids, "new_task_id", lambda: f"task_{next(numbers):026d}")
    yield fake


# A passing run takes seconds; a failing one also shrinks its example, which can take minutes.
@pytest.mark.timeout(600)
def test_task_lifecycle_state_machine(any_database: Database, clock: Clock) -> None:
    # PostgreSQL steps cost a few times more; the rules are the same, so fewer runs there.
    chosen = MACHINE if any_database.is_sqlite else settings(MACHINE, max_examples=60)
    run_state_machine_as_test(lambda: LifecycleMachine(any_database, clock), settings=chosen)
