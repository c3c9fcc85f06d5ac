"""The circuit breaker on hand-written timelines: opening, probing, late answers."""

from __future__ import annotations

import pytest

from policies.breaker import (
    BUCKETS,
    BreakerConfig,
    BreakerInput,
    BreakerState,
    CircuitBreaker,
    Outcome,
    Permit,
    StateChanged,
)
from policies.errors import InvalidSetting, PolicyError
from policies.retry import Failure

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
OK, FAIL, GONE = Outcome.SUCCESS, Outcome.FAILURE, Outcome.ABANDONED


def send(breaker: CircuitBreaker, outcome: Outcome, now: float) -> Permit | None:
    permit = breaker.allow(now)
    if permit is not None:
        breaker.record(permit, outcome, now)
    return permit


def tripped(config: BreakerConfig, now: float = 0.0) -> CircuitBreaker:
    breaker = CircuitBreaker(config)
    for _ in range(config.minimum_requests):
        send(breaker, FAIL, now)
    assert breaker.state is OPEN
    breaker.drain_events()
    return breaker


def test_defaults() -> None:
    assert BreakerConfig() == BreakerConfig(
        failure_rate=50,
        window=10,
        minimum_requests=20,
        open_time=5,
        max_open_time=60,
        half_open_requests=3,
        failure_statuses=(502, 503, 504),
    )


def test_outcomes_of_statuses_and_failures() -> None:
    config = BreakerConfig(failure_statuses=[500, 503])
    assert config.failure_statuses == (500, 503)
    assert config.outcome_of(503) is FAIL
    assert config.outcome_of(502) is OK
    assert config.outcome_of(200) is OK
    for failure in Failure:
        assert config.outcome_of(failure) is FAIL


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("failure_rate", 0),
        ("failure_rate", 101),
        ("window", 0),
        ("window", float("inf")),
        ("minimum_requests", 0),
        ("minimum_requests", 2.5),
        ("open_time", -1),
        ("half_open_requests", 0),
        ("failure_statuses", (200, 600)),
        ("failure_statuses", (True,)),
    ],
)
def test_a_bad_field_is_named(field: str, value: object) -> None:
    with pytest.raises(InvalidSetting) as caught:
        BreakerConfig(**{field: value})  # type: ignore[arg-type]
    assert caught.value.field == field
    assert isinstance(caught.value, PolicyError) and isinstance(caught.value, ValueError)


def test_max_open_time_below_open_time_is_refused() -> None:
    with pytest.raises(InvalidSetting, match="max_open_time must be >= open_time"):
        BreakerConfig(open_time=10, max_open_time=5)


def test_never_opens_below_the_minimum_requests() -> None:
    breaker = CircuitBreaker(BreakerConfig(minimum_requests=5))
    for _ in range(4):
        send(breaker, FAIL, 1.0)
    assert breaker.state is CLOSED
    send(breaker, FAIL, 1.0)
    assert breaker.state is OPEN
    assert breaker.drain_events() == [
        StateChanged(CLOSED, OPEN, 1.0, BreakerInput.FAILURE_RATE_EXCEEDED)
    ]


def test_opens_at_the_failure_rate_not_below() -> None:
    breaker = CircuitBreaker(BreakerConfig(minimum_requests=4, failure_rate=50))
    for outcome in (OK, OK, FAIL):
        send(breaker, outcome, 0.0)
    assert breaker.state is CLOSED  # 1 of 3, and too few
    send(breaker, OK, 0.0)
    assert breaker.state is CLOSED  # 1 of 4 = 25%
    send(breaker, FAIL, 0.0)
    assert breaker.state is CLOSED  # 2 of 5 = 40%
    send(breaker, FAIL, 0.0)
    assert breaker.state is OPEN  # 3 of 6 = 50%


def test_the_success_that_makes_the_minimum_can_open() -> None:
    breaker = CircuitBreaker(BreakerConfig(minimum_requests=3, failure_rate=50))
    for outcome in (FAIL, FAIL):
        send(breaker, outcome, 0.0)
    assert breaker.state is CLOSED
    send(breaker, OK, 0.0)
    assert breaker.state is OPEN  # 2 of 3 failed


def test_old_outcomes_leave_the_window() -> None:
    config = BreakerConfig(minimum_requests=4, window=10)
    breaker = CircuitBreaker(config)
    for _ in range(3):
        send(breaker, FAIL, 0.0)
    assert breaker.window(9.0).requests == 3
    assert breaker.window(10.0).requests == 0  # a whole window later
    send(breaker, FAIL, 10.0)
    assert breaker.state is CLOSED  # the three early failures no longer count
    assert breaker.window(10.0) == breaker.window(10.5)


