"""Stats: exact counter values after known request sequences, histograms, windows, exports.

End-to-end tests run real upstreams (the demo's) and a real gateway on loopback and read
the registry directly or through the admin API; unit tests drive histograms and the
registry's ticks with made-up times.
"""

from __future__ import annotations

import math
import re
import socket
from typing import Any

import attrs
import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import Gateway
from gateway.config import Address, Config
from gateway.observe.stats import BOUNDS_MS, Histogram, StatsRegistry, quantile, run_stats_ticker
from gateway.observe.stats.export import clusters_view, prometheus_text, stats_json
from gateway.observe.stats.scopes import COUNTER, GAUGE, HISTOGRAM, STATUS_CLASSES, stat_names
from gateway.observe.tracing import valid_traceparent
from tests.conftest import (
    ClosedAddress,
    StartGateway,
    StartHeldUpstream,
    StartUpstream,
    simple_config,
    wait_until,
)


def url(gateway: Gateway, path: str) -> str:
    return f"http://{gateway.listener_address('web')}{path}"


def nonzero(counters: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counters.items() if v}


def refreshed(stats: StatsRegistry) -> StatsRegistry:
    """``stats`` with its gauges read from the endpoints now."""
    stats.refresh_gauges()
    return stats


# -- the known sequence -------------------------------------------------------------------


async def known_sequence(
    start_upstream: StartUpstream, start_gateway: StartGateway, closed_address: ClosedAddress
) -> Gateway:
    """3 x 200, upstream 404 and 503, 2 x no route, connect failure, no endpoint, timeout."""
    live = await start_upstream("live")
    data = simple_config(
        {"live": [live], "dead": [closed_address()], "empty": []},
        routes=[
            {"match": {"prefix": "/ok"}, "cluster": "live"},
            {"match": {"prefix": "/status"}, "cluster": "live"},
            {"match": {"prefix": "/delay"}, "cluster": "live", "timeout": 0.3},
            {"match": {"prefix": "/dead"}, "cluster": "dead"},
            {"match": {"prefix": "/empty"}, "cluster": "empty"},
        ],
    )
    gw = await start_gateway(data, admin=True)
    async with httpx.AsyncClient() as client:
        expected = [
            ("/ok/1", 200),
            ("/ok/2", 200),
            ("/ok/3", 200),
            ("/status/404", 404),
            ("/status/503", 503),
            ("/nowhere", 404),
            ("/nowhere/else", 404),
            ("/dead", 502),
            ("/empty", 503),
            ("/delay/3000", 504),
        ]
        for path, status in expected:
            r = await client.get(url(gw, path))
            assert r.status_code == status, (path, r.text)
    return gw


async def test_exact_counters_after_a_known_sequence(
    start_upstream: StartUpstream, start_gateway: StartGateway, closed_address: ClosedAddress
) -> None:
    gw = await known_sequence(start_upstream, start_gateway, closed_address)
    stats = gw.stats
    web = stats.listeners["web"]
    assert nonzero(web.counters()) == {
        "downstream_cx_total": 1,
        "downstream_rq_total": 10,
        "downstream_rq_2xx": 3,
        "downstream_rq_4xx": 3,
        "downstream_rq_5xx": 4,
    }
    assert web.downstream_rq_time.count == 10
    live, dead, empty = (stats.clusters[n] for n in ("live", "dead", "empty"))
    assert nonzero(live.counters()) == {
        "upstream_cx_total": 1,  # one keep-alive connection carried all six attempts
        "upstream_rq_total": 6,
        "upstream_rq_2xx": 3,
        "upstream_rq_4xx": 1,
        "upstream_rq_5xx": 2,  # the upstream's 503, and the timeout charged as 504
        "upstream_rq_timeout": 1,
    }
    assert live.upstream_rq_time.count == 5  # the timed-out attempt has no response time
    assert nonzero(dead.counters()) == {
        "upstream_cx_total": 1,
        "upstream_cx_connect_fail": 1,
        "upstream_rq_total": 1,
        "upstream_rq_5xx": 1,
    }
    assert nonzero(empty.counters()) == {"upstream_cx_none_healthy": 1}
    [endpoint] = live.endpoints.values()
    assert nonzero(endpoint.counters()) == {
        "rq_total": 6,
        "rq_error": 2,
        "rq_timeout": 1,
        "cx_total": 1,
    }
    assert endpoint.success_rate() == pytest.approx(4 / 6)
    [dead_endpoint] = dead.endpoints.values()
    assert nonzero(dead_endpoint.counters()) == {
        "rq_total": 1,
        "rq_error": 1,
        "cx_total": 1,
        "cx_connect_fail": 1,
    }
    assert dead_endpoint.success_rate() == 0.0
    # the windows move when the test ticks: a window later, the sequence is all behind it
    stats.tick(trio.current_time() + stats.window + 1)
    assert endpoint.success_rate() is None and dead_endpoint.success_rate() is None


