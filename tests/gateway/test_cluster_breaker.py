"""``ClusterBreaker``, the data path's side of the classic breaker, without sockets; and
how a ``circuit_breakers`` overflow is charged."""

from __future__ import annotations

from gateway.cluster.breaker import ClusterBreaker
from gateway.errors import CircuitBreakerOverflow
from gateway.observe.events import EventLog
from gateway.observe.stats import ClusterStats
from gateway.proxy.outcome import charge_attempt
from policies.breaker import BreakerConfig, BreakerState
from policies.retry import Failure

CONFIG = BreakerConfig(minimum_requests=2, failure_rate=50, open_time=1, half_open_requests=1)


def test_abandoned_requests_do_not_count_and_failures_open_it_with_an_event() -> None:
    events = EventLog()
    guard = ClusterBreaker("api", CONFIG, events)
    for now in (0.0, 0.1, 0.2):
        permit = guard.allow(now)
        assert permit is not None
        guard.record(permit, 0, now)  # abandoned: the client went away
    assert guard.breaker.window(0.3).requests == 0
    first, second = guard.allow(0.3), guard.allow(0.3)
    assert first is not None and second is not None
    guard.record(first, 200, 0.4)
    assert len(events) == 0
    guard.record(second, Failure.CONNECT, 0.5)  # 1 of 2 failed: 50%
    assert guard.allow(0.6) is None
    [event] = events.recent("api")
    assert (event.endpoint, event.kind, event.old, event.new, event.reason) == (
        "*",
        "breaker",
        "closed",
        "open",
        "failure_rate_exceeded",
    )
    # half-open once open_time passed: the probe's 503 (a failure status) reopens it
    assert guard.state_at(1.6) is BreakerState.HALF_OPEN
    probe = guard.allow(1.6)
    assert probe is not None and probe.probe
    guard.record(probe, 503, 1.7)
    assert guard.breaker.open_time == 2
    assert [e.new for e in events.recent("api")] == ["open", "half_open", "open"]


def test_without_an_event_log_it_still_works() -> None:
    guard = ClusterBreaker("api", CONFIG, None)
    for now in (0.0, 0.1):
        permit = guard.allow(now)
        assert permit is not None
        guard.record(permit, 502, now)
    assert guard.allow(0.2) is None


def test_a_cluster_stats_has_no_breaker_unless_configured() -> None:
    stats = ClusterStats("api")
    assert stats.breaker is None
    assert "breaker" not in stats.counters() and "thresholds" not in stats.gauges()
    assert stats.gauges()["breaker.open"] == 0


def test_an_overflow_is_no_attempt() -> None:
    stats = ClusterStats("api")
    endpoint = stats.endpoint("127.0.0.1:1")
    charge_attempt(stats, endpoint, CircuitBreakerOverflow("max_requests"))
    assert sum(stats.upstream_rq_xx) == 0 and endpoint.rq_total == 0
    assert stats.upstream_cx_overflow == 0
