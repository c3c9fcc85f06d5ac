"""Shared Hypothesis strategies, and the test doubles and bounds that go with them.

Host keys are unique ``10.x.y.z:port`` addresses. Statistical tests draw a seed per
example and run a fixed number of picks, so every example is deterministic; the bound
each test checks comes from ``share_tolerance`` and is chosen so that a correct
balancer fails it with probability below 1e-9 per host per example.

For HTTP/1: header names and values as a peer may send them, body pieces, and the
ways one byte stream can arrive (``splits``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from itertools import pairwise
from typing import Any

import attrs
from hypothesis import settings
from hypothesis import strategies as st

from policies.backoff import BackoffConfig
from policies.balancing import POLICY_NAMES, BalancerOptions
from policies.breaker import BreakerConfig
from policies.health import HealthCheckConfig
from policies.hosts import Host, HostSet
from policies.limits import CircuitBreakerThresholds, RetryBudget
from policies.outlier import OutlierConfig
from policies.rollout import RolloutGates, RolloutPlan

__all__ = [
    "MatchRequest",
    "ScriptedRandom",
    "at_most",
    "backoff_configs",
    "balancer_options",
    "body_pieces",
    "breaker_configs",
    "header_names",
    "header_values",
    "health_check_configs",
    "host_keys",
    "host_lists",
    "host_sets",
    "localities",
    "outlier_configs",
    "policies",
    "retry_budgets",
    "seeds",
    "share_tolerance",
    "splits",
    "thresholds",
    "weights",
]

seeds = st.integers(min_value=0, max_value=2**32 - 1)
policies = st.sampled_from(POLICY_NAMES)
weights = st.integers(min_value=1, max_value=10)
localities = st.sampled_from(["", "us-east-1a", "us-east-1b", "us-east-1c"])


def at_most(examples: int, **overrides: Any) -> settings:
    """The active profile's settings, with at most ``examples`` examples.

    For the expensive tests (many picks, or table builds per example): ``dev`` and
    ``ci`` still differ, and the ``ci`` total stays within its time budget.
    """
    current = settings()
    return settings(current, max_examples=min(current.max_examples, examples), **overrides)


_PREFERRED = st.just(0)
_NOWHERE = st.just("")
_HEALTHY = st.just(True)
_LONG_AGO = st.just(0.0)


def _address(n: int) -> str:
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}:{8000 + (n >> 24)}"


def host_keys(*, min_size: int = 1, max_size: int = 12) -> st.SearchStrategy[list[str]]:
    """Distinct ``host:port`` keys."""
    return st.lists(
        st.integers(0, 2**26 - 1), min_size=min_size, max_size=max_size, unique=True
    ).map(lambda ns: [_address(n) for n in ns])


@st.composite
def host_lists(
    draw: st.DrawFn,
    *,
    min_size: int = 1,
    max_size: int = 12,
    weight: st.SearchStrategy[int] = weights,
    priority: st.SearchStrategy[int] = _PREFERRED,
    locality: st.SearchStrategy[str] = _NOWHERE,
    healthy: st.SearchStrategy[bool] = _HEALTHY,
    ready_at: st.SearchStrategy[float] = _LONG_AGO,
) -> list[Host]:
    """Hosts with distinct keys; each field drawn from its strategy."""
    keys = draw(host_keys(min_size=min_size, max_size=max_size))
    return [
        Host(
            key,
            weight=draw(weight),
            priority=draw(priority),
            locality=draw(locality),
            healthy=draw(healthy),
            ready_at=draw(ready_at),
        )
        for key in keys
    ]


def host_sets(**kwargs: Any) -> st.SearchStrategy[HostSet]:
    """``HostSet``s of ``host_lists(**kwargs)``."""
    return host_lists(**kwargs).map(HostSet)


def balancer_options(
    *, slow_start: bool = False, small_tables: bool = True
) -> st.SearchStrategy[BalancerOptions]:
    """Options within their valid ranges; small tables keep the examples quick."""
    return st.builds(
        BalancerOptions,
        choice_count=st.integers(2, 4),
        active_request_bias=st.sampled_from([0.0, 0.5, 1.0, 2.0]),
        min_ring_size=st.sampled_from([64, 256] if small_tables else [1024]),
        maglev_table_size=st.sampled_from([251, 1009] if small_tables else [65537]),
        slow_start_window=st.sampled_from([0.0, 10.0, 60.0] if slow_start else [0.0]),
        panic_threshold=st.sampled_from([0.0, 50.0, 80.0]),
        overprovisioning_percent=st.sampled_from([100, 140, 200]),
    )


# -- resilience configs: small figures, so that a few steps reach every state -------------


@st.composite
def breaker_configs(draw: st.DrawFn) -> BreakerConfig:
    """Breakers that open after a few requests and probe after short open times."""
    open_time = draw(st.sampled_from([0.5, 1.0, 5.0]))
    return BreakerConfig(
        failure_rate=draw(st.sampled_from([10.0, 50.0, 100.0]) | st.floats(1.0, 100.0)),
        window=draw(st.sampled_from([1.0, 5.0, 10.0])),
        minimum_requests=draw(st.integers(1, 5)),
        open_time=open_time,
        max_open_time=open_time * draw(st.sampled_from([1, 2, 3, 8])),
        half_open_requests=draw(st.integers(1, 3)),
        failure_statuses=draw(st.sampled_from([(502, 503, 504), (500,), ()])),
    )


@st.composite
def outlier_configs(draw: st.DrawFn) -> OutlierConfig:
    """Detectors with low thresholds and volumes; ``max_ejection_time`` may be below base."""
    base = draw(st.sampled_from([1.0, 3.0, 30.0]))
    return OutlierConfig(
        consecutive_5xx=draw(st.integers(0, 4)),
        consecutive_gateway_failure=draw(st.integers(0, 4)),
        interval=draw(st.sampled_from([1.0, 5.0, 10.0])),
        base_ejection_time=base,
        max_ejection_time=base * draw(st.sampled_from([0.5, 1, 2, 3.5, 10])),
        max_ejection_percent=draw(st.sampled_from([0, 10, 34, 50, 100])),
        success_rate_minimum_hosts=draw(st.integers(1, 4)),
        success_rate_request_volume=draw(st.integers(1, 6)),
        success_rate_stdev_factor=draw(st.sampled_from([0, 1000, 1900])),
        failure_percentage_threshold=draw(st.sampled_from([0, 50, 85, 100])),
        failure_percentage_minimum_hosts=draw(st.integers(1, 4)),
        failure_percentage_request_volume=draw(st.integers(1, 6)),
    )


_payloads = st.sampled_from(["", "PING", "hex:50494e47", "hex:00 ff"])


@st.composite
def health_check_configs(draw: st.DrawFn) -> HealthCheckConfig:
    """HTTP and TCP checks within the valid ranges."""
    tcp = draw(st.booleans())
    first = draw(st.integers(100, 599))
    return HealthCheckConfig(
        type="tcp" if tcp else "http",
        path=draw(st.sampled_from(["/healthz", "/", "/status?full=1"])),
        host=draw(st.sampled_from([None, "example.com"])),
        expected_statuses=((first, draw(st.integers(first, 599))),),
        interval=draw(st.sampled_from([0.1, 5.0, 30.0])),
        interval_jitter=draw(st.sampled_from([0.0, 0.5, 2.0])),
        timeout=draw(st.sampled_from([0.5, 1.0])),
        unhealthy_threshold=draw(st.integers(1, 5)),
        healthy_threshold=draw(st.integers(1, 5)),
        no_traffic_interval=draw(st.sampled_from([10.0, 60.0])),
        send=draw(_payloads) if tcp else "",
        expect=draw(_payloads) if tcp else "",
    )


retry_budgets = st.builds(
    RetryBudget,
    budget_percent=st.sampled_from([0.0, 20.0, 50.0, 100.0]) | st.floats(0.0, 100.0),
    min_retry_concurrency=st.integers(0, 5),
)

#: circuit breaker thresholds, with or without a retry budget
thresholds = st.builds(
    CircuitBreakerThresholds,
    max_connections=st.integers(1, 2048),
    max_pending_requests=st.integers(0, 2048),
    max_requests=st.integers(1, 2048),
    max_retries=st.integers(0, 5),
    retry_budget=st.none() | retry_budgets,
)


@st.composite
def backoff_configs(draw: st.DrawFn) -> BackoffConfig:
    base = draw(st.sampled_from([0.001, 0.025, 0.1, 1.0]) | st.floats(1e-4, 10.0))
    return BackoffConfig(base=base, max=base * draw(st.floats(1.0, 1000.0)))


@st.composite
def rollout_plans(draw: st.DrawFn) -> RolloutPlan:
    """Plans of one to five steps with short dwells and gates that few requests reach."""
    steps = draw(st.lists(st.integers(1, 100), min_size=1, max_size=5, unique=True))
    return RolloutPlan(
        steps=tuple(sorted(steps)),
        dwell=draw(st.sampled_from([1.0, 5.0, 60.0])),
        interval=draw(st.sampled_from([0.5, 1.0, 5.0])),
        gates=RolloutGates(
            max_error_rate=draw(st.sampled_from([0.0, 0.01, 0.5])),
            max_p99_ms=draw(st.sampled_from([100.0, None])),
            min_requests=draw(st.integers(1, 20)),
        ),
    )


def share_tolerance(picks: int, share: float, delta: float = 1e-9) -> float:
    """How far a host's observed share may stray from ``share`` over ``picks`` draws.

    Bernstein's inequality for a sum of ``picks`` independent Bernoulli(share) draws:
    P(|observed - share| >= eps) <= 2 exp(-picks eps^2 / (2 share (1 - share) + 2 eps / 3)).
    Solving for the eps that makes the right side ``delta`` gives the bound returned.
    Tighter than Hoeffding for small shares, and exact (no normal approximation).
    """
    log_term = math.log(2 / delta)
    variance = share * (1 - share)
    a = 2 * log_term / 3
    return (a + math.sqrt(a * a + 8 * picks * log_term * variance)) / (2 * picks)


class ScriptedRandom(random.Random):
    """A ``random.Random`` whose ``random()`` replays scripted values, then falls back.

    ``choose(indices, n)`` scripts draws that make ``int(random() * n)`` land on each
    index in turn, which is how the pickers sample uniformly.
    """

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        self._script: list[float] = []

    def script(self, values: Iterable[float]) -> None:
        self._script.extend(values)

    def choose(self, indices: Sequence[int], n: int) -> None:
        self.script((i + 0.5) / n for i in indices)

    def random(self) -> float:
        if self._script:
            return self._script.pop(0)
        return super().random()


# -- HTTP/1 -----------------------------------------------------------------------------

#: RFC 9110's tchar: what a header name is made of
_TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
#: visible ASCII and the space: a header value, without obs-text
_VCHAR = "".join(map(chr, range(0x21, 0x7F))) + " "

header_names = st.text(_TCHAR, min_size=1, max_size=16).map(str.encode)
#: no space at either end: the parser drops it (optional whitespace around a value)
header_values = st.text(_VCHAR, max_size=24).map(lambda v: v.strip(" ").encode())
#: a body as the pieces its sender wrote (each one chunk when chunked)
body_pieces = st.lists(st.binary(min_size=1, max_size=40), max_size=6)


@st.composite
def splits(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut into pieces at any points: how it may arrive from a socket.

    No piece is empty: a read of nothing is the end of the stream (``feed_eof``).
    """
    cuts = draw(st.lists(st.integers(0, len(data)), max_size=12).map(sorted))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in pairwise(bounds) if b > a]


@attrs.frozen
class MatchRequest:
    """What route conditions read of a request (``policies.matching.Request``)."""

    method: bytes = b"GET"
    target: bytes = b"/"
    headers: tuple[tuple[bytes, bytes], ...] = ()
