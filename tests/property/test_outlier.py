"""The outlier detector driven by results, sweeps, health checks and membership changes.

The oracle follows the detector through its events and checks: the cap (never more
than ``max_ejection_percent`` of the endpoints out, except that one may always be),
each ejection's length (``base * times`` capped, the multiplier growing by at most one
per ejection), that every ejected endpoint returns once its time has passed and not
before (unless a health check passed), and that a streak of 5xx or gateway failures
ejects at once when the cap leaves room.
"""

from __future__ import annotations

import collections
import itertools
import math
from fractions import Fraction

import hypothesis
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from policies.errors import ImpossibleTransition
from policies.outlier import (
    GATEWAY_FAILURES,
    TRANSITIONS,
    EjectionReason,
    EjectionState,
    EjectionTrigger,
    EndpointEjected,
    EndpointReturned,
    OutlierConfig,
    OutlierDetector,
    transition,
)
from policies.retry import Failure
from tests.strategies import outlier_configs

SERVING, EJECTED = EjectionState.SERVING, EjectionState.EJECTED

LEGAL = {
    (SERVING, EjectionTrigger.OUTLIER_FOUND): EJECTED,
    (EJECTED, EjectionTrigger.EJECTION_ENDED): SERVING,
    (EJECTED, EjectionTrigger.HEALTH_CHECK_PASSED): SERVING,
}

KEYS = [f"10.0.0.{i}:80" for i in range(8)]
results = st.sampled_from([200, 204, 404, 500, 501, 502, 503, 504, *Failure])
steps = st.sampled_from([0.0, 0.5, 1.0, 5.0, 10.0, 30.0]) | st.floats(0.0, 60.0)


def is_5xx(result: int | Failure) -> bool:
    return isinstance(result, Failure) or 500 <= result <= 599


def is_gateway_failure(result: int | Failure) -> bool:
    return isinstance(result, Failure) or result in GATEWAY_FAILURES


class OutlierMachine(RuleBasedStateMachine):
    @initialize(config=outlier_configs(), size=st.integers(1, len(KEYS)))
    def new_detector(self, config: OutlierConfig, size: int) -> None:
        self.config = config
        self.hosts = set(KEYS[:size])
        self.now = 0.0
        self.detector = OutlierDetector(config, self.hosts, now=self.now)
        # the oracle
        self.out: dict[str, EndpointEjected] = {}
        self.last_times: dict[str, int] = {}
        self.streak_5xx = dict.fromkeys(self.hosts, 0)
        self.streak_gateway = dict.fromkeys(self.hosts, 0)

    def follow(self, event: EndpointEjected | EndpointReturned) -> None:
        config = self.config
        assert event.host in self.hosts
        assert event.at <= self.now
        if isinstance(event, EndpointEjected):
            hypothesis.event(f"ejected: {event.reason.value}")
            assert event.host not in self.out
            # the cap, with the one-endpoint exception
            assert len(self.out) < config.max_ejected(len(self.hosts))
            assert len(self.out) + 1 <= max(
                1, math.floor(len(self.hosts) * config.max_ejection_percent / 100)
            )
            # the length: base * times, capped; times grows by at most one
            cap = max(config.base_ejection_time, config.max_ejection_time)
            assert event.until == event.at + min(config.base_ejection_time * event.times, cap)
            assert 1 <= event.times <= self.last_times.get(event.host, 0) + 1
            assert event.times <= math.ceil(cap / config.base_ejection_time)
            assert event.at == self.now
            self.last_times[event.host] = event.times
            self.out[event.host] = event
            self.streak_5xx[event.host] = self.streak_gateway[event.host] = 0
        else:
            ejection = self.out.pop(event.host)
            hypothesis.event(f"returned: {event.trigger.value}")
            if event.trigger is EjectionTrigger.EJECTION_ENDED:
                assert event.at == ejection.until
            else:
                assert event.at == self.now < ejection.until

    def follow_events(self) -> None:
        for event in self.detector.drain_events():
            self.follow(event)

    # -- rules -----------------------------------------------------------------------

    @rule(dt=steps)
    def advance_clock(self, dt: float) -> None:
        self.now += dt

    @rule(host=st.sampled_from(KEYS), result=results)
    def record(self, host: str, result: int | Failure) -> None:
        self.detector.record(host, result, self.now)
        self.judge_streaks([(host, result)])

    @rule(batch=st.lists(st.tuples(st.sampled_from(KEYS), results), max_size=12))
    def record_many(self, batch: list[tuple[str, int | Failure]]) -> None:
        self.detector.record_many(batch, self.now)
        self.judge_streaks(batch)

    def judge_streaks(self, batch: list[tuple[str, int | Failure]]) -> None:
        """Replay the results one by one: a streak ejects at once iff the cap has room."""
        events = collections.deque(self.detector.drain_events())
        # the ejections whose time has passed end first, before any result is judged
        while events and isinstance(events[0], EndpointReturned):
            assert events[0].trigger is EjectionTrigger.EJECTION_ENDED
            self.follow(events.popleft())
        for host, result in batch:
            if host not in self.hosts:
                continue  # a removed endpoint's late result
            self.streak_5xx[host] = self.streak_5xx[host] + 1 if is_5xx(result) else 0
            gateway_failed = is_gateway_failure(result)
            self.streak_gateway[host] = self.streak_gateway[host] + 1 if gateway_failed else 0
            if host in self.out:
                continue
            gateway = 0 < self.config.consecutive_gateway_failure <= self.streak_gateway[host]
            server = 0 < self.config.consecutive_5xx <= self.streak_5xx[host]
            if (gateway or server) and len(self.out) < self.config.max_ejected(len(self.hosts)):
                assert events, "a streak must eject at once"
                event = events.popleft()
                assert isinstance(event, EndpointEjected) and event.host == host
                assert event.reason is (
                    EjectionReason.CONSECUTIVE_GATEWAY_FAILURE
                    if gateway
                    else EjectionReason.CONSECUTIVE_5XX
                )
                self.follow(event)
        assert not events, f"events no result called for: {list(events)}"

    @rule()
    def tick(self) -> None:
        self.detector.tick(self.now)
        self.follow_events()
        assert self.detector.next_tick() > self.now

    @precondition(lambda self: self.out)
    @rule(data=st.data())
    def health_check_passes(self, data: st.DataObject) -> None:
        host = data.draw(st.sampled_from(sorted(self.hosts)))
        self.detector.uneject(host, self.now)
        self.follow_events()
        assert host not in self.out

    @rule(size=st.integers(1, len(KEYS)), offset=st.integers(0, len(KEYS) - 1))
    def change_membership(self, size: int, offset: int) -> None:
        hosts = {KEYS[(offset + i) % len(KEYS)] for i in range(size)}
        self.detector.set_hosts(hosts)
        assert not self.detector.drain_events()
        for host in self.hosts - hosts:
            self.out.pop(host, None)
            self.last_times.pop(host, None)
        for host in hosts - self.hosts:
            self.streak_5xx[host] = self.streak_gateway[host] = 0
        self.hosts = hosts

    @rule()
    def look(self) -> None:
        ejected = self.detector.ejected(self.now)
        self.follow_events()
        assert ejected == set(self.out)
        # every ejected endpoint returns once its time passes, and not before
        assert all(self.now < e.until for e in self.out.values())

    @invariant()
    def multipliers_stay_in_range(self) -> None:
        cap = max(self.config.base_ejection_time, self.config.max_ejection_time)
        for host in self.hosts:
            assert 0 <= self.detector.times(host) <= math.ceil(cap / self.config.base_ejection_time)


