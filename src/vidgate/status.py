"""The task state machine: the one table of allowed transitions.

`tasks.transition()` repeats every rule in SQL (`UPDATE ... WHERE status IN (allowed sources)`), and
the schema's CHECK constraints repeat the value sets, so no code path can write a state this table
does not allow.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    PENDING = "pending"  #: accepted, waiting for a worker (or for an upstream slot)
    PROCESSING = "processing"  #: a worker or an upstream is on it
    COMPLETED = "completed"  #: result stored; terminal
    FAILED = "failed"  #: terminal, with `error`
    CANCELLED = "cancelled"  #: terminal, by the user


class Phase(StrEnum):
    """Where inside `pending`/`processing` a task is; shown to operators, not in the apimart body."""

    QUEUED = "queued"
    FETCHING_INPUTS = "fetching_inputs"
    SUBMITTING = "submitting"
    AWAITING_UPSTREAM = "awaiting_upstream"
    RENDERING = "rendering"
    DOWNLOADING = "downloading"
    FINALIZING = "finalizing"
    DONE = "done"


TERMINAL: frozenset[Status] = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})

#: status -> statuses it may move to. `processing -> pending` is for retries and lease expiry only.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.PENDING: frozenset({Status.PROCESSING, Status.CANCELLED, Status.FAILED}),
    Status.PROCESSING: frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.PENDING}),
    Status.COMPLETED: frozenset(),
    Status.FAILED: frozenset(),
    Status.CANCELLED: frozenset(),
}


class InvalidTransition(Exception):
    def __init__(self, source: Status, target: Status) -> None:
        super().__init__(f"task cannot move from {source} to {target}")
        self.source = source
        self.target = target


def is_terminal(status: Status | str) -> bool:
    return Status(status) in TERMINAL


def sources_of(target: Status) -> frozenset[Status]:
    """Every status allowed to move to `target` (used to guard the SQL UPDATE)."""
    return frozenset(source for source, targets in TRANSITIONS.items() if target in targets)


def check_transition(source: Status, target: Status) -> None:
    if target not in TRANSITIONS[source]:
        raise InvalidTransition(source, target)
