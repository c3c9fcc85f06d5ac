"""Outlier detection on Envoy's own examples: who is ejected, for how long, how many."""

from __future__ import annotations

import pytest

from policies.errors import ImpossibleTransition, InvalidSetting
from policies.outlier import (
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

HOSTS = [f"10.0.0.{i}:80" for i in range(1, 6)]
BAD = HOSTS[0]


def ejections(detector: OutlierDetector) -> list[EndpointEjected]:
    return [e for e in detector.drain_events() if isinstance(e, EndpointEjected)]


def feed(detector: OutlierDetector, host: str, ok: int, failed: int, now: float) -> None:
    detector.record_many([(host, 200)] * ok + [(host, 500)] * failed, now)


def test_defaults_are_envoys() -> None:
    config = OutlierConfig()
    assert (config.consecutive_5xx, config.consecutive_gateway_failure) == (5, 5)
    assert (config.interval, config.base_ejection_time, config.max_ejection_time) == (10, 30, 300)
    assert config.max_ejection_percent == 10
    assert (config.success_rate_minimum_hosts, config.success_rate_request_volume) == (5, 100)
    assert config.success_rate_stdev_factor == 1900
    assert config.failure_percentage_threshold == 85
    assert config.failure_percentage_minimum_hosts == 5
    assert config.failure_percentage_request_volume == 50


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("consecutive_5xx", -1),
        ("interval", 0),
        ("base_ejection_time", -30),
        ("max_ejection_percent", 101),
        ("success_rate_request_volume", 0),
        ("failure_percentage_threshold", -1),
        ("success_rate_stdev_factor", 1.5),
    ],
)
def test_a_bad_field_is_named(field: str, value: object) -> None:
    with pytest.raises(InvalidSetting) as caught:
        OutlierConfig(**{field: value})  # type: ignore[arg-type]
    assert caught.value.field == field


def test_five_5xx_in_a_row_eject_at_once() -> None:
    detector = OutlierDetector(OutlierConfig(consecutive_gateway_failure=0), HOSTS)
    for _ in range(4):
        detector.record(BAD, 500, 1.0)
    detector.record(BAD, 200, 1.0)  # a success breaks the streak
    for _ in range(4):
        detector.record(BAD, 500, 2.0)
    assert detector.ejected(2.0) == frozenset()
    detector.record(BAD, 500, 2.0)
    assert ejections(detector) == [
        EndpointEjected(BAD, EjectionReason.CONSECUTIVE_5XX, 2.0, 32.0, 1)
    ]
    assert detector.ejected(2.0) == {BAD}


def test_gateway_failures_and_connect_failures_count_as_gateway_failures() -> None:
    detector = OutlierDetector(
        OutlierConfig(consecutive_5xx=0, consecutive_gateway_failure=3), HOSTS
    )
    detector.record_many([(BAD, 502), (BAD, Failure.CONNECT), (BAD, 500)], 1.0)
    assert not detector.drain_events()  # the 500 broke the gateway streak
    detector.record_many([(BAD, 503), (BAD, Failure.RESET), (BAD, 504)], 1.0)
    [ejected] = ejections(detector)
    assert ejected.reason is EjectionReason.CONSECUTIVE_GATEWAY_FAILURE


def test_success_rate_ejects_the_one_bad_host_among_five() -> None:
    config = OutlierConfig(consecutive_5xx=0, consecutive_gateway_failure=0)
    detector = OutlierDetector(config, HOSTS, now=0.0)
    for host in HOSTS[1:]:
        feed(detector, host, ok=100, failed=0, now=5.0)
    feed(detector, BAD, ok=50, failed=50, now=5.0)
    detector.tick(9.9)
    assert not detector.drain_events()  # not an interval yet
    detector.tick(10.0)
    # rates 50, 100, 100, 100, 100: mean 90, stdev 20, threshold 90 - 1.9 * 20 = 52
    assert ejections(detector) == [EndpointEjected(BAD, EjectionReason.SUCCESS_RATE, 10.0, 40.0, 1)]


