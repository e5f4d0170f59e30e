"""The task state machine: every (from, to) pair of `Status` against the one table of transitions."""

from __future__ import annotations

import itertools

import pytest

from vidgate.status import (
    TERMINAL,
    TRANSITIONS,
    InvalidTransition,
    Status,
    check_transition,
    is_terminal,
    sources_of,
)

P, R, C, F, X = Status.PENDING, Status.PROCESSING, Status.COMPLETED, Status.FAILED, Status.CANCELLED

#: The allowed moves, written out independently of `TRANSITIONS` (DESIGN §4).
EXPECTED_ALLOWED: frozenset[tuple[Status, Status]] = frozenset(
    {
        (P, R),  # a worker picks it up
        (P, X),  # cancelled while queued
        (P, F),  # e.g. input check failed before any work
        (R, C),
        (R, F),
        (R, X),
        (R, P),  # retry / lease expiry
    }
)

ALL_PAIRS = list(itertools.product(Status, Status))


def _pair_id(pair: tuple[Status, Status]) -> str:
    return f"{pair[0].value}->{pair[1].value}"


def test_status_values_are_the_api_strings() -> None:
    assert [s.value for s in Status] == ["pending", "processing", "completed", "failed", "cancelled"]


def test_table_covers_every_status_and_only_statuses() -> None:
    assert set(TRANSITIONS) == set(Status)
    for targets in TRANSITIONS.values():
        assert targets <= set(Status)


def test_table_is_exactly_the_expected_one() -> None:
    actual = {(s, t) for s, targets in TRANSITIONS.items() for t in targets}
    assert actual == EXPECTED_ALLOWED


@pytest.mark.parametrize("pair", ALL_PAIRS, ids=_pair_id)
def test_check_transition_every_pair(pair: tuple[Status, Status]) -> None:
    source, target = pair
    allowed = target in TRANSITIONS[source]
    assert allowed == (pair in EXPECTED_ALLOWED)
    if allowed:
        assert check_transition(source, target) is None
    else:
        with pytest.raises(InvalidTransition) as info:
            check_transition(source, target)
        assert info.value.source == source
        assert info.value.target == target
        assert str(source) in str(info.value)
        assert str(target) in str(info.value)


@pytest.mark.parametrize("status", list(Status), ids=str)
def test_no_self_transitions(status: Status) -> None:
    assert status not in TRANSITIONS[status]
    with pytest.raises(InvalidTransition):
        check_transition(status, status)


def test_terminal_set() -> None:
    assert frozenset({C, F, X}) == TERMINAL


@pytest.mark.parametrize("status", list(Status), ids=str)
def test_terminal_statuses_have_no_exits(status: Status) -> None:
    assert is_terminal(status) == (status in TERMINAL)
    assert is_terminal(status.value) == (status in TERMINAL)
    if status in TERMINAL:
        assert TRANSITIONS[status] == frozenset()
    else:
        assert TRANSITIONS[status], f"{status} is not terminal but has no way out"


def test_is_terminal_rejects_unknown_status() -> None:
    with pytest.raises(ValueError):
        is_terminal("done")


def test_every_non_terminal_status_can_reach_a_terminal_one() -> None:
    for start in set(Status) - TERMINAL:
        seen, frontier = {start}, [start]
        while frontier:
            for nxt in TRANSITIONS[frontier.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    frontier.append(nxt)
        assert seen & TERMINAL == TERMINAL, start


@pytest.mark.parametrize("target", list(Status), ids=str)
def test_sources_of_is_consistent_with_table(target: Status) -> None:
    expected = frozenset(s for s in Status if target in TRANSITIONS[s])
    assert sources_of(target) == expected
    assert sources_of(target) == frozenset(s for s, t in EXPECTED_ALLOWED if t == target)
    assert not sources_of(target) & TERMINAL
    for source in Status:
        assert (source in sources_of(target)) == (target in TRANSITIONS[source])


def test_sources_of_explicit() -> None:
    assert sources_of(P) == {R}
    assert sources_of(R) == {P}
    assert sources_of(C) == {R}
    assert sources_of(F) == {P, R}
    assert sources_of(X) == {P, R}


def test_processing_may_go_back_to_pending() -> None:
    assert P in TRANSITIONS[R]
    check_transition(R, P)


@pytest.mark.parametrize("target", list(Status), ids=str)
def test_completed_goes_nowhere(target: Status) -> None:
    with pytest.raises(InvalidTransition):
        check_transition(C, target)


def test_pending_cannot_complete_without_processing() -> None:
    with pytest.raises(InvalidTransition):
        check_transition(P, C)
    assert P not in sources_of(C)
