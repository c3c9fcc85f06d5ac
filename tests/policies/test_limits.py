"""Concurrency thresholds, the retry budget and back-off, on Envoy's figures."""

from __future__ import annotations

import random

import pytest

from policies.backoff import BackoffConfig, backoff_ceiling, backoff_delay
from policies.errors import InvalidSetting
from policies.limits import CircuitBreakerThresholds, RetryBudget, retry_allowed
from tests.strategies import ScriptedRandom


def test_threshold_defaults_are_envoys() -> None:
    assert CircuitBreakerThresholds() == CircuitBreakerThresholds(1024, 1024, 1024, 3, None)
    assert RetryBudget() == RetryBudget(budget_percent=20.0, min_retry_concurrency=3)


def test_a_check_passes_below_the_ceiling_only() -> None:
    limits = CircuitBreakerThresholds(max_connections=2, max_pending_requests=0, max_requests=3)
    assert limits.connection_allowed(1) and not limits.connection_allowed(2)
    assert not limits.pending_allowed(0)
    assert limits.request_allowed(2) and not limits.request_allowed(3)


def test_max_retries_without_a_budget() -> None:
    limits = CircuitBreakerThresholds(max_retries=3)
    assert limits.retry_allowed(active_requests=1000, active_retries=2)
    assert not limits.retry_allowed(active_requests=1000, active_retries=3)


def test_a_budget_scales_with_load_and_has_a_floor() -> None:
    limits = CircuitBreakerThresholds(max_retries=0, retry_budget=RetryBudget(20.0, 3))
    # 20% of 10 is 2, below the floor of 3
    assert retry_allowed(limits, active_requests=10, active_retries=2)
    assert not retry_allowed(limits, active_requests=10, active_retries=3)
    # 20% of 100 is 20; max_retries (0) is ignored with a budget
    assert retry_allowed(limits, active_requests=100, active_retries=19)
    assert not retry_allowed(limits, active_requests=100, active_retries=20)
    # pending requests count as active; 20% of 29 rounds down to 5
    assert limits.retry_allowed(active_requests=20, active_retries=4, pending_requests=9)
    assert not limits.retry_allowed(active_requests=20, active_retries=5, pending_requests=9)
    assert RetryBudget(0.0, 0).max_active_retries(1000) == 0


@pytest.mark.parametrize(
    ("cls", "fields", "field"),
    [
        (RetryBudget, {"budget_percent": 101}, "budget_percent"),
        (RetryBudget, {"min_retry_concurrency": -1}, "min_retry_concurrency"),
        (CircuitBreakerThresholds, {"max_connections": 0}, "max_connections"),
        (CircuitBreakerThresholds, {"max_retries": -1}, "max_retries"),
        (BackoffConfig, {"base": 0}, "base"),
        (BackoffConfig, {"base": 1.0, "max": 0.5}, "max"),
    ],
)
def test_a_bad_field_is_named(cls: type, fields: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidSetting) as caught:
        cls(**fields)
    assert caught.value.field == field


def test_backoff_ceilings_double_up_to_the_max() -> None:
    ceilings = [backoff_ceiling(n, base=0.025, max=0.25) for n in range(6)]
    assert ceilings == [0.025, 0.05, 0.1, 0.2, 0.25, 0.25]
    assert backoff_ceiling(10**6) == 0.25
    with pytest.raises(InvalidSetting):
        backoff_ceiling(-1)


def test_backoff_is_full_jitter_under_the_ceiling() -> None:
    rng = ScriptedRandom()
    rng.script([0.0, 0.5, 0.999])
    config = BackoffConfig()
    assert config == BackoffConfig(base=0.025, max=0.25)
    assert config.delay(0, rng) == 0.0
    assert config.delay(1, rng) == 0.025
    assert config.delay(5, rng) == pytest.approx(0.24975)
    delays = [backoff_delay(2, rng=random.Random(1)) for _ in range(3)]
    assert all(0 <= d < 0.1 for d in delays)
