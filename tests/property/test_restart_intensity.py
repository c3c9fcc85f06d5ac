"""RestartBudget against a brute-force oracle, driven by a clock and crashes."""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from policies.restart import Decision, RestartBudget, RestartIntensity

# Round numbers land crashes exactly `period` apart, where off-by-one bugs live.
periods = st.sampled_from([0.5, 1.0, 2.0, 5.0]) | st.floats(0.01, 10.0)
steps = st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0, 5.0]) | st.floats(0.0, 12.0)


class RestartBudgetMachine(RuleBasedStateMachine):
    @initialize(max_restarts=st.integers(0, 4), period=periods)
    def new_budget(self, max_restarts: int, period: float) -> None:
        self.intensity = RestartIntensity(max_restarts, period)
        self.budget = RestartBudget(self.intensity)
        self.now = 0.0
        self.crashes: list[float] = []
        self.decisions: list[Decision] = []

    @rule(dt=steps)
    def advance_clock(self, dt: float) -> None:
        self.now += dt

    @rule()
    def crash(self) -> None:
        self.crashes.append(self.now)
        self.decisions.append(self.budget.record_crash(self.now))

    def window_overflows_at(self, i: int) -> bool:
        """More than N of the crashes so far fell in the window of length T ending at crash i."""
        end = self.crashes[i]
        inside = [t for t in self.crashes[: i + 1] if end - t <= self.intensity.period]
        return len(inside) > self.intensity.max_restarts

    @invariant()
    def escalates_iff_some_window_overflowed(self) -> None:
        overflowed = False  # and once it has, it stays so: escalation is final
        for i, decision in enumerate(self.decisions):
            overflowed = overflowed or self.window_overflows_at(i)
            assert (decision is Decision.ESCALATE) == overflowed
        assert self.budget.escalated == overflowed

    @invariant()
    def escalation_is_final(self) -> None:
        if Decision.ESCALATE in self.decisions:
            first = self.decisions.index(Decision.ESCALATE)
            assert set(self.decisions[first:]) == {Decision.ESCALATE}


TestRestartBudget = RestartBudgetMachine.TestCase
