"""The rollout schedule driven by a clock, figures and operator commands, against the
rules its module docstring states.

The machine feeds ``judge`` figures that pass or breach the gates, with enough requests
or too few, at times before and after the dwell, and pauses, resumes, aborts and
promotes in any order (an input the table refuses must raise and change nothing). At
every step: the weight is one of the plan's steps while running or paused, 100 after
success and 0 after a rollback or abort; it moves only to the next step; a breach
always ends at 0 with the breach recorded; a pause holds the weight; a finished
rollout never moves again; every event is a row of the table and the events chain.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from policies.errors import ImpossibleTransition
from policies.rollout import (
    FINAL_STATES,
    TRANSITIONS,
    Effect,
    RolloutInput,
    RolloutPlan,
    RolloutSchedule,
    RolloutState,
    StepFigures,
    transition,
)
from tests.strategies import rollout_plans

RUNNING, PAUSED = RolloutState.RUNNING, RolloutState.PAUSED

#: the transitions as the module docstring states them
LEGAL = {
    (RUNNING, RolloutInput.STEP_PASSED): RUNNING,
    (RUNNING, RolloutInput.LAST_STEP_PASSED): RolloutState.SUCCEEDED,
    (RUNNING, RolloutInput.GATE_BREACHED): RolloutState.ROLLED_BACK,
    (RUNNING, RolloutInput.PAUSE): PAUSED,
    (RUNNING, RolloutInput.ABORT): RolloutState.ABORTED,
    (RUNNING, RolloutInput.PROMOTE): RolloutState.SUCCEEDED,
    (PAUSED, RolloutInput.RESUME): RUNNING,
    (PAUSED, RolloutInput.ABORT): RolloutState.ABORTED,
    (PAUSED, RolloutInput.PROMOTE): RolloutState.SUCCEEDED,
}


@pytest.mark.parametrize(("state", "event"), list(itertools.product(RolloutState, RolloutInput)))
def test_every_state_and_input(state: RolloutState, event: RolloutInput) -> None:
    if (state, event) in LEGAL:
        assert transition(state, event)[1] is LEGAL[state, event]
    else:
        with pytest.raises(ImpossibleTransition):
            transition(state, event)
    assert set(TRANSITIONS) == set(LEGAL)


class RolloutMachine(RuleBasedStateMachine):
    @initialize(plan=rollout_plans())
    def new_rollout(self, plan: RolloutPlan) -> None:
        self.plan = plan
        self.now = 0.0
        self.rollout = RolloutSchedule(plan, self.now)
        self.weight = plan.steps[0]
        self.state = RUNNING

    def _check_events(self, before_weight: int, before_state: RolloutState) -> None:
        rollout = self.rollout
        weight, state = before_weight, before_state
        for event in rollout.drain_events():
            assert (event.old, event.reason) in LEGAL
            assert LEGAL[event.old, event.reason] is event.new
            assert (event.old, event.old_weight) == (state, weight)  # the events chain
            if event.reason is RolloutInput.STEP_PASSED:
                # only ever to the next step
                assert event.new_weight == self.plan.steps[self.plan.steps.index(weight) + 1]
            if event.reason is RolloutInput.GATE_BREACHED:
                assert event.new_weight == 0 and event.breach is not None
            if event.reason is RolloutInput.PAUSE:
                assert event.new_weight == weight
            state, weight = event.new, event.new_weight
        assert (state, weight) == (rollout.state, rollout.weight)
        self.state, self.weight = state, weight

    @rule(
        seconds=st.sampled_from([0.0, 0.5, 1.0, 5.0, 60.0]),
        requests=st.integers(0, 30),
        error_share=st.sampled_from([0.0, 0.005, 0.02, 0.6, 1.0]),
        p99=st.none() | st.sampled_from([1.0, 99.0, 150.0]),
    )
    def judge(self, seconds: float, requests: int, error_share: float, p99: float | None) -> None:
        self.now += seconds
        before = (self.rollout.weight, self.rollout.state)
        figures = StepFigures(requests, int(requests * error_share), p99)
        fed = self.rollout.judge(figures, self.now)
        gates = self.plan.gates
        if before[1] is not RUNNING or requests < gates.min_requests:
            assert fed is None  # not running, or too few requests to judge either way
        elif gates.breach(figures) is not None:
            assert fed is RolloutInput.GATE_BREACHED
            assert self.rollout.breach == gates.breach(figures)
        self._check_events(*before)

    @rule(command=st.sampled_from(["pause", "resume", "abort", "promote"]))
    def operate(self, command: str) -> None:
        self.now += 0.1
        before = (self.rollout.weight, self.rollout.state)
        event = RolloutInput(command)
        if (before[1], event) in LEGAL:
            getattr(self.rollout, command)(self.now)
        else:
            with pytest.raises(ImpossibleTransition):
                getattr(self.rollout, command)(self.now)
            assert (self.rollout.weight, self.rollout.state) == before  # nothing moved
        self._check_events(*before)

    @invariant()
    def weight_matches_state(self) -> None:
        if not hasattr(self, "rollout"):
            return
        rollout = self.rollout
        if rollout.state in (RUNNING, PAUSED):
            assert rollout.weight in self.plan.steps
        elif rollout.state is RolloutState.SUCCEEDED:
            assert rollout.weight == 100
        else:
            assert rollout.weight == 0
        assert rollout.finished == (rollout.state in FINAL_STATES)


TestRollout = RolloutMachine.TestCase


def test_a_restored_rollout_restarts_its_dwell() -> None:
    plan = RolloutPlan(steps=(10, 50), dwell=10, interval=1)
    rollout = RolloutSchedule.restore(plan, RUNNING, 1, now=100.0)
    assert (rollout.weight, rollout.step_started_at) == (50, 100.0)
    enough = StepFigures(plan.gates.min_requests, 0)
    assert rollout.judge(enough, 105.0) is None  # the dwell began again at the restore
    assert rollout.judge(enough, 110.0) is RolloutInput.LAST_STEP_PASSED
    assert (rollout.state, rollout.weight) == (RolloutState.SUCCEEDED, 100)
    assert [e.reason for e in rollout.drain_events()] == [RolloutInput.LAST_STEP_PASSED]
    assert Effect.FULL is TRANSITIONS[RUNNING, RolloutInput.LAST_STEP_PASSED][0]


@given(plan=rollout_plans(), errors=st.booleans())
def test_a_step_with_too_few_requests_waits_whatever_they_show(
    plan: RolloutPlan, errors: bool
) -> None:
    rollout = RolloutSchedule(plan, 0.0)
    few = plan.gates.min_requests - 1
    figures = StepFigures(few, few if errors else 0, 1e9 if errors else None)
    assert rollout.judge(figures, plan.dwell * 10) is None
    assert (rollout.state, rollout.weight) == (RUNNING, plan.steps[0])
