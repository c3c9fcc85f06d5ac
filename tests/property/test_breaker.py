"""The circuit breaker driven by a clock and requests, against an oracle of its rules.

The machine holds permits across steps, so answers arrive late and out of order, in
states other than the one that gave the permit. The oracle follows the breaker from
its events alone (each event must be a row of the table, and the events must chain)
and checks, at every step: no request is let through while open, half-open lets at
most ``half_open_requests`` probes be in use, it closes only when every probe passed,
the open time starts at ``open_time``, doubles on each failed probe and is capped, and
the breaker opens exactly when the window of counted outcomes says so.
"""

from __future__ import annotations

import itertools
import math

import hypothesis
import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from policies.breaker import (
    BUCKETS,
    TRANSITIONS,
    BreakerConfig,
    BreakerInput,
    BreakerState,
    CircuitBreaker,
    Effect,
    Outcome,
    Permit,
    transition,
)
from policies.errors import ImpossibleTransition
from tests.strategies import breaker_configs

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN

#: the breaker's transitions as the module docstring states them
LEGAL = {
    (CLOSED, BreakerInput.FAILURE_RATE_EXCEEDED): OPEN,
    (OPEN, BreakerInput.OPEN_TIME_ELAPSED): HALF_OPEN,
    (HALF_OPEN, BreakerInput.PROBE_FAILED): OPEN,
    (HALF_OPEN, BreakerInput.PROBES_PASSED): CLOSED,
}

steps = st.sampled_from([0.0, 0.1, 0.5, 1.0, 5.0]) | st.floats(0.0, 20.0)
outcomes = st.sampled_from(Outcome)


