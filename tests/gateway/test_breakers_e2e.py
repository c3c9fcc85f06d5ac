"""Circuit breakers end to end, one process: the ``circuit_breakers`` thresholds (a held
upstream fills ``max_requests``) and the classic ``breaker`` (an upstream answering
503 opens it, probes half-open it, a failed probe reopens it longer, passing probes
close it); read through the access log, the admin API and the stats."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import trio

from gateway.app import Gateway
from gateway.cluster.breaker import ClusterBreaker
from gateway.config import config_from_data
from tests.conftest import (
    CheckedUpstream,
    StartCheckedUpstream,
    StartGateway,
    StartHeldUpstream,
    StartUpstream,
    simple_config,
    wait_until,
)
from tests.gateway.test_accesslog import read_lines

BREAKER = {
    "minimum_requests": 4,
    "failure_rate": 50,
    "open_time": 0.3,
    "max_open_time": 5,
    "half_open_requests": 2,
    "window": 10,
}


async def test_max_requests_overflow_is_a_503_at_once(
    start_held_upstream: StartHeldUpstream, start_gateway: StartGateway, tmp_path: Path
) -> None:
    log_path = tmp_path / "access.log"
    held = await start_held_upstream("u")
    data = simple_config({"c": [held.address]}, access_log={"enabled": True, "path": str(log_path)})
    data["clusters"][0]["circuit_breakers"] = {"max_requests": 2}
    gw = await start_gateway(data, admin=True)
    base = f"http://{gw.listener_address('web')}"
    statuses: list[int] = []

    async def get(path: str) -> None:
        async with httpx.AsyncClient(base_url=base) as client:
            statuses.append((await client.get(path)).status_code)

    async with httpx.AsyncClient(base_url=base) as third, trio.open_nursery() as nursery:
        nursery.start_soon(get, "/one")
        nursery.start_soon(get, "/two")
        await held.wait_received(2)
        gw.stats.refresh_gauges()
        assert gw.stats.clusters["c"].circuit_breakers_rq_open == 1
        r = await third.get("/three")  # answered while the two are still held
        assert r.status_code == 503
        assert r.headers["x-envoy-overloaded"] == "true"
        assert "x-triogate-breaker" not in r.headers
        held.release()
    assert sorted(statuses) == [200, 200]
    assert sorted(held.received) == ["/one", "/two"]  # the third never reached it
    lines = await read_lines(gw, log_path, 3)
    first = lines[0]  # logged first: answered while the others were held
    assert (first["path"], first["response_code"], first["response_flags"]) == (
        "/three",
        503,
        "UO",
    )
    stats = gw.stats.clusters["c"]
    assert stats.upstream_rq_pending_overflow == 1
    gw.stats.refresh_gauges()
    assert stats.circuit_breakers_rq_open == 0
    async with httpx.AsyncClient(base_url=f"http://{gw.admin_address}") as admin:
        exported = (await admin.get("/stats", params={"filter": "overflow"})).json()
        assert exported["counters"]["cluster.c.upstream_rq_pending_overflow"] == 1


async def test_max_pending_requests_zero_refuses_every_new_connection(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    data = simple_config({"c": [await start_upstream("u")]})
    data["clusters"][0]["circuit_breakers"] = {"max_pending_requests": 0}
    gw = await start_gateway(data)
    async with httpx.AsyncClient() as client:
        r = await client.get(f"http://{gw.listener_address('web')}/")
    assert r.status_code == 503 and r.headers["x-envoy-overloaded"] == "true"
    stats = gw.stats.clusters["c"]
    assert stats.upstream_rq_pending_overflow == 1
    assert stats.upstream_cx_total == 0  # it never reached the pool
    assert sum(stats.upstream_rq_xx) == 0  # and is no attempt


async def test_max_connections_counts_the_whole_cluster(
    start_held_upstream: StartHeldUpstream, start_gateway: StartGateway
) -> None:
    a, b = await start_held_upstream("a"), await start_held_upstream("b")
    data = simple_config({"c": [a.address, b.address]})
    data["clusters"][0]["circuit_breakers"] = {"max_connections": 1}
    gw = await start_gateway(data)
    base = f"http://{gw.listener_address('web')}"
    statuses: list[int] = []

    async def get(path: str) -> None:
        async with httpx.AsyncClient(base_url=base) as client:
            statuses.append((await client.get(path)).status_code)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(get, "/one")  # round robin: one endpoint's one connection
        await wait_until(lambda: len(a.received) + len(b.received) == 1)
        gw.stats.refresh_gauges()
        assert gw.stats.clusters["c"].circuit_breakers_cx_open == 1
        # the other endpoint has no connection, but the cluster has its one
        r = await _get(gw, "/two")
        assert r.status_code == 503 and r.headers["x-envoy-overloaded"] == "true"
        a.release()
        b.release()
    assert statuses == [200]
    assert len(a.received) + len(b.received) == 1
    stats = gw.stats.clusters["c"]
    assert stats.upstream_cx_overflow == 1 and stats.upstream_cx_total == 1


async def test_a_cluster_without_breaker_has_none_on_the_data_path(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    data = simple_config({"c": [await start_upstream("u")]})
    gw = await start_gateway(data)
    stats = gw.stats.clusters["c"]
    assert stats.breaker is None
    assert stats.thresholds.max_requests == 1024  # Envoy's defaults, always on
    # switched on and off through a config change
    data["clusters"][0]["breaker"] = BREAKER
    await gw.control.apply(lambda _: config_from_data(data))
    assert isinstance(stats.breaker, ClusterBreaker)
    del data["clusters"][0]["breaker"]
    await gw.control.apply(lambda _: config_from_data(data))
    assert stats.breaker is None


async def _get(gw: Gateway, path: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(f"http://{gw.listener_address('web')}{path}")


async def _breaker(admin: httpx.AsyncClient) -> dict[str, Any]:
    r = await admin.get("/clusters/api/health")
    assert r.status_code == 200, r.text
    view: dict[str, Any] = r.json()["breaker"]
    return view


async def _events(admin: httpx.AsyncClient) -> list[tuple[str, str, str]]:
    events = (await admin.get("/events", params={"cluster": "api"})).json()["events"]
    return [(e["old"], e["new"], e["reason"]) for e in events if e["kind"] == "breaker"]


async def test_the_breaker_opens_half_opens_reopens_longer_and_closes(
    start_gateway: StartGateway, start_checked_upstream: StartCheckedUpstream
) -> None:
    upstream: CheckedUpstream = await start_checked_upstream("u")
    data = simple_config({"api": [upstream.address]})
    data["clusters"][0]["breaker"] = BREAKER
    gw = await start_gateway(data, admin=True)
    async with httpx.AsyncClient(base_url=f"http://{gw.admin_address}") as admin:
        assert await _breaker(admin) == {
            "per_worker": False,
            "state": "closed",
            "open_time": 0.3,
            "open_workers": None,
        }
        upstream.failing = True
        for i in range(4):
            assert (await _get(gw, f"/f{i}")).status_code == 503
        assert len(upstream.received) == 4
        # open: a fast failure that never reaches the upstream
        r = await _get(gw, "/fast")
        assert r.status_code == 503 and r.headers["x-triogate-breaker"] == "open"
        assert len(upstream.received) == 4
        assert (await _breaker(admin))["state"] == "open"
        assert await _events(admin) == [("closed", "open", "failure_rate_exceeded")]
        stats = gw.stats.clusters["api"]
        assert stats.breaker_rq_rejected == 1
        gw.stats.refresh_gauges()
        assert stats.breaker_open == 1

        # half-open after open_time: a failing probe reopens it for twice as long
        async def half_open() -> bool:
            return (await _breaker(admin))["state"] == "half_open"

        await wait_until(half_open)
        assert (await _get(gw, "/probe1")).status_code == 503
        assert len(upstream.received) == 5
        view = await _breaker(admin)
        assert (view["state"], view["open_time"]) == ("open", 0.6)
        r = await _get(gw, "/fast2")
        assert r.headers["x-triogate-breaker"] == "open" and len(upstream.received) == 5

        # the next probes pass: closed, requests flow again
        upstream.failing = False
        await wait_until(half_open)
        for i in range(2):
            assert (await _get(gw, f"/probe-ok{i}")).status_code == 200
        assert (await _breaker(admin))["state"] == "closed"
        assert (await _get(gw, "/after")).status_code == 200
        assert await _events(admin) == [
            ("closed", "open", "failure_rate_exceeded"),
            ("open", "half_open", "open_time_elapsed"),
            ("half_open", "open", "probe_failed"),
            ("open", "half_open", "open_time_elapsed"),
            ("half_open", "closed", "probes_passed"),
        ]
        events = (await admin.get("/events", params={"cluster": "api"})).json()["events"]
        assert all(e["at"] > 0 and e["endpoint"] == "*" for e in events)


async def test_breakers_change_through_the_admin_api(
    start_gateway: StartGateway, start_upstream: StartUpstream
) -> None:
    gw = await start_gateway(simple_config({"api": [await start_upstream("u")]}), admin=True)
    async with httpx.AsyncClient(base_url=f"http://{gw.admin_address}") as admin:
        assert (await admin.get("/clusters/api/health")).json()["breaker"] is None
        r = await admin.patch(
            "/clusters/api",
            json={"circuit_breakers": {"max_requests": 0}, "breaker": {"open_time": -1}},
        )
        assert r.status_code == 422, r.text
        assert sorted(d["loc"] for d in r.json()["detail"]) == [
            "clusters[0].breaker.open_time",
            "clusters[0].circuit_breakers.max_requests",
        ]
        r = await admin.patch(
            "/clusters/api",
            json={"circuit_breakers": {"max_pending_requests": 0}, "breaker": BREAKER},
        )
        assert r.status_code == 200, r.text
        stats = gw.stats.cluster("api")
        assert stats.thresholds.max_pending_requests == 0
        assert stats.breaker is not None
        assert (await admin.get("/clusters/api/health")).json()["breaker"]["state"] == "closed"
        r = await _get(gw, "/")  # a new connection is needed: none may be pending
        assert r.status_code == 503 and r.headers["x-envoy-overloaded"] == "true"
        # the gateway's own limit says nothing of the upstream: not a breaker failure
        assert stats.breaker.breaker.window(trio.current_time()).requests == 0
        r = await admin.patch("/clusters/api", json={"circuit_breakers": None, "breaker": None})
        assert r.status_code == 200, r.text
        assert stats.breaker is None and stats.thresholds.max_pending_requests == 1024
        assert (await _get(gw, "/")).status_code == 200