def test_success_rate_needs_the_minimum_hosts_with_volume() -> None:
    config = OutlierConfig(consecutive_5xx=0, consecutive_gateway_failure=0)
    detector = OutlierDetector(config, HOSTS)
    for host in HOSTS[1:4]:
        feed(detector, host, ok=100, failed=0, now=1.0)
    feed(detector, HOSTS[4], ok=99, failed=0, now=1.0)  # one short of the volume
    feed(detector, BAD, ok=0, failed=100, now=1.0)
    detector.tick(10.0)
    # only four hosts qualify for success rate; failure percentage needs five with 50
    # results and has them (99 >= 50), and BAD fails 100% >= 85%
    [ejected] = ejections(detector)
    assert ejected.reason is EjectionReason.FAILURE_PERCENTAGE


def test_failure_percentage_ejects_at_the_threshold() -> None:
    config = OutlierConfig(
        consecutive_5xx=0,
        consecutive_gateway_failure=0,
        success_rate_minimum_hosts=100,  # success rate never judges
        failure_percentage_minimum_hosts=4,
        max_ejection_percent=100,
    )
    detector = OutlierDetector(config, HOSTS)
    feed(detector, HOSTS[0], ok=15, failed=85, now=1.0)  # 85%: ejected
    feed(detector, HOSTS[1], ok=16, failed=84, now=1.0)  # 84%: stays
    feed(detector, HOSTS[2], ok=0, failed=49, now=1.0)  # 100% but under the volume
    for host in HOSTS[3:]:
        feed(detector, host, ok=50, failed=0, now=1.0)
    detector.tick(10.0)
    assert [e.host for e in ejections(detector)] == [HOSTS[0]]


def test_failure_percentage_needs_the_minimum_hosts() -> None:
    config = OutlierConfig(consecutive_5xx=0, consecutive_gateway_failure=0)
    detector = OutlierDetector(config, HOSTS[:4])
    feed(detector, HOSTS[0], ok=0, failed=100, now=1.0)
    for host in HOSTS[1:4]:
        feed(detector, host, ok=100, failed=0, now=1.0)
    detector.tick(10.0)
    assert not detector.drain_events()


def test_ten_percent_of_three_hosts_still_allows_one_ejection() -> None:
    detector = OutlierDetector(OutlierConfig(max_ejection_percent=10), HOSTS[:3])
    for host in HOSTS[:2]:
        detector.record_many([(host, 503)] * 5, 1.0)
    assert [e.host for e in ejections(detector)] == [HOSTS[0]]
    assert detector.ejected(1.0) == {HOSTS[0]}
    # the second host's fifth failure found it an outlier; the cap left it in service
    assert detector.overflows == 1


def test_a_sweep_ejects_the_worst_first_when_the_cap_leaves_room_for_few() -> None:
    config = OutlierConfig(
        consecutive_5xx=0,
        consecutive_gateway_failure=0,
        success_rate_minimum_hosts=100,
        failure_percentage_threshold=50,
    )
    detector = OutlierDetector(config, HOSTS)  # 10% of 5: one ejection
    feed(detector, HOSTS[0], ok=40, failed=60, now=1.0)
    feed(detector, HOSTS[1], ok=10, failed=90, now=1.0)
    for host in HOSTS[2:]:
        feed(detector, host, ok=100, failed=0, now=1.0)
    detector.tick(10.0)
    assert [e.host for e in ejections(detector)] == [HOSTS[1]]


def test_the_cap_allows_the_percentage_of_hosts() -> None:
    hosts = [f"h{i}" for i in range(10)]
    detector = OutlierDetector(OutlierConfig(max_ejection_percent=30), hosts)
    for host in hosts:
        detector.record_many([(host, 503)] * 5, 1.0)
    assert len(detector.ejected(1.0)) == 3