class BreakerMachine(RuleBasedStateMachine):
    @initialize(config=breaker_configs())
    def new_breaker(self, config: BreakerConfig) -> None:
        self.config = config
        self.breaker = CircuitBreaker(config)
        self.now = 0.0
        # the oracle
        self.state = CLOSED
        self.generation = 0
        self.open_time = config.open_time
        self.open_until = -math.inf
        self.last_event_at = -math.inf
        self.counted: list[tuple[float, bool]] = []  # (when, failed) in this closed era
        self.probes_in_use = 0  # out, or passed, in this half-open period
        self.probes_passed = 0
        self.outstanding: list[tuple[Permit, int]] = []  # with the oracle's generation

    # -- the oracle's view of the window ---------------------------------------------

    def bucket(self, t: float) -> int:
        return math.floor(t * BUCKETS / self.config.window)

    def window(self) -> tuple[int, int]:
        first = self.bucket(self.now) - BUCKETS + 1
        live = [failed for when, failed in self.counted if self.bucket(when) >= first]
        return len(live), sum(live)

    def should_open(self) -> bool:
        requests, failures = self.window()
        return (
            requests >= self.config.minimum_requests
            and failures * 100 >= self.config.failure_rate * requests
        )

    # -- following the events --------------------------------------------------------

    def follow_events(self) -> None:
        for event in self.breaker.drain_events():
            assert event.old is self.state, "events must chain"
            hypothesis.event(f"{event.old.value} -> {event.new.value}")
            assert LEGAL[event.old, event.reason] is event.new
            assert self.last_event_at <= event.at <= self.now
            self.last_event_at = event.at
            if event.new is OPEN:
                if event.old is CLOSED:
                    assert self.should_open()
                    self.open_time = self.config.open_time
                else:
                    self.open_time = min(2 * self.open_time, self.config.max_open_time)
                assert self.breaker.open_time == self.open_time <= self.config.max_open_time
                self.open_until = event.at + self.open_time
                assert self.breaker.open_until == self.open_until
            elif event.new is HALF_OPEN:
                assert event.at == self.open_until
                self.probes_in_use = self.probes_passed = 0
            else:  # closed: every probe passed
                assert self.probes_passed == self.config.half_open_requests
                self.open_time = self.config.open_time
                assert self.breaker.open_time == self.config.open_time
            self.counted = []
            self.state = event.new
            self.generation += 1
        assert self.breaker.state is self.state

    def ask(self) -> Permit | None:
        blocked = self.state is OPEN and self.now < self.open_until
        half_open_full = (
            self.state is HALF_OPEN and self.probes_in_use >= self.config.half_open_requests
        )
        permit = self.breaker.allow(self.now)
        self.follow_events()
        if blocked or half_open_full:
            assert permit is None, "let a request through while open or out of probes"
        if permit is not None:
            assert self.state is not OPEN
            assert permit.probe == (self.state is HALF_OPEN)
            if permit.probe:
                self.probes_in_use += 1
                assert self.probes_in_use <= self.config.half_open_requests
        elif self.state is CLOSED or (self.state is HALF_OPEN and self.probes_in_use == 0):
            raise AssertionError("refused a request it should let through")
        return permit

    def answer(self, permit: Permit, issued_in: int, outcome: Outcome) -> None:
        # An open time that has passed half-opens the breaker before the answer counts;
        # an answer from an older generation than the one it then has is dropped.
        lazy = self.state is OPEN and self.now >= self.open_until
        state = HALF_OPEN if lazy else self.state
        current = issued_in == self.generation + lazy
        counts = current and state is CLOSED and outcome is not Outcome.ABANDONED
        if counts:
            self.counted.append((self.now, outcome is Outcome.FAILURE))
        if current and state is HALF_OPEN and permit.probe:
            if outcome is Outcome.ABANDONED:
                self.probes_in_use -= 1
            elif outcome is Outcome.SUCCESS:
                self.probes_passed += 1
        self.breaker.record(permit, outcome, self.now)
        self.follow_events()
        if counts and self.state is CLOSED:
            assert not self.should_open(), "the window says open but the breaker stayed closed"
        if current and state is HALF_OPEN and permit.probe and outcome is Outcome.FAILURE:
            assert self.state is OPEN, "a failed probe must reopen the breaker"

    # -- rules -----------------------------------------------------------------------

    @rule(dt=steps)
    def advance_clock(self, dt: float) -> None:
        self.now += dt

    @rule(outcome=outcomes)
    def request(self, outcome: Outcome) -> None:
        permit = self.ask()
        if permit is not None:
            self.answer(permit, self.generation, outcome)

    @rule()
    def start_request(self) -> None:
        permit = self.ask()
        if permit is not None:
            self.outstanding.append((permit, self.generation))

    @precondition(lambda self: self.outstanding)
    @rule(data=st.data(), outcome=outcomes)
    def finish_request(self, data: st.DataObject, outcome: Outcome) -> None:
        index = data.draw(st.integers(0, len(self.outstanding) - 1))
        permit, issued_in = self.outstanding.pop(index)
        self.answer(permit, issued_in, outcome)

    @rule()
    def look(self) -> None:
        state = self.breaker.state_at(self.now)
        self.follow_events()
        assert state is self.state
        if state is OPEN:
            assert self.now < self.open_until

    @invariant()
    def window_memory_is_bounded(self) -> None:
        assert len(self.breaker._buckets) <= BUCKETS


TestBreaker = BreakerMachine.TestCase


# -- the whole state space ----------------------------------------------------------------


@pytest.mark.parametrize(("state", "event"), list(itertools.product(BreakerState, BreakerInput)))
def test_every_state_and_input(state: BreakerState, event: BreakerInput) -> None:
    if (state, event) in LEGAL:
        effect, new = transition(state, event)
        assert new is LEGAL[state, event]
        assert isinstance(effect, Effect)
    else:
        with pytest.raises(ImpossibleTransition):
            transition(state, event)


def test_the_table_is_exactly_the_documented_transitions() -> None:
    assert {key: new for key, (_, new) in TRANSITIONS.items()} == LEGAL
    # every state is entered and left; every effect is used
    assert {new for new in LEGAL.values()} == set(BreakerState)
    assert {state for state, _ in LEGAL} == set(BreakerState)
    assert {effect for effect, _ in TRANSITIONS.values()} == set(Effect)
