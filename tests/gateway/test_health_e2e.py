"""Active health checks end to end: upstreams on loopback that stop, come back and fail
their checks, behind a gateway with ``health_check`` on the cluster; read through the
admin API (``/clusters/{name}/health``, ``/events``, ``/stats``)."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import trio

from gateway.app import Gateway
from tests.conftest import (
    CheckedUpstream,
    StartCheckedUpstream,
    StartGateway,
    simple_config,
    wait_until,
)

#: quick checks, with traffic or not: two failures make an endpoint unhealthy, two
#: passes healthy again
HEALTH_CHECK = {
    "interval": 0.05,
    "no_traffic_interval": 0.05,
    "interval_jitter": 0.02,
    "timeout": 0.5,
    "unhealthy_threshold": 2,
    "healthy_threshold": 2,
}


def _config(upstreams: list[CheckedUpstream], **health_check: Any) -> dict[str, Any]:
    data = simple_config({"api": [u.address for u in upstreams]})
    data["clusters"][0]["health_check"] = {**HEALTH_CHECK, **health_check}
    return data


async def _verdicts(admin: httpx.AsyncClient) -> dict[str, str]:
    r = await admin.get("/clusters/api/health")
    assert r.status_code == 200, r.text
    return {e["address"]: e["verdict"] for e in r.json()["endpoints"]}


async def _until_verdicts(admin: httpx.AsyncClient, expected: dict[str, str]) -> None:
    async def reached() -> bool:
        return await _verdicts(admin) == expected

    await wait_until(reached)


async def _send(gw: Gateway, count: int) -> Counter[str]:
    """``count`` requests through the gateway; which upstream answered each (all 200)."""
    served: Counter[str] = Counter()
    async with httpx.AsyncClient(base_url=f"http://{gw.listener_address('web')}") as client:
        for i in range(count):
            r = await client.get(f"/r{i}")
            assert r.status_code == 200, r.text
            served[r.headers["x-upstream"]] += 1
    return served


async def test_an_endpoint_that_stops_is_routed_around_and_returns(
    start_gateway: StartGateway, start_checked_upstream: StartCheckedUpstream, nursery: trio.Nursery
) -> None:
    u1, u2, u3 = [await start_checked_upstream(n) for n in ("u1", "u2", "u3")]
    gw = await start_gateway(_config([u1, u2, u3]), admin=True)
    a1, a2, a3 = (str(u.address) for u in (u1, u2, u3))
    async with httpx.AsyncClient(base_url=f"http://{gw.admin_address}") as admin:
        await _until_verdicts(admin, {a1: "healthy", a2: "healthy", a3: "healthy"})
        assert set(await _send(gw, 30)) == {"u1", "u2", "u3"}

        u2.stop()
        await _until_verdicts(admin, {a1: "healthy", a2: "/failed_active_hc", a3: "healthy"})
        [view] = [
            e
            for e in (await admin.get("/clusters/api/health")).json()["endpoints"]
            if e["address"] == a2
        ]
        assert view["health_check"]["state"] == "unhealthy"
        assert view["health_check"]["last"]["passed"] is False
        assert view["health_check"]["last"]["detail"] == "connect refused"
        assert (view["ejection"], view["breaker"], view["serves"]) == (None, None, False)
        events = (await admin.get("/events", params={"cluster": "api"})).json()["events"]
        assert {
            "cluster": "api",
            "endpoint": a2,
            "kind": "health",
            "old": "healthy",
            "new": "unhealthy",
            "reason": "connect refused",
        }.items() <= events[-1].items()
        before = len(u2.received)
        served = await _send(gw, 40)
        assert served["u2"] == 0 and served["u1"] + served["u3"] == 40
        assert len(u2.received) == before

        stats = (await admin.get("/stats", params={"filter": "health_check"})).json()
        assert stats["gauges"]["cluster.api.health_check.healthy"] == 2
        counters = stats["counters"]
        assert counters["cluster.api.health_check.failure"] >= 2
        assert (
            counters["cluster.api.health_check.attempt"]
            == counters["cluster.api.health_check.success"]
            + counters["cluster.api.health_check.failure"]
        )
        prometheus = (await admin.get("/stats/prometheus")).text
        assert 'triogate_cluster_health_check_attempt_total{cluster="api"}' in prometheus
        assert 'triogate_cluster_health_check_healthy{cluster="api"} 2' in prometheus
        flags = {
            e["address"]: e["health_flags"]
            for e in (await admin.get("/stats/clusters")).json()["api"]["endpoints"]
        }
        assert flags[a2] == ["failed_active_hc"] and flags[a1] == ["healthy"]

        await u2.start(nursery)  # the same port
        assert str(u2.address) == a2
        await _until_verdicts(admin, {a1: "healthy", a2: "healthy", a3: "healthy"})
        assert (await _send(gw, 30))["u2"] > 0
        events = (await admin.get("/events", params={"cluster": "api", "limit": 1})).json()
        assert [(e["endpoint"], e["old"], e["new"]) for e in events["events"]] == [
            (a2, "unhealthy", "healthy")
        ]


async def test_every_endpoint_unhealthy_is_panic_routing(
    start_gateway: StartGateway, start_checked_upstream: StartCheckedUpstream
) -> None:
    upstreams = [await start_checked_upstream(n) for n in ("u1", "u2", "u3")]
    gw = await start_gateway(_config(upstreams), admin=True)
    async with httpx.AsyncClient(base_url=f"http://{gw.admin_address}") as admin:
        await _until_verdicts(admin, {str(u.address): "healthy" for u in upstreams})
        for upstream in upstreams:
            upstream.sick = True  # /healthz answers 503; requests are still served
        await _until_verdicts(admin, {str(u.address): "/failed_active_hc" for u in upstreams})
        served = await _send(gw, 30)
        assert set(served) == {"u1", "u2", "u3"}  # the balancer's panic: spread over all
        view = (await admin.get("/clusters/api/health")).json()["endpoints"]
        assert [e["health_check"]["last"]["detail"] for e in view] == ["status 503"] * 3


async def test_new_endpoints_start_unknown_and_serve(
    start_gateway: StartGateway, start_checked_upstream: StartCheckedUpstream
) -> None:
    u1 = await start_checked_upstream("u1")
    # checks far apart: the first check of a new endpoint is at once, the next much later
    gw = await start_gateway(_config([u1], interval=60, unhealthy_threshold=3), admin=True)
    async with httpx.AsyncClient(base_url=f"http://{gw.admin_address}") as admin:
        await _until_verdicts(admin, {str(u1.address): "healthy"})
        u2 = await start_checked_upstream("u2")
        u2.sick = True
        r = await admin.post("/clusters/api/endpoints", json={"address": str(u2.address)})
        assert r.status_code == 201, r.text
        # one failure of three: still unknown, and it serves
        await wait_until(lambda: len(u2.checks) >= 1)
        assert (await _verdicts(admin))[str(u2.address)] == "/pending_active_hc"
        assert (await _send(gw, 10))["u2"] > 0
        # removed: its state goes
        r = await admin.delete(f"/clusters/api/endpoints/{u2.address}")
        assert r.status_code == 204, r.text
        assert str(u2.address) not in await _verdicts(admin)


async def test_health_check_changes_through_the_admin_api(
    start_gateway: StartGateway, start_checked_upstream: StartCheckedUpstream
) -> None:
    u1 = await start_checked_upstream("u1")
    gw = await start_gateway(_config([u1]), admin=True)
    a1 = str(u1.address)
    async with httpx.AsyncClient(base_url=f"http://{gw.admin_address}") as admin:
        await _until_verdicts(admin, {a1: "healthy"})
        # an invalid setting is refused by its path, nothing changes
        r = await admin.patch("/clusters/api", json={"health_check": {"interval": -1}})
        assert r.status_code == 422
        assert [d["loc"] for d in r.json()["detail"]] == ["clusters[0].health_check.interval"]
        # a new host header: the checks start again with it
        r = await admin.patch("/clusters/api", json={"health_check": {"host": "probe.test"}})
        assert r.status_code == 200, r.text
        await wait_until(lambda: "probe.test" in u1.checks)
        await _until_verdicts(admin, {a1: "healthy"})
        # removed: no health check state, the endpoint plainly healthy
        r = await admin.patch("/clusters/api", json={"health_check": None})
        assert r.status_code == 200, r.text
        answer = (await admin.get("/clusters/api/health")).json()
        assert answer["health_check"] is False
        assert [(e["health_check"], e["verdict"]) for e in answer["endpoints"]] == [
            (None, "healthy")
        ]
        assert (await admin.get("/config")).json()["clusters"][0]["health_check"] is None
        stats = (await admin.get("/stats", params={"filter": "health_check"})).json()
        assert stats["gauges"]["cluster.api.health_check.healthy"] == 0
        # the events of an unknown cluster: 404; a limit out of range: 422
        assert (await admin.get("/events", params={"cluster": "nope"})).status_code == 404
        assert (await admin.get("/events", params={"limit": 0})).status_code == 422
        assert (await admin.get("/clusters/nope/health")).status_code == 404


def test_validate_reports_health_check_errors_by_path(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(
        "clusters:\n"
        "  - name: api\n"
        "    endpoints: [{address: 127.0.0.1:9001}]\n"
        "    health_check: {interval: 0, type: http, send: PING}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "triogate.cli", "validate", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2, done
    out = done.stdout + done.stderr
    assert "clusters[0].health_check.interval" in out