def test_ejection_time_grows_by_the_base_and_is_capped() -> None:
    detector = OutlierDetector(OutlierConfig(), HOSTS)
    now = 0.0
    lengths = []
    for _ in range(12):
        detector.record_many([(BAD, 503)] * 5, now)
        [ejected] = ejections(detector)
        lengths.append(ejected.until - ejected.at)
        now = ejected.until
        assert detector.ejected(now) == frozenset()
    assert lengths == [30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 300, 300]


def test_an_ejected_host_returns_when_its_time_passes() -> None:
    detector = OutlierDetector(OutlierConfig(), HOSTS)
    detector.record_many([(BAD, 503)] * 5, 3.0)
    detector.drain_events()
    assert detector.next_tick() == 10.0
    detector.tick(10.0)
    assert detector.next_tick() == 20.0
    detector.tick(32.9)
    assert detector.ejected(32.9) == {BAD}
    detector.tick(40.0)
    assert detector.drain_events() == [EndpointReturned(BAD, 33.0, EjectionTrigger.EJECTION_ENDED)]
    assert detector.ejected(40.0) == frozenset()


def test_a_passing_health_check_ends_an_ejection_early() -> None:
    detector = OutlierDetector(OutlierConfig(), HOSTS)
    detector.record_many([(BAD, 503)] * 5, 0.0)
    detector.uneject(HOSTS[1], 1.0)  # not ejected: nothing happens
    detector.uneject(BAD, 2.0)
    events = detector.drain_events()
    assert events[-1] == EndpointReturned(BAD, 2.0, EjectionTrigger.HEALTH_CHECK_PASSED)
    assert len(events) == 2
    assert detector.ejected(2.0) == frozenset()


def test_the_multiplier_decays_while_the_host_stays_healthy() -> None:
    detector = OutlierDetector(OutlierConfig(), HOSTS)
    detector.record_many([(BAD, 503)] * 5, 0.0)  # 30 s, until 30
    detector.tick(31.0)  # back at 30; sweep
    detector.record_many([(BAD, 503)] * 5, 31.0)  # 60 s, until 91
    assert detector.times(BAD) == 2
    detector.tick(91.0)  # back at 91; the sweep finds it back for 0 s: no decay
    assert detector.times(BAD) == 2
    detector.tick(101.0)  # back for an interval: decays
    assert detector.times(BAD) == 1
    detector.tick(111.0)
    assert detector.times(BAD) == 0
    detector.tick(121.0)
    assert detector.times(BAD) == 0
    detector.record_many([(BAD, 503)] * 5, 121.0)
    [*_, ejected] = ejections(detector)
    assert (ejected.times, ejected.until) == (1, 151.0)


def test_an_ejected_host_is_not_judged_again() -> None:
    detector = OutlierDetector(OutlierConfig(max_ejection_percent=100), HOSTS)
    detector.record_many([(BAD, 503)] * 12, 0.0)
    assert len(ejections(detector)) == 1


def test_membership_changes() -> None:
    detector = OutlierDetector(OutlierConfig(), HOSTS[:2])
    detector.record_many([(HOSTS[0], 503)] * 5, 0.0)
    detector.set_hosts(HOSTS[1:3])
    assert detector.hosts == {HOSTS[1], HOSTS[2]}
    assert detector.ejected(0.0) == frozenset()  # forgotten with the host
    detector.record(HOSTS[0], 503, 0.0)  # a late result for a removed host: ignored
    detector.set_hosts(HOSTS[:3])
    assert detector.times(HOSTS[0]) == 0  # comes back clean


def test_the_ejection_table() -> None:
    assert transition(EjectionState.SERVING, EjectionTrigger.OUTLIER_FOUND) is EjectionState.EJECTED
    with pytest.raises(ImpossibleTransition):
        transition(EjectionState.SERVING, EjectionTrigger.EJECTION_ENDED)