def test_the_window_keeps_at_most_buckets_buckets() -> None:
    breaker = CircuitBreaker(BreakerConfig(minimum_requests=10**6))
    for step in range(1000):
        send(breaker, OK, step * 0.37)
    assert len(breaker._buckets) <= BUCKETS


def test_fails_fast_while_open_then_half_opens_lazily() -> None:
    breaker = tripped(BreakerConfig(open_time=5), now=2.0)
    assert breaker.open_until == 7.0
    assert breaker.allow(6.99) is None
    assert breaker.state is OPEN
    permit = breaker.allow(7.0)
    assert permit is not None and permit.probe
    assert breaker.state is HALF_OPEN
    assert breaker.drain_events() == [
        StateChanged(OPEN, HALF_OPEN, 7.0, BreakerInput.OPEN_TIME_ELAPSED)
    ]


def test_half_open_admits_at_most_the_probes_and_closes_when_all_pass() -> None:
    breaker = tripped(BreakerConfig(half_open_requests=3))
    permits = [breaker.allow(5.0) for _ in range(3)]
    assert all(p is not None and p.probe for p in permits)
    assert breaker.allow(5.0) is None
    for permit in permits[:2]:
        assert permit is not None
        breaker.record(permit, OK, 5.5)
    assert breaker.state is HALF_OPEN
    assert breaker.allow(5.5) is None  # passed probes still count against the limit
    assert permits[2] is not None
    breaker.record(permits[2], OK, 6.0)
    assert breaker.state is CLOSED
    assert breaker.open_time == 5.0
    assert [e.new for e in breaker.drain_events()] == [HALF_OPEN, CLOSED]


def test_a_failed_probe_reopens_for_twice_as_long_up_to_the_cap() -> None:
    breaker = tripped(BreakerConfig(open_time=5, max_open_time=30))
    now = 0.0
    lengths = []
    for _ in range(5):
        now = breaker.open_until or now
        permit = breaker.allow(now)
        assert permit is not None
        breaker.record(permit, FAIL, now)
        assert breaker.state is OPEN
        lengths.append(breaker.open_time)
    assert lengths == [10, 20, 30, 30, 30]


def test_closing_resets_the_open_time() -> None:
    config = BreakerConfig(open_time=5, half_open_requests=1, minimum_requests=1)
    breaker = tripped(config)
    permit = breaker.allow(5.0)
    assert permit is not None
    breaker.record(permit, FAIL, 5.0)
    assert breaker.open_time == 10
    permit = breaker.allow(15.0)
    assert permit is not None
    breaker.record(permit, OK, 15.0)
    assert breaker.state is CLOSED
    send(breaker, FAIL, 16.0)
    assert breaker.state is OPEN and breaker.open_until == 21.0


def test_an_abandoned_probe_frees_its_slot() -> None:
    breaker = tripped(BreakerConfig(half_open_requests=1))
    permit = breaker.allow(5.0)
    assert permit is not None and breaker.allow(5.0) is None
    breaker.record(permit, GONE, 5.0)
    assert breaker.state is HALF_OPEN
    assert breaker.allow(5.0) is not None


def test_abandoned_requests_do_not_count_while_closed() -> None:
    breaker = CircuitBreaker(BreakerConfig(minimum_requests=1))
    send(breaker, GONE, 0.0)
    assert breaker.window(0.0).requests == 0


def test_a_late_answer_from_the_closed_era_cannot_close_or_spend_a_probe() -> None:
    config = BreakerConfig(minimum_requests=2, half_open_requests=1)
    breaker = CircuitBreaker(config)
    slow = breaker.allow(0.0)
    assert slow is not None
    send(breaker, FAIL, 0.0)
    send(breaker, FAIL, 0.0)
    assert breaker.state is OPEN
    probe = breaker.allow(5.0)
    assert probe is not None and breaker.state is HALF_OPEN
    breaker.record(slow, OK, 5.1)  # late; would close the breaker if it counted
    assert breaker.state is HALF_OPEN
    breaker.record(slow, FAIL, 5.1)  # nor may it reopen it
    assert breaker.state is HALF_OPEN
    breaker.record(probe, OK, 5.2)
    assert breaker.state is CLOSED


def test_a_late_probe_answer_after_reopening_is_dropped() -> None:
    breaker = tripped(BreakerConfig(half_open_requests=2))
    first, second = breaker.allow(5.0), breaker.allow(5.0)
    assert first is not None and second is not None
    breaker.record(first, FAIL, 5.0)
    assert breaker.state is OPEN
    breaker.record(second, OK, 5.1)
    assert breaker.state is OPEN and breaker.open_time == 10


def test_state_at_reads_the_half_open_without_admitting() -> None:
    breaker = tripped(BreakerConfig(half_open_requests=1))
    assert breaker.state_at(4.0) is OPEN
    assert breaker.state_at(5.0) is HALF_OPEN
    assert breaker.allow(5.0) is not None