TestOutlierDetector = OutlierMachine.TestCase


@given(
    counts=st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), min_size=1, max_size=8),
    stdev_factor=st.sampled_from([0, 500, 1000, 1900, 3000]),
    sr_minimum_hosts=st.integers(1, 5),
    sr_volume=st.integers(1, 40),
    fp_threshold=st.integers(0, 100),
    fp_minimum_hosts=st.integers(1, 5),
    fp_volume=st.integers(1, 40),
)
def test_a_sweep_ejects_exactly_the_outliers(
    counts: list[tuple[int, int]],
    stdev_factor: int,
    sr_minimum_hosts: int,
    sr_volume: int,
    fp_threshold: int,
    fp_minimum_hosts: int,
    fp_volume: int,
) -> None:
    """Success rate and failure percentage against Envoy's formulas, in exact arithmetic."""
    config = OutlierConfig(
        consecutive_5xx=0,
        consecutive_gateway_failure=0,
        max_ejection_percent=100,
        success_rate_minimum_hosts=sr_minimum_hosts,
        success_rate_request_volume=sr_volume,
        success_rate_stdev_factor=stdev_factor,
        failure_percentage_threshold=fp_threshold,
        failure_percentage_minimum_hosts=fp_minimum_hosts,
        failure_percentage_request_volume=fp_volume,
    )
    hosts = KEYS[: len(counts)]
    detector = OutlierDetector(config, hosts, now=0.0)
    for host, (ok, failed) in zip(hosts, counts, strict=True):
        detector.record_many([(host, 200)] * ok + [(host, 503)] * failed, 1.0)
    detector.tick(config.interval)

    expected: dict[str, EjectionReason] = {}
    rates = {
        host: Fraction(100 * ok, ok + failed)
        for host, (ok, failed) in zip(hosts, counts, strict=True)
        if ok + failed >= sr_volume
    }
    if rates and len(rates) >= sr_minimum_hosts:
        mean = sum(rates.values(), Fraction(0)) / len(rates)
        variance = sum(((r - mean) ** 2 for r in rates.values()), Fraction(0)) / len(rates)
        threshold = float(mean) - stdev_factor / 1000 * math.sqrt(variance)
        for host, rate in rates.items():
            assume(abs(float(rate) - threshold) > 1e-9)  # no coin flips at the boundary
            if rate < threshold:
                expected[host] = EjectionReason.SUCCESS_RATE
    failing = {
        host: Fraction(100 * failed, ok + failed)
        for host, (ok, failed) in zip(hosts, counts, strict=True)
        if ok + failed >= fp_volume
    }
    if failing and len(failing) >= fp_minimum_hosts:
        for host, percent in failing.items():
            if percent >= fp_threshold:
                expected.setdefault(host, EjectionReason.FAILURE_PERCENTAGE)
    ejected = {e.host: e.reason for e in detector.drain_events() if isinstance(e, EndpointEjected)}
    assert ejected == expected


@pytest.mark.parametrize(
    ("state", "trigger"), list(itertools.product(EjectionState, EjectionTrigger))
)
def test_every_state_and_trigger(state: EjectionState, trigger: EjectionTrigger) -> None:
    if (state, trigger) in LEGAL:
        assert transition(state, trigger) is LEGAL[state, trigger]
    else:
        with pytest.raises(ImpossibleTransition):
            transition(state, trigger)


def test_the_table_is_exactly_the_documented_transitions() -> None:
    assert TRANSITIONS == LEGAL
