"""Retries end to end on loopback: a retry goes to another endpoint, a slow upstream
trips per-try timeouts and then the cluster's breaker, and another cluster behind the
same listener is served all the while."""

from __future__ import annotations

from typing import Any

import httpx
import trio

from tests.conftest import (
    StartCheckedUpstream,
    StartGateway,
    StartHeldUpstream,
    StartUpstream,
    admin_json,
    simple_config,
)


async def test_a_retry_goes_to_another_endpoint_than_the_hash_picks(
    start_gateway: StartGateway, start_checked_upstream: StartCheckedUpstream
) -> None:
    upstreams = {u.name: u for u in [await start_checked_upstream(n) for n in ("a", "b", "c")]}
    route = {
        "match": {"prefix": "/"},
        "cluster": "api",
        "hash_policy": [{"header": "x-user"}],
        "retry": {"attempts": 1, "retry_on": ["5xx"], "backoff": {"base": 0.001, "max": 0.002}},
    }
    data = simple_config({"api": [u.address for u in upstreams.values()]}, routes=[route])
    data["clusters"][0]["lb_policy"] = "ring_hash"
    gw = await start_gateway(data)
    async with httpx.AsyncClient(
        base_url=f"http://{gw.listener_address('web')}", headers={"x-user": "ann"}
    ) as client:
        home = (await client.get("/")).headers["x-upstream"]  # where ann's requests hash
        upstreams[home].failing = True
        before = len(upstreams[home].received)
        # (enough requests that the balancer's random picks for a retry miss the other
        # endpoints now and then: the retry must find one all the same)
        answers = [await client.get(f"/{i}") for i in range(300)]
    assert {r.status_code for r in answers} == {200}
    # every request went to ann's endpoint first, then was retried elsewhere
    assert len(upstreams[home].received) - before == 300
    assert home not in {r.headers["x-upstream"] for r in answers}


def _two_clusters(slow: Any, fast: Any, slow_route: dict[str, Any]) -> dict[str, Any]:
    data = simple_config(
        {"slow": [slow], "fast": [fast]},
        routes=[
            {"match": {"prefix": "/slow"}, "cluster": "slow", **slow_route},
            {"match": {"prefix": "/"}, "cluster": "fast"},
        ],
    )
    return data


async def test_a_slow_upstream_trips_per_try_timeouts_then_the_breaker(
    start_gateway: StartGateway,
    start_held_upstream: StartHeldUpstream,
    start_upstream: StartUpstream,
) -> None:
    slow = await start_held_upstream("slow")  # never answers: every try times out
    retry = {
        "attempts": 1,
        "retry_on": ["gateway-error"],
        "per_try_timeout": 0.05,
        "backoff": {"base": 0.001, "max": 0.002},
    }
    data = _two_clusters(slow.address, await start_upstream("fast"), {"retry": retry})
    data["clusters"][0]["breaker"] = {
        "failure_rate": 50,
        "window": 60,
        "minimum_requests": 3,
        "open_time": 60,
    }
    gw = await start_gateway(data, admin=True)
    async with httpx.AsyncClient(base_url=f"http://{gw.listener_address('web')}") as client:
        timed_out = [await client.get("/slow") for _ in range(3)]
        assert [r.status_code for r in timed_out] == [504] * 3
        refused = await client.get("/slow")
        assert refused.status_code == 503
        assert refused.headers["x-triogate-breaker"] == "open"
        assert (await client.get("/other")).status_code == 200
    # each request tried twice, and the fourth never reached the upstream
    assert len(slow.received) == 6
    counters = (await admin_json(gw.admin_address, "/stats"))["counters"]
    assert counters["cluster.slow.upstream_rq_per_try_timeout"] == 6
    assert counters["cluster.slow.upstream_rq_retry"] == 3
    assert counters["cluster.slow.upstream_rq_retry_limit_exceeded"] == 3
    assert counters["cluster.slow.breaker.rq_rejected"] == 1
    assert counters["cluster.slow.upstream_rq_timeout"] == 0  # the route timeout never fired
    slow.release()


async def test_requests_held_by_a_slow_cluster_do_not_hold_another(
    start_gateway: StartGateway,
    start_held_upstream: StartHeldUpstream,
    start_upstream: StartUpstream,
    nursery: trio.Nursery,
) -> None:
    slow = await start_held_upstream("slow")
    gw = await start_gateway(_two_clusters(slow.address, await start_upstream("fast"), {}))
    base = f"http://{gw.listener_address('web')}"
    slow_answers: list[int] = []

    async def one_slow(client: httpx.AsyncClient) -> None:
        slow_answers.append((await client.get("/slow")).status_code)

    limits = httpx.Limits(max_connections=40)
    async with (
        httpx.AsyncClient(base_url=base, limits=limits) as client,
        trio.open_nursery() as held,
    ):
        for _ in range(20):
            held.start_soon(one_slow, client)
        await slow.wait_received(20)
        # twenty requests held upstream in the slow cluster; the fast one serves on
        fast = [await client.get(f"/fast/{i}") for i in range(30)]
        assert {r.status_code for r in fast} == {200}
        assert {r.headers["x-upstream"] for r in fast} == {"fast"}
        assert slow_answers == []  # all still held while the fast ones were served
        slow.release()
    assert slow_answers == [200] * 20
