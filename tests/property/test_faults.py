"""The fault decision against an oracle of its rules, its shares against ``percent``, and
a machine that replaces faults and sends requests: ``first_n`` is exact."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from policies.faults import (
    NO_HEADERS,
    FaultAbort,
    FaultDelay,
    FaultHeaders,
    FaultRule,
    LognormalDelay,
)
from tests.strategies import ScriptedRandom, at_most, seeds, share_tolerance

percents = st.one_of(st.sampled_from([0.0, 100.0]), st.floats(0, 100))
delays = st.one_of(
    st.none(),
    st.floats(0, 5).map(lambda s: FaultDelay(fixed=s)),
    st.tuples(st.floats(0, 1), st.floats(0, 1)).map(lambda p: FaultDelay(uniform=(min(p), max(p)))),
    st.tuples(st.floats(0.001, 1), st.floats(0, 2)).map(
        lambda p: FaultDelay(lognormal=LognormalDelay(median=p[0], sigma=p[1]))
    ),
)
aborts = st.one_of(
    st.none(),
    st.integers(200, 599).map(lambda s: FaultAbort(status=s)),
    st.sampled_from(
        [
            FaultAbort(reset=True),
            FaultAbort(empty=True),
            FaultAbort(garbage=True),
            FaultAbort(truncate=0.5),
        ]
    ),
)
rules = st.builds(
    FaultRule,
    percent=percents,
    first_n=st.integers(0, 5),
    delay=delays,
    abort=aborts,
    response_rate_kbps=st.sampled_from([0.0, 8.0]),
    headers_enabled=st.booleans(),
)
fault_headers = st.builds(
    FaultHeaders,
    delay_ms=st.none() | st.integers(0, 10_000),
    delay_percent=st.none() | st.integers(0, 200),
    abort_status=st.none() | st.integers(200, 599),
    abort_percent=st.none() | st.integers(0, 200),
    throughput_kbps=st.none() | st.integers(1, 1000),
)
draws = st.floats(0.0, 1.0, exclude_max=True)


def oracle(
    rule: FaultRule, injected: int, headers: FaultHeaders, u: float
) -> tuple[bool, FaultAbort | None, float] | None:
    """(delayed, abort, rate) for the draw ``u``, by the rules in the module docstring."""
    if rule.first_n and injected >= rule.first_n:
        return None
    point = 100 * u
    delay_on = rule.delay is not None and point < rule.percent
    abort = rule.abort if point < rule.percent else None
    rate = rule.response_rate_kbps if point < rule.percent else 0.0
    if rule.headers_enabled:
        if headers.delay_ms is not None:
            share = (
                min(headers.delay_percent, rule.percent)
                if headers.delay_percent is not None
                else rule.percent
            )
            delay_on = point < share and headers.delay_ms > 0
        if headers.abort_status is not None:
            share = (
                min(headers.abort_percent, rule.percent)
                if headers.abort_percent is not None
                else rule.percent
            )
            abort = FaultAbort(status=headers.abort_status) if point < share else None
        if headers.throughput_kbps is not None and point < rule.percent:
            rate = float(headers.throughput_kbps)
    return (delay_on, abort, rate)


@given(rule=rules, injected=st.integers(0, 10), headers=fault_headers, u=draws, seed=seeds)
def test_decide_follows_its_rules(
    rule: FaultRule, injected: int, headers: FaultHeaders, u: float, seed: int
) -> None:
    rng = ScriptedRandom(seed)
    rng.script([u])
    got = rule.decide(injected, headers, rng)
    expected = oracle(rule, injected, headers, u)
    if got is None:
        assert (
            expected is None
            or expected == (False, None, 0.0)
            or _zero_delay_only(rule, expected, headers)
        )
        return
    assert expected is not None
    delayed, abort, rate = expected
    assert (got.abort, got.rate_kbps) == (abort, rate)
    assert (got.delay > 0) <= delayed
    assert got.delay >= 0 and (got.delay > 0 or got.abort is not None or got.rate_kbps > 0)
    if (
        got.delay
        and rule.delay is not None
        and rule.delay.uniform
        and not (rule.headers_enabled and headers.delay_ms is not None)
    ):
        low, high = rule.delay.uniform
        assert low <= got.delay <= high


def _zero_delay_only(
    rule: FaultRule, expected: tuple[bool, FaultAbort | None, float], headers: FaultHeaders
) -> bool:
    """A decision whose only fault is a delay drawn as 0 s is no injection."""
    delayed, abort, rate = expected
    return delayed and abort is None and not rate


@given(percent=st.floats(0, 100), seed=seeds)
@at_most(30)
def test_a_fault_takes_its_percent_of_requests(percent: float, seed: int) -> None:
    rule = FaultRule(percent=percent, abort=FaultAbort(status=503))
    rng = random.Random(seed)
    requests = 4000
    hits = sum(rule.decide(0, NO_HEADERS, rng) is not None for _ in range(requests))
    share = percent / 100
    assert abs(hits / requests - share) <= share_tolerance(requests, share)


class FaultMachine(RuleBasedStateMachine):
    """A fault replaced now and then; requests with and without Envoy's headers.

    The caller's side of ``first_n``: count an injection when it is applied, start again
    when the fault is replaced. Invariant: never more than ``first_n`` injections, and
    with ``percent`` 100 and an abort every request until then gets one.
    """

    @initialize(fault=rules, seed=seeds)
    def start(self, fault: FaultRule, seed: int) -> None:
        self.rule = fault
        self.rng = random.Random(seed)
        self.injected = 0
        self.taken_in_a_row = True

    @rule(fault=rules)
    def replace(self, fault: FaultRule) -> None:
        self.rule = fault
        self.injected = 0

    @rule(headers=st.just(NO_HEADERS) | fault_headers, skipped=st.booleans())
    def request(self, headers: FaultHeaders, skipped: bool) -> None:
        rule_ = self.rule
        got = rule_.decide(self.injected, headers, self.rng)
        certain = (
            rule_.percent == 100
            and rule_.abort is not None
            and not (rule_.headers_enabled and headers.abort_status is not None)
        )
        if certain and (rule_.first_n == 0 or self.injected < rule_.first_n):
            assert got is not None and got.abort == rule_.abort
        if got is not None and not skipped:  # a skipped one (max_active_faults) is not counted
            self.injected += 1

    @invariant()
    def first_n_is_a_cap(self) -> None:
        if self.rule.first_n:
            assert self.injected <= self.rule.first_n


TestFaultMachine = FaultMachine.TestCase