async def test_prometheus_exposition_parses_with_the_official_parser(
    start_upstream: StartUpstream, start_gateway: StartGateway, closed_address: ClosedAddress
) -> None:
    gw = await known_sequence(start_upstream, start_gateway, closed_address)
    async with httpx.AsyncClient(base_url=f"http://{gw.admin_address}") as admin:
        r = await admin.get("/stats/prometheus")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in families.values():
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value

    def value(name: str, **labels: str) -> float:
        return samples[(name, frozenset(labels.items()))]

    assert families["triogate_listener_downstream_rq"].type == "counter"
    assert value("triogate_listener_downstream_rq_total", listener="web") == 10
    assert (
        value("triogate_listener_downstream_rq_xx_total", listener="web", response_code_class="5xx")
        == 4
    )
    assert value("triogate_cluster_upstream_rq_total", cluster="live") == 6
    assert value("triogate_cluster_upstream_rq_timeout_total", cluster="live") == 1
    assert value("triogate_cluster_upstream_cx_connect_fail_total", cluster="dead") == 1
    assert value("triogate_cluster_upstream_cx_none_healthy_total", cluster="empty") == 1
    assert families["triogate_cluster_upstream_rq_active"].type == "gauge"
    assert value("triogate_cluster_upstream_rq_active", cluster="live") == 0
    assert value("triogate_cluster_upstream_cx_active", cluster="live") == 0  # timed out: closed
    [endpoint] = gw.stats.clusters["live"].endpoints
    assert value("triogate_endpoint_rq_total", cluster="live", endpoint=endpoint) == 6
    assert value("triogate_endpoint_rq_error_total", cluster="live", endpoint=endpoint) == 2
    assert value(
        "triogate_endpoint_success_rate", cluster="live", endpoint=endpoint
    ) == pytest.approx(4 / 6)
    # a histogram: cumulative buckets in ms, +Inf equal to the count, and a sum
    hist = families["triogate_cluster_upstream_rq_time"]
    assert hist.type == "histogram"
    buckets = [
        (s.labels["le"], s.value)
        for s in hist.samples
        if s.name.endswith("_bucket") and s.labels["cluster"] == "live"
    ]
    assert [le for le, _ in buckets] == [*(str(b if b < 1 else int(b)) for b in BOUNDS_MS), "+Inf"]
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)
    assert buckets[-1][1] == 5
    assert value("triogate_cluster_upstream_rq_time_count", cluster="live") == 5
    assert value("triogate_cluster_upstream_rq_time_sum", cluster="live") > 0
    downstream = families["triogate_listener_downstream_rq_time"]
    assert [s.value for s in downstream.samples if s.name.endswith("_count")] == [10]


