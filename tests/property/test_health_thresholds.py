"""Health thresholds against an oracle that reads the verdict off the history of checks.

The oracle keeps the results since the last change of state and asks one question of
their tail: are the last ``n`` all passes (or all failures), for the ``n`` the current
state needs? That is the rule as the module states it, computed a different way from
the machine's streak counters.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from policies.errors import ImpossibleTransition
from policies.health import (
    TRANSITIONS,
    CheckResult,
    HealthChanged,
    HealthState,
    HealthThresholds,
    transition,
)

UNKNOWN, HEALTHY, UNHEALTHY = HealthState.UNKNOWN, HealthState.HEALTHY, HealthState.UNHEALTHY

LEGAL = {
    (UNKNOWN, CheckResult.PASSED_ENOUGH): HEALTHY,
    (UNKNOWN, CheckResult.FAILED): UNKNOWN,
    (UNKNOWN, CheckResult.FAILED_ENOUGH): UNHEALTHY,
    (HEALTHY, CheckResult.PASSED): HEALTHY,
    (HEALTHY, CheckResult.FAILED): HEALTHY,
    (HEALTHY, CheckResult.FAILED_ENOUGH): UNHEALTHY,
    (UNHEALTHY, CheckResult.PASSED): UNHEALTHY,
    (UNHEALTHY, CheckResult.PASSED_ENOUGH): HEALTHY,
    (UNHEALTHY, CheckResult.FAILED): UNHEALTHY,
}


class HealthMachine(RuleBasedStateMachine):
    @initialize(healthy=st.integers(1, 4), unhealthy=st.integers(1, 4))
    def new_endpoint(self, healthy: int, unhealthy: int) -> None:
        self.thresholds = HealthThresholds(healthy_threshold=healthy, unhealthy_threshold=unhealthy)
        self.healthy, self.unhealthy = healthy, unhealthy
        self.state = UNKNOWN
        self.since_change: list[bool] = []
        self.now = 0.0
        self.changes: list[HealthChanged] = []

    def tail_is(self, passed: bool, n: int) -> bool:
        tail = self.since_change[-n:]
        return len(tail) == n and all(r is passed for r in tail)

    @rule(passed=st.booleans(), dt=st.sampled_from([0.0, 1.0, 5.0]))
    def check(self, passed: bool, dt: float) -> None:
        self.now += dt
        self.since_change.append(passed)
        old = self.state
        if old is not HEALTHY and self.tail_is(True, 1 if old is UNKNOWN else self.healthy):
            self.state = HEALTHY
        elif old is not UNHEALTHY and self.tail_is(False, self.unhealthy):
            self.state = UNHEALTHY
        if self.state is not old:
            self.since_change = []
            self.changes.append(HealthChanged(old, self.state, self.now))
        assert self.thresholds.record(passed, self.now) is self.state

    @rule(passes=st.integers(1, 6))
    def run_of_passes(self, passes: int) -> None:
        for _ in range(passes):
            self.check(True, 1.0)

    @rule(failures=st.integers(1, 6))
    def run_of_failures(self, failures: int) -> None:
        for _ in range(failures):
            self.check(False, 1.0)

    @invariant()
    def events_are_exactly_the_changes(self) -> None:
        assert self.thresholds.drain_events() == self.changes
        self.changes = []
        assert self.thresholds.state is self.state
        assert self.state.serves == (self.state is not UNHEALTHY)


TestHealthThresholds = HealthMachine.TestCase


@pytest.mark.parametrize(("state", "result"), list(itertools.product(HealthState, CheckResult)))
def test_every_state_and_result(state: HealthState, result: CheckResult) -> None:
    if (state, result) in LEGAL:
        assert transition(state, result) is LEGAL[state, result]
    else:
        with pytest.raises(ImpossibleTransition):
            transition(state, result)


def test_the_table_is_exactly_the_documented_transitions() -> None:
    assert TRANSITIONS == LEGAL


@pytest.mark.parametrize("state", list(HealthState))
def test_classify_only_produces_what_the_table_has(state: HealthState) -> None:
    """Driven into each state, the machine classifies every result into a row."""
    for healthy, unhealthy in itertools.product(range(1, 4), repeat=2):
        thresholds = HealthThresholds(healthy, unhealthy)
        path = {UNKNOWN: [], HEALTHY: [True], UNHEALTHY: [False] * unhealthy}[state]
        for passed in path:
            thresholds.record(passed, 0.0)
        assert thresholds.state is state
        for history in itertools.product([True, False], repeat=4):
            probe = HealthThresholds(healthy, unhealthy)
            for passed in path:
                probe.record(passed, 0.0)
            for passed in history:
                assert (probe.state, probe.classify(passed)) in LEGAL
                probe.record(passed, 0.0)
