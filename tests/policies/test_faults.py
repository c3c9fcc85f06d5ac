"""Examples of the fault decision: one draw per request, Envoy's headers, first_n, delays."""

from __future__ import annotations

import random
import statistics

import pytest

from policies.faults import (
    NO_HEADERS,
    FaultAbort,
    FaultDelay,
    FaultHeaders,
    FaultRule,
    Injection,
    LognormalDelay,
    read_fault_headers,
)
from tests.strategies import ScriptedRandom

ABORT = FaultAbort(status=503)
FIXED = FaultDelay(fixed=0.25)


def decide(
    rule: FaultRule, draw: float, *, injected: int = 0, headers: FaultHeaders = NO_HEADERS
) -> Injection | None:
    rng = ScriptedRandom()
    rng.script([draw])
    return rule.decide(injected, headers, rng)


DECISIONS: list[tuple[FaultRule, float, Injection | None]] = [
    # (rule, the request's draw in [0, 1), what it gets)
    (FaultRule(abort=ABORT), 0.999, Injection(abort=ABORT)),
    (FaultRule(percent=10, abort=ABORT), 0.0999, Injection(abort=ABORT)),
    (FaultRule(percent=10, abort=ABORT), 0.1, None),
    (FaultRule(percent=0, abort=ABORT), 0.0, None),
    (FaultRule(delay=FIXED, abort=ABORT), 0.5, Injection(0.25, ABORT)),  # delay, then abort
    (FaultRule(percent=50, delay=FIXED, response_rate_kbps=8), 0.4, Injection(0.25, None, 8)),
    (FaultRule(percent=50, delay=FIXED, response_rate_kbps=8), 0.6, None),
    (FaultRule(headers_enabled=True), 0.0, None),  # no header: nothing asked for
]


@pytest.mark.parametrize(("rule", "draw", "expected"), DECISIONS)
def test_one_draw_decides_the_whole_fault(
    rule: FaultRule, draw: float, expected: Injection | None
) -> None:
    assert decide(rule, draw) == expected


def test_first_n_then_the_fault_passes() -> None:
    rule = FaultRule(first_n=2, abort=ABORT)
    assert decide(rule, 0.5, injected=1) == Injection(abort=ABORT)
    assert decide(rule, 0.5, injected=2) is None
    assert decide(FaultRule(abort=ABORT), 0.5, injected=10**6) == Injection(abort=ABORT)


HEADER_READINGS: list[tuple[list[tuple[bytes, bytes]], FaultHeaders]] = [
    ([], NO_HEADERS),
    (
        [
            (b"X-Envoy-Fault-Delay-Request", b"150"),
            (b"x-envoy-fault-delay-request-percentage", b"20"),
            (b"x-envoy-fault-abort-request", b"418"),
            (b"x-envoy-fault-abort-request-percentage", b"5"),
            (b"x-envoy-fault-throughput-response", b"64"),
        ],
        FaultHeaders(150, 20, 418, 5, 64),
    ),
    # Envoy ignores what does not parse: a status out of 200-599, a rate of 0, words
    ([(b"x-envoy-fault-abort-request", b"199")], NO_HEADERS),
    ([(b"x-envoy-fault-abort-request", b"600")], NO_HEADERS),
    ([(b"x-envoy-fault-throughput-response", b"0")], NO_HEADERS),
    ([(b"x-envoy-fault-delay-request", b"-5")], NO_HEADERS),
    ([(b"x-envoy-fault-delay-request", b"soon")], NO_HEADERS),
    # the first of a repeated header counts
    (
        [(b"x-envoy-fault-delay-request", b"10"), (b"x-envoy-fault-delay-request", b"99")],
        FaultHeaders(delay_ms=10),
    ),
    ([(b"x-other", b"1")], NO_HEADERS),
]


@pytest.mark.parametrize(("headers", "expected"), HEADER_READINGS)
def test_envoy_fault_headers_are_read_as_envoy_reads_them(
    headers: list[tuple[bytes, bytes]], expected: FaultHeaders
) -> None:
    assert read_fault_headers(headers) == expected


def test_headers_replace_the_aspect_they_name_and_their_percentage_is_capped() -> None:
    rule = FaultRule(percent=50, delay=FIXED, headers_enabled=True)
    asked = FaultHeaders(delay_ms=100, abort_status=418, abort_percent=90)
    # the abort's 90% is capped at the fault's 50%
    assert decide(rule, 0.49, headers=asked) == Injection(0.1, FaultAbort(status=418))
    assert decide(rule, 0.5, headers=asked) is None
    # a header percentage below the fault's narrows that aspect only
    narrower = FaultHeaders(abort_status=418, abort_percent=10)
    assert decide(rule, 0.2, headers=narrower) == Injection(0.25, None)
    assert decide(rule, 0.05, headers=narrower) == Injection(0.25, FaultAbort(status=418))
    throughput = FaultHeaders(throughput_kbps=16)
    assert decide(rule, 0.0, headers=throughput) == Injection(0.25, None, 16.0)


def test_headers_do_nothing_unless_enabled() -> None:
    asked = FaultHeaders(delay_ms=100, abort_status=418)
    assert decide(FaultRule(delay=FIXED), 0.0, headers=asked) == Injection(0.25)


def test_delay_distributions() -> None:
    rng = random.Random(7)
    assert FaultDelay(fixed=0.2).seconds(rng) == 0.2
    uniform = [FaultDelay(uniform=(0.1, 0.5)).seconds(rng) for _ in range(2000)]
    assert all(0.1 <= d <= 0.5 for d in uniform)
    assert 0.28 <= statistics.fmean(uniform) <= 0.32
    lognormal = FaultDelay(lognormal=LognormalDelay(median=0.1, sigma=0.5))
    draws = [lognormal.seconds(rng) for _ in range(4000)]
    assert all(d > 0 for d in draws)
    assert 0.09 <= statistics.median(draws) <= 0.11  # fixed seed: the same draws every run


def test_an_abort_names_its_kind() -> None:
    assert FaultAbort(status=503).kind == "status"
    assert FaultAbort(truncate=0.0).kind == "truncate"
    assert FaultAbort(reset=True).kind == "reset"
    assert FaultAbort(status=503, empty=True).kinds() == ["status", "empty"]