async def test_stats_json_filter_and_reset(
    start_upstream: StartUpstream, start_gateway: StartGateway, closed_address: ClosedAddress
) -> None:
    gw = await known_sequence(start_upstream, start_gateway, closed_address)
    async with httpx.AsyncClient() as client:  # one more, on a new upstream connection
        assert (await client.get(url(gw, "/ok"))).status_code == 200
    async with httpx.AsyncClient(base_url=f"http://{gw.admin_address}") as admin:
        whole = (await admin.get("/stats")).json()
        assert whole["counters"]["cluster.live.upstream_rq_2xx"] == 4
        assert whole["counters"]["cluster.live.upstream_cx_total"] == 2
        assert whole["counters"]["listener.web.downstream_rq_4xx"] == 3
        hist = whole["histograms"]["listener.web.downstream_rq_time"]
        assert hist["count"] == 11 and hist["buckets"]["+Inf"] == 11
        assert hist["recent"]["count"] == 11
        assert set(hist["since_start"]) == {"p50", "p90", "p99"}
        # the slowest request is the timed-out one, 300 ms and some (cut short of the
        # upstream's 3 s): the listener's p99 lies in its bucket, (250, 500] unless a
        # loaded machine made it later
        cumulative = list(hist["buckets"].values())
        slowest = cumulative.index(11)
        low, high = (0.0, *BOUNDS_MS)[slowest], (*BOUNDS_MS, math.inf)[slowest]
        assert high >= 300 and low < 3000
        assert low < hist["since_start"]["p99"] <= high

        only = (await admin.get("/stats", params={"filter": r"^cluster\.dead\."})).json()
        assert only["counters"] and all(
            n.startswith("cluster.dead.") for n in [*only["counters"], *only["gauges"]]
        )
        assert only["histograms"].keys() == {"cluster.dead.upstream_rq_time"}
        assert only["counters"]["cluster.dead.upstream_cx_connect_fail"] == 1
        bad = await admin.get("/stats", params={"filter": "("})
        assert bad.status_code == 400 and "regular expression" in bad.json()["detail"]

        refused = await admin.post("/stats/reset")  # a mutation needs a JSON body
        assert refused.status_code == 415
        r = await admin.post("/stats/reset", json={})
        assert r.status_code == 200 and r.json()["reset"] is True
        after = (await admin.get("/stats")).json()
    assert not any(after["counters"].values())
    assert after["gauges"]["cluster.live.upstream_cx_active"] == 1  # gauges are levels
    assert all(h["count"] == 0 for h in after["histograms"].values())


