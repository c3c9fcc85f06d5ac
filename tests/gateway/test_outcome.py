"""How an attempt's outcome is charged (gateway.proxy.outcome), one outcome at a time."""

from __future__ import annotations

from typing import Any

from gateway.errors import (
    PoolExhausted,
    UpstreamClosedEarly,
    UpstreamConnectError,
    UpstreamConnectTimeout,
    UpstreamProtocolError,
    UpstreamTimeoutError,
)
from gateway.observe.stats import ClusterStats, EndpointStats
from gateway.proxy.outcome import charge_attempt, charge_opened


def charged(outcome: Any, ms: float = -1.0, **kw: Any) -> tuple[dict[str, int], dict[str, int]]:
    cluster = ClusterStats("c")
    endpoint = cluster.endpoint("e")
    charge_attempt(cluster, endpoint, outcome, ms, **kw)
    return nonzero(cluster), nonzero(endpoint)


def nonzero(scope: ClusterStats | EndpointStats) -> dict[str, int]:
    return {k: v for k, v in scope.counters().items() if v}


def test_a_response_charges_its_class_and_time() -> None:
    cluster = ClusterStats("c")
    endpoint = cluster.endpoint("e")
    charge_attempt(cluster, endpoint, 503, 7.0)
    charge_attempt(cluster, endpoint, 200, 0.7)
    assert nonzero(cluster) == {"upstream_rq_total": 2, "upstream_rq_2xx": 1, "upstream_rq_5xx": 1}
    assert nonzero(endpoint) == {"rq_total": 2, "rq_error": 1}
    assert cluster.upstream_rq_time.count == 2 and cluster.upstream_rq_time.sum == 7.7


def test_an_attempt_cut_short_is_no_ones_fault() -> None:
    # slot 0 (no response): in the total, in no status class, nothing on the endpoint
    assert charged(0) == ({"upstream_rq_total": 1}, {})


def test_failures_charge_the_status_of_their_local_reply_and_why() -> None:
    assert charged(UpstreamConnectError("refused")) == (
        {
            "upstream_rq_total": 1,
            "upstream_rq_5xx": 1,
            "upstream_cx_total": 1,
            "upstream_cx_connect_fail": 1,
        },
        {"rq_total": 1, "rq_error": 1, "cx_total": 1, "cx_connect_fail": 1},
    )
    cluster, _ = charged(UpstreamConnectTimeout("slow"))
    assert cluster["upstream_cx_connect_timeout"] == 1
    assert charged(UpstreamTimeoutError("route")) == (
        {"upstream_rq_total": 1, "upstream_rq_5xx": 1, "upstream_rq_timeout": 1},
        {"rq_total": 1, "rq_error": 1, "rq_timeout": 1},
    )
    for error in (UpstreamClosedEarly("closed"), UpstreamProtocolError("garbage")):
        assert charged(error) == (
            {"upstream_rq_total": 1, "upstream_rq_5xx": 1},
            {"rq_total": 1, "rq_error": 1},
        )


def test_a_full_pool_is_the_gateways_limit_not_the_endpoints_failure() -> None:
    assert charged(PoolExhausted("busy")) == (
        {"upstream_rq_total": 1, "upstream_rq_5xx": 1, "upstream_cx_overflow": 1},
        {},
    )


def test_a_tcp_attempt_counts_its_connection_only() -> None:
    assert charged(UpstreamConnectTimeout("slow"), request=False) == (
        {"upstream_cx_total": 1, "upstream_cx_connect_fail": 1, "upstream_cx_connect_timeout": 1},
        {"cx_total": 1, "cx_connect_fail": 1},
    )
    cluster = ClusterStats("c")
    endpoint = cluster.endpoint("e")
    charge_opened(cluster, endpoint)
    assert (nonzero(cluster), nonzero(endpoint)) == ({"upstream_cx_total": 1}, {"cx_total": 1})
