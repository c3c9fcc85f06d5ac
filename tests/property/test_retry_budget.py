"""The retry budget and back-off: ceilings against their formulas, delays within them.

A stateful machine starts and finishes requests and retries, starting a retry only
when the thresholds allow it, and checks that the retries in flight never exceed the
ceiling computed when the latest of them started; ``@given`` tests check the formulas
and that every back-off delay falls in ``[0, min(max, base * 2**n))``.
"""

from __future__ import annotations

import math
import random
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from policies.backoff import BackoffConfig, backoff_ceiling, backoff_delay
from policies.limits import CircuitBreakerThresholds, RetryBudget, retry_allowed
from tests.strategies import retry_budgets, seeds, thresholds


def ceiling(limits: CircuitBreakerThresholds, active: int) -> int:
    """Envoy's rule, in exact arithmetic."""
    budget = limits.retry_budget
    if budget is None:
        return limits.max_retries
    share = Fraction(budget.budget_percent) * active / 100
    return max(budget.min_retry_concurrency, math.floor(share))


@given(limits=thresholds, active=st.integers(0, 10_000), pending=st.integers(0, 100))
def test_a_retry_is_allowed_exactly_below_the_ceiling(
    limits: CircuitBreakerThresholds, active: int, pending: int
) -> None:
    top = ceiling(limits, active + pending)
    for retries in (0, top - 1, top, top + 1):
        if retries >= 0:
            allowed = retry_allowed(limits, active, retries, pending)
            assert allowed == (retries < top)


@given(budget=retry_budgets, active=st.integers(0, 10_000))
def test_the_budget_grows_with_load_and_keeps_its_floor(budget: RetryBudget, active: int) -> None:
    assert budget.max_active_retries(active) >= budget.min_retry_concurrency
    assert budget.max_active_retries(active + 1) >= budget.max_active_retries(active)


class RetryBudgetMachine(RuleBasedStateMachine):
    @initialize(limits=thresholds)
    def new_cluster(self, limits: CircuitBreakerThresholds) -> None:
        self.limits = limits
        self.requests = 0
        self.retries = 0
        self.ceiling_at_last_retry = 0

    @rule()
    def start_request(self) -> None:
        self.requests += 1

    @precondition(lambda self: self.requests > self.retries)
    @rule()
    def finish_request(self) -> None:
        self.requests -= 1

    @precondition(lambda self: self.requests > 0)
    @rule()
    def try_retry(self) -> None:
        if self.limits.retry_allowed(self.requests, self.retries):
            self.retries += 1
            self.ceiling_at_last_retry = ceiling(self.limits, self.requests)

    @precondition(lambda self: self.retries > 0)
    @rule()
    def finish_retry(self) -> None:
        self.retries -= 1

    @invariant()
    def retries_in_flight_stay_within_the_ceiling(self) -> None:
        if self.retries:
            assert self.retries <= self.ceiling_at_last_retry


TestRetryBudget = RetryBudgetMachine.TestCase

bases = st.sampled_from([0.001, 0.025, 0.1, 1.0]) | st.floats(1e-4, 10.0)


@given(
    base=bases,
    factor=st.floats(1.0, 1000.0),
    attempts=st.lists(st.integers(0, 200), min_size=1, max_size=20),
    seed=seeds,
)
def test_every_delay_is_within_zero_and_the_ceiling(
    base: float, factor: float, attempts: list[int], seed: int
) -> None:
    top = base * factor
    config = BackoffConfig(base=base, max=top)
    rng = random.Random(seed)
    for attempt in attempts:
        expected = min(Fraction(top), Fraction(base) * 2**attempt)
        assert Fraction(backoff_ceiling(attempt, base=base, max=top)) == expected
        delay = config.delay(attempt, rng)
        assert 0 <= delay < expected or delay == expected == 0


@given(attempt=st.integers(0, 10), seed=seeds)
def test_delays_fill_the_range(attempt: int, seed: int) -> None:
    """Full jitter: 200 draws reach the top tenth of the range (misses w.p. 0.9**200 < 1e-9)."""
    rng = random.Random(seed)
    top = backoff_ceiling(attempt)
    delays = [backoff_delay(attempt, rng=rng) for _ in range(200)]
    assert max(delays) >= 0.9 * top
    assert min(delays) <= 0.1 * top