async def test_cluster_view_has_each_endpoint(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    a, b = await start_upstream("a"), await start_upstream("b")
    data = simple_config({"c": [a, b]})
    data["clusters"][0]["endpoints"][1]["weight"] = 3
    gw = await start_gateway(data, admin=True)
    async with (
        httpx.AsyncClient() as client,
        httpx.AsyncClient(base_url=f"http://{gw.admin_address}") as admin,
    ):
        for _ in range(4):
            assert (await client.get(url(gw, "/"))).status_code == 200
        view = (await admin.get("/stats/clusters")).json()
    endpoints = {e["address"]: e for e in view["c"]["endpoints"]}
    assert endpoints.keys() == {str(a), str(b)}
    assert endpoints[str(b)]["weight"] == 3
    assert sum(e["rq_total"] for e in endpoints.values()) == 4
    for e in endpoints.values():
        assert e["health_flags"] == ["healthy"]
        assert e["serving"] is True
        assert e["active_requests"] == 0
        assert e["success_rate"] == (1.0 if e["rq_total"] else None)
    assert view["c"]["upstream_rq_total"] == 4


async def test_active_gauges_while_a_request_is_in_flight(
    start_held_upstream: StartHeldUpstream, start_gateway: StartGateway
) -> None:
    held = await start_held_upstream("slow")
    gw = await start_gateway(simple_config({"c": [held.address]}))
    stats = gw.stats
    seen: dict[str, Any] = {}

    async def slow() -> None:
        async with httpx.AsyncClient() as client:
            seen["status"] = (await client.get(url(gw, "/"))).status_code

    async with trio.open_nursery() as nursery:
        nursery.start_soon(slow)
        await held.wait_received()
        stats.refresh_gauges()
        assert stats.clusters["c"].upstream_rq_active == 1
        view = clusters_view(stats)["c"]
        assert view["endpoints"][0]["active_requests"] == 1
        assert stats.listeners["web"].downstream_cx_active == 1
        held.release()
    stats.refresh_gauges()
    assert seen["status"] == 200
    assert stats.clusters["c"].upstream_rq_active == 0
    assert stats.clusters["c"].upstream_cx_active == 1  # kept for reuse


async def test_connect_timeout_and_the_pending_gauge(start_gateway: StartGateway) -> None:
    # a listening socket whose accept queue (backlog 0) is full: a new connect hangs
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    filler = socket.create_connection(server.getsockname())
    try:
        data = simple_config({"slow": [Address(*server.getsockname())]})
        data["clusters"][0]["pool"] = {"connect_timeout": 0.5}
        gw = await start_gateway(data)
        stats = gw.stats
        seen: dict[str, int] = {}

        async def request() -> None:
            async with httpx.AsyncClient() as client:
                seen["status"] = (await client.get(url(gw, "/"))).status_code

        async with trio.open_nursery() as nursery:
            nursery.start_soon(request)
            await wait_until(
                lambda: refreshed(stats).clusters["slow"].upstream_rq_pending_active == 1
            )
        stats.refresh_gauges()
    finally:
        filler.close()
        server.close()
    assert seen["status"] == 502
    assert stats.clusters["slow"].upstream_rq_pending_active == 0
    assert nonzero(stats.clusters["slow"].counters()) == {
        "upstream_cx_total": 1,
        "upstream_cx_connect_fail": 1,
        "upstream_cx_connect_timeout": 1,
        "upstream_rq_total": 1,
        "upstream_rq_5xx": 1,
    }


async def test_retries_count_each_attempt(
    start_upstream: StartUpstream, start_gateway: StartGateway, closed_address: ClosedAddress
) -> None:
    live = await start_upstream("live")
    retry = {"attempts": 2, "retry_on": ["connect-failure"]}
    data = simple_config(
        {"mixed": [closed_address(), live], "dead": [closed_address()]},
        routes=[
            {"match": {"prefix": "/mixed"}, "cluster": "mixed", "retry": retry},
            {"match": {"prefix": "/dead"}, "cluster": "dead", "retry": retry},
        ],
    )
    gw = await start_gateway(data)
    async with httpx.AsyncClient() as client:
        ok = await client.get(url(gw, "/mixed"))
        failed = await client.get(url(gw, "/dead"))
    assert ok.status_code == 200 and failed.status_code == 502
    mixed, dead = gw.stats.clusters["mixed"], gw.stats.clusters["dead"]
    # whichever endpoint the balancer offered first, a failed attempt is one retry
    counters = mixed.counters()
    retries = counters["upstream_rq_retry"]
    assert retries in (0, 1)
    assert nonzero(counters) == nonzero(
        {
            "upstream_cx_total": 1 + retries,
            "upstream_cx_connect_fail": retries,
            "upstream_rq_total": 1 + retries,
            "upstream_rq_retry": retries,
            "upstream_rq_retry_success": retries,
            "upstream_rq_2xx": 1,
            "upstream_rq_5xx": retries,
        }
    )
    assert nonzero(dead.counters()) == {
        "upstream_cx_total": 3,
        "upstream_cx_connect_fail": 3,
        "upstream_rq_total": 3,
        "upstream_rq_retry": 2,
        "upstream_rq_retry_limit_exceeded": 1,
        "upstream_rq_5xx": 3,
    }
    assert nonzero(gw.stats.listeners["web"].counters()) == {
        "downstream_cx_total": 1,
        "downstream_rq_total": 2,
        "downstream_rq_2xx": 1,
        "downstream_rq_5xx": 1,
    }


async def test_malformed_requests_and_header_timeouts_are_counted(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    data = simple_config({"c": [await start_upstream("u")]}, header_timeout=0.2)
    gw = await start_gateway(data)
    address = gw.listener_address("web")
    for payload in (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n", b"GET / HTTP/1.1\r\n"):
        stream = await trio.open_tcp_stream(address.host, address.port)
        async with stream:
            await stream.send_all(payload)
            reply = b""
            with trio.fail_after(5):
                while piece := await stream.receive_some(65536):
                    reply += piece
        assert reply.startswith((b"HTTP/1.1 400", b"HTTP/1.1 408")), reply
    web = gw.stats.listeners["web"]
    await wait_until(lambda: not web.downstream_cx_active)  # a task ends just after its reply
    assert nonzero(web.counters()) == {
        "downstream_cx_total": 2,
        "downstream_cx_protocol_error": 1,
        "downstream_rq_header_timeout": 1,
        "downstream_rq_total": 2,
        "downstream_rq_4xx": 2,
    }


async def test_stats_survive_a_config_change_and_go_with_the_cluster(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    a, b = await start_upstream("a"), await start_upstream("b")
    gw = await start_gateway(simple_config({"c": [a], "other": [b]}))
    before = gw.stats.clusters["c"]
    assert "other" in gw.stats.clusters

    def change(config: Config) -> Config:
        c = config.cluster("c")
        assert c is not None
        return attrs.evolve(
            config, clusters=(attrs.evolve(c, pool=attrs.evolve(c.pool, max_idle=7)),)
        )

    async with httpx.AsyncClient() as client:
        await client.get(url(gw, "/"))
        await gw.control.apply(change)
        await client.get(url(gw, "/"))
    assert gw.stats.clusters["c"] is before
    assert before.upstream_rq_total == 2
    assert before.endpoints[str(a)].rq_total == 2  # across the endpoint's new pool
    assert "other" not in gw.stats.clusters


# -- tracing ------------------------------------------------------------------------------

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def test_traceparent_started_passed_on_or_replaced(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    data = simple_config({"c": [await start_upstream("u")]}, tracing={"start_traceparent": True})
    gw = await start_gateway(data)
    async with httpx.AsyncClient() as client:

        async def seen(headers: dict[str, str]) -> dict[str, str]:
            r = await client.get(url(gw, "/"), headers=headers)
            h: dict[str, str] = r.json()["headers"]
            return h

        started = await seen({"tracestate": "orphan=1"})
        kept = await seen({"traceparent": VALID, "tracestate": "vendor=abc,other=x"})
        future = await seen({"traceparent": "01" + VALID[2:] + "-extra"})
        replaced = await seen({"traceparent": VALID.upper(), "tracestate": "vendor=abc"})
        zero = await seen({"traceparent": "00-" + "0" * 32 + "-00f067aa0ba902b7-01"})
        a, b = (await seen({}))["traceparent"], (await seen({}))["traceparent"]
    assert valid_traceparent(started["traceparent"].encode())
    assert "tracestate" not in started  # no traceparent: the tracestate is meaningless
    assert kept["traceparent"] == VALID and kept["tracestate"] == "vendor=abc,other=x"
    assert future["traceparent"] == "01" + VALID[2:] + "-extra"
    assert replaced["traceparent"] != VALID.upper() and "tracestate" not in replaced
    assert valid_traceparent(replaced["traceparent"].encode())
    assert zero["traceparent"][3:35] != "0" * 32
    assert a != b and a.endswith("-01")


async def test_traceparent_not_started_by_default_and_passed_on_untouched(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    gw = await start_gateway(simple_config({"c": [await start_upstream("u")]}))
    async with httpx.AsyncClient() as client:
        none = (await client.get(url(gw, "/"))).json()["headers"]
        invalid = (
            await client.get(url(gw, "/"), headers={"traceparent": "garbage", "tracestate": "a=1"})
        ).json()["headers"]
    assert "traceparent" not in none
    assert invalid["traceparent"] == "garbage" and invalid["tracestate"] == "a=1"


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (VALID, True),
        (VALID[:-2] + "00", True),
        ("cc" + VALID[2:] + "-what-ever", True),
        ("cc" + VALID[2:], True),
        ("cc" + VALID[2:] + "x", False),
        (VALID + "-", False),  # version 00 is exactly 55 characters
        ("ff" + VALID[2:], False),
        (VALID.replace("a", "A"), False),
        (VALID.replace("-", "_"), False),
        ("00-" + "0" * 32 + VALID[35:], False),
        (VALID[:36] + "0" * 16 + VALID[52:], False),
        (VALID[:10] + "g" + VALID[11:], False),
        ("", False),
    ],
)
def test_traceparent_validation(value: str, ok: bool) -> None:
    assert valid_traceparent(value.encode()) is ok


# -- histograms, windows, series (no sockets) ---------------------------------------------


def test_histogram_buckets_follow_the_le_rule() -> None:
    h = Histogram()
    for ms in (0.0, 0.5, 0.51, 1.0, 4.9, 60000.0, 60000.1, 4_000_000.0):
        h.record(ms)
    assert h.counts[0] == 2  # 0 and 0.5: <= 0.5
    assert h.counts[1] == 2  # 0.51 and 1.0: <= 1
    assert h.counts[2] == 1  # 4.9: <= 5
    assert h.counts[BOUNDS_MS.index(60000)] == 1
    assert h.counts[BOUNDS_MS.index(300000)] == 1
    assert h.counts[-1] == 1  # beyond the last bound
    assert h.count == 8 and h.sum == pytest.approx(4_120_007.01)


def test_quantiles_interpolate_inside_a_bucket() -> None:
    counts = [0] * (len(BOUNDS_MS) + 1)
    counts[BOUNDS_MS.index(10)] = 100  # 100 values in (5, 10]
    assert quantile(counts, 0.5) == pytest.approx(7.5)
    assert quantile(counts, 0.99) == pytest.approx(9.95)
    assert quantile([0] * len(counts), 0.5) is None
    counts[-1] = 100  # as many beyond the last bound: reported as the last bound
    assert quantile(counts, 0.99) == BOUNDS_MS[-1]


def test_recent_window_and_series() -> None:
    registry = StatsRegistry(window=10.0, tick=1.0, series_span=60.0)
    cs = registry.cluster("c")
    for _ in range(100):  # an old, slow past: 100 requests of 200 ms
        cs.upstream_rq_xx[2] += 1
        cs.upstream_rq_time.record(200.0)
    registry.tick(0.0, wall=1000.0)
    registry.tick(20.0, wall=1020.0)  # the window now starts at t=20
    for i in range(50):  # then 50 fast ones, 10 of them failing
        cs.upstream_rq_xx[5 if i < 10 else 2] += 1
        cs.upstream_rq_time.record(2.0)
    registry.tick(22.0, wall=1022.0)
    whole = stats_json(registry)["histograms"]["cluster.c.upstream_rq_time"]
    assert whole["count"] == 150
    assert 100 < whole["since_start"]["p50"] <= 250
    assert whole["recent"]["count"] == 50
    assert 1 < whole["recent"]["p99"] <= 5
    point = registry.series["c"][-1]
    assert point.t == 1022.0
    assert point.requests_per_s == pytest.approx(25.0)
    assert point.error_rate == pytest.approx(0.2)
    assert point.p50 is not None and 1 < point.p50 <= 5
    # a quiet tick: no requests, no rates
    registry.tick(23.0, wall=1023.0)
    quiet = registry.series["c"][-1]
    assert (quiet.requests_per_s, quiet.error_rate, quiet.p50) == (0.0, None, None)


async def test_the_ticker_ticks_each_interval_while_ticking(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    registry = StatsRegistry(tick=1.0)
    cs = registry.cluster("c")
    await nursery.start(run_stats_ticker, registry)
    await trio.sleep(2.5)  # virtual time passing is what the ticker is driven by
    assert [frame.t for frame in cs.frames] == [0.0, 1.0, 2.0]
    registry.ticking = False
    await trio.sleep(3.0)
    assert len(cs.frames) == 3
    registry.ticking = True
    await trio.sleep(1.0)
    assert [frame.t for frame in cs.frames][-1] == 6.0


def test_endpoint_success_rate_is_recent() -> None:
    registry = StatsRegistry(window=10.0)
    es = registry.cluster("c").endpoint("127.0.0.1:1")
    es.rq_total, es.rq_error = 100, 100
    es.take_frame(0.0, 10.0)
    es.take_frame(15.0, 10.0)  # the failures are older than the window
    es.rq_total += 10
    es.rq_error += 1
    assert es.success_rate() == pytest.approx(0.9)


def test_every_stat_has_one_kind_and_exports_everywhere() -> None:
    registry = StatsRegistry()
    ls, cs = registry.listener("l"), registry.cluster("c")
    es = cs.endpoint("127.0.0.1:1")
    for scope in (ls, cs, es):
        kinds = [stat_names(type(scope), k) for k in (COUNTER, GAUGE, HISTOGRAM, STATUS_CLASSES)]
        names = [n for group in kinds for n in group]
        assert names and len(names) == len(set(names))
    text = prometheus_text(registry)
    families = {f.name for f in text_string_to_metric_families(text)}
    assert "triogate_listener_downstream_cx_active" in families
    assert "triogate_endpoint_cx_connect_fail" in families
    json_names = stats_json(registry)["counters"]
    assert "cluster.c.endpoint.127.0.0.1:1.rq_total" in json_names
    assert all(re.fullmatch(r"(listener|cluster)\.[\w.:-]+", n) for n in json_names)
