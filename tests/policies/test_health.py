"""Active health check config and thresholds on hand-written sequences."""

from __future__ import annotations

import random

import pytest

from policies.errors import ImpossibleTransition, InvalidSetting
from policies.health import (
    CheckResult,
    HealthChanged,
    HealthCheckConfig,
    HealthState,
    HealthThresholds,
    next_check_delay,
    payload_bytes,
    status_expected,
    transition,
)

UNKNOWN, HEALTHY, UNHEALTHY = HealthState.UNKNOWN, HealthState.HEALTHY, HealthState.UNHEALTHY


def run(thresholds: HealthThresholds, results: str) -> list[HealthState]:
    """Feed ``results`` ("+" passed, "-" failed), one a second; the states after each."""
    return [thresholds.record(r == "+", float(t)) for t, r in enumerate(results)]


def test_defaults() -> None:
    config = HealthCheckConfig()
    assert (config.type, config.path, config.host) == ("http", "/healthz", None)
    assert config.expected_statuses == ((200, 399),)
    assert (config.interval, config.interval_jitter, config.timeout) == (5, 0.5, 1)
    assert (config.unhealthy_threshold, config.healthy_threshold) == (3, 2)
    assert config.no_traffic_interval == 60
    assert (config.send, config.expect) == ("", "")


def test_status_ranges_are_inclusive_and_may_be_lists() -> None:
    config = HealthCheckConfig(expected_statuses=[[200, 204], [302, 302]])  # type: ignore[arg-type]
    assert config.expected_statuses == ((200, 204), (302, 302))
    assert [s for s in (199, 200, 204, 205, 301, 302, 303) if status_expected(config, s)] == [
        200,
        204,
        302,
    ]
    assert status_expected(HealthCheckConfig(), 399)
    assert not status_expected(HealthCheckConfig(), 400)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"type": "udp"}, "type"),
        ({"path": "healthz"}, "path"),
        ({"path": "/a b"}, "path"),
        ({"host": ""}, "host"),
        ({"expected_statuses": ()}, "expected_statuses"),
        ({"expected_statuses": ((300, 200),)}, "expected_statuses"),
        ({"expected_statuses": ((200, 600),)}, "expected_statuses"),
        ({"expected_statuses": ((200,),)}, "expected_statuses"),
        ({"interval": 0}, "interval"),
        ({"interval_jitter": -0.1}, "interval_jitter"),
        ({"timeout": 0}, "timeout"),
        ({"unhealthy_threshold": 0}, "unhealthy_threshold"),
        ({"healthy_threshold": 0}, "healthy_threshold"),
        ({"no_traffic_interval": -1}, "no_traffic_interval"),
        ({"type": "tcp", "send": "hex:"}, "send"),
        ({"type": "tcp", "send": "hex:abc"}, "send"),
        ({"type": "tcp", "expect": "hex:zz"}, "expect"),
        ({"send": "PING"}, "send"),  # http checks send no payload
        ({"expect": "PONG"}, "expect"),
    ],
)
def test_a_bad_field_is_named(fields: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidSetting) as caught:
        HealthCheckConfig(**fields)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_tcp_payloads_are_text_or_hex() -> None:
    config = HealthCheckConfig(type="tcp", send="hex:50 49 4e 47", expect="PONG")
    assert config.send_bytes == b"PING"
    assert config.expect_bytes == b"PONG"
    assert payload_bytes("") == b""
    assert payload_bytes("héllo") == "héllo".encode()
    assert payload_bytes("hex:00ff") == b"\x00\xff"


def test_next_check_delay() -> None:
    config = HealthCheckConfig(interval=5, interval_jitter=0.5, no_traffic_interval=60)
    rng = random.Random(7)
    delays = [next_check_delay(config, rng, had_traffic=True) for _ in range(200)]
    assert all(5 <= d < 5.5 for d in delays) and len(set(delays)) > 1
    quiet = [next_check_delay(config, rng, had_traffic=False) for _ in range(200)]
    assert all(60 <= d < 60.5 for d in quiet)
    assert next_check_delay(HealthCheckConfig(interval_jitter=0), rng, True) == 5


def test_a_new_endpoint_is_unknown_serves_and_one_pass_makes_it_healthy() -> None:
    thresholds = HealthThresholds(healthy_threshold=2, unhealthy_threshold=3)
    assert thresholds.state is UNKNOWN and UNKNOWN.serves
    assert run(thresholds, "+") == [HEALTHY]
    assert thresholds.drain_events() == [HealthChanged(UNKNOWN, HEALTHY, 0.0)]


def test_unhealthy_after_the_failures_in_a_row_and_back_after_the_passes() -> None:
    thresholds = HealthThresholds.of(HealthCheckConfig(unhealthy_threshold=3, healthy_threshold=2))
    assert run(thresholds, "+--+---++") == [
        HEALTHY,
        HEALTHY,
        HEALTHY,
        HEALTHY,  # the pass broke the failure streak
        HEALTHY,
        HEALTHY,
        UNHEALTHY,
        UNHEALTHY,
        HEALTHY,
    ]
    assert not UNHEALTHY.serves
    assert [(e.old, e.new, e.at) for e in thresholds.drain_events()] == [
        (UNKNOWN, HEALTHY, 0.0),
        (HEALTHY, UNHEALTHY, 6.0),
        (UNHEALTHY, HEALTHY, 8.0),
    ]


def test_an_unknown_endpoint_fails_into_unhealthy() -> None:
    thresholds = HealthThresholds(healthy_threshold=2, unhealthy_threshold=2)
    assert run(thresholds, "--+-++") == [
        UNKNOWN,
        UNHEALTHY,
        UNHEALTHY,
        UNHEALTHY,
        UNHEALTHY,
        HEALTHY,
    ]


def test_the_table_refuses_what_a_state_cannot_produce() -> None:
    assert transition(HEALTHY, CheckResult.FAILED_ENOUGH) is UNHEALTHY
    for state, result in [
        (UNKNOWN, CheckResult.PASSED),
        (HEALTHY, CheckResult.PASSED_ENOUGH),
        (UNHEALTHY, CheckResult.FAILED_ENOUGH),
    ]:
        with pytest.raises(ImpossibleTransition):
            transition(state, result)
