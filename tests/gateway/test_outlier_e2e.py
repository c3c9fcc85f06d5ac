"""Outlier detection end to end, one process: upstreams on loopback that answer 503 or
stop, behind a gateway with ``outlier_detection`` on the cluster; read through the admin
API (``/clusters/{name}/health``, ``/events``, ``/stats``, ``/stats/clusters``)."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import httpx

from gateway.app import Gateway
from tests.conftest import (
    CheckedUpstream,
    StartCheckedUpstream,
    StartGateway,
    simple_config,
    wait_until,
)

#: quick detection: the consecutive detectors only (no sweep in a test's time)
OUTLIER_DETECTION = {
    "consecutive_5xx": 3,
    "consecutive_gateway_failure": 0,
    "interval": 60,
    "base_ejection_time": 0.5,
    "max_ejection_time": 5,
    "max_ejection_percent": 34,
}


def _config(upstreams: list[CheckedUpstream], **outlier_detection: Any) -> dict[str, Any]:
    data = simple_config({"api": [u.address for u in upstreams]})
    data["clusters"][0]["outlier_detection"] = {**OUTLIER_DETECTION, **outlier_detection}
    return data


async def _send(gw: Gateway, count: int) -> Counter[str]:
    """``count`` requests through the gateway; the status of each, or who answered a 200."""
    served: Counter[str] = Counter()
    async with httpx.AsyncClient(base_url=f"http://{gw.listener_address('web')}") as client:
        for i in range(count):
            r = await client.get(f"/r{i}")
            served[r.headers["x-upstream"] if r.status_code == 200 else str(r.status_code)] += 1
    return served


async def _views(admin: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    r = await admin.get("/clusters/api/health")
    assert r.status_code == 200, r.text
    assert r.json()["outlier_detection"] is True
    return {e["address"]: e for e in r.json()["endpoints"]}


async def _ejected(admin: httpx.AsyncClient) -> set[str]:
    return {a for a, v in (await _views(admin)).items() if v["ejection"]["ejected"]}


async def test_an_endpoint_answering_503_is_ejected_then_returns(
    start_gateway: StartGateway, start_checked_upstream: StartCheckedUpstream
) -> None:
    u1, u2, u3 = [await start_checked_upstream(n) for n in ("u1", "u2", "u3")]
    gw = await start_gateway(_config([u1, u2, u3]), admin=True)
    a1, a2, a3 = (str(u.address) for u in (u1, u2, u3))
    async with httpx.AsyncClient(base_url=f"http://{gw.admin_address}") as admin:
        assert await _ejected(admin) == set()
        u2.failing = True
        served = await _send(gw, 9)  # round robin: three 503s from u2
        assert served["503"] == 3

        async def u2_ejected() -> bool:
            return await _ejected(admin) == {a2}

        await wait_until(u2_ejected)
        view = (await _views(admin))[a2]
        assert view["verdict"] == "/failed_outlier_check" and view["serves"] is False
        ejection = view["ejection"]
        assert (ejection["reason"], ejection["times_ejected"]) == ("consecutive_5xx", 1)
        assert ejection["since"] <= time.time() < ejection["until"]
        assert abs(ejection["until"] - ejection["since"] - 0.5) < 0.01
        events = (await admin.get("/events", params={"cluster": "api"})).json()["events"]
        assert {
            "cluster": "api",
            "endpoint": a2,
            "kind": "ejection",
            "old": "serving",
            "new": "ejected",
            "reason": "consecutive_5xx",
            "until": ejection["until"],
        }.items() <= events[-1].items()
        flags = {
            e["address"]: e["health_flags"]
            for e in (await admin.get("/stats/clusters")).json()["api"]["endpoints"]
        }
        assert flags[a2] == ["failed_outlier_check"] and flags[a1] == flags[a3] == ["healthy"]
        stats = (await admin.get("/stats", params={"filter": "outlier_detection"})).json()
        assert stats["gauges"]["cluster.api.outlier_detection.ejections_active"] == 1
        counters = stats["counters"]
        assert counters["cluster.api.outlier_detection.ejections_enforced_total"] == 1
        assert counters["cluster.api.outlier_detection.ejections_enforced_consecutive_5xx"] == 1
        assert counters["cluster.api.outlier_detection.ejections_overflow"] == 0
        prometheus = (await admin.get("/stats/prometheus")).text
        assert 'triogate_cluster_outlier_detection_ejections_active{cluster="api"} 1' in (
            prometheus
        )

        # while ejected it gets no request (the ejection may end during these: stop then)
        before = len(u2.received)
        async with httpx.AsyncClient(base_url=f"http://{gw.listener_address('web')}") as client:
            while time.time() < ejection["until"] - 0.1:
                r = await client.get("/during")
                assert r.status_code == 200 and r.headers["x-upstream"] != "u2"
        assert len(u2.received) == before

        # its time passes: it returns, and serves again
        u2.failing = False

        async def none_ejected() -> bool:
            return await _ejected(admin) == set()

        await wait_until(none_ejected)
        events = (await admin.get("/events", params={"cluster": "api"})).json()["events"]
        assert {
            "endpoint": a2,
            "kind": "ejection",
            "old": "ejected",
            "new": "serving",
            "reason": "ejection_ended",
        }.items() <= events[-1].items()
        assert set(await _send(gw, 9)) == {"u1", "u2", "u3"}
        stats = (await admin.get("/stats", params={"filter": "outlier_detection"})).json()
        assert stats["gauges"]["cluster.api.outlier_detection.ejections_active"] == 0


async def test_killed_endpoints_are_ejected_within_the_cap(
    start_gateway: StartGateway, start_checked_upstream: StartCheckedUpstream
) -> None:
    u1, u2, u3 = [await start_checked_upstream(n) for n in ("u1", "u2", "u3")]
    config = _config(
        [u1, u2, u3], consecutive_5xx=0, consecutive_gateway_failure=2, base_ejection_time=30
    )
    gw = await start_gateway(config, admin=True)
    a2, a3 = str(u2.address), str(u3.address)
    async with httpx.AsyncClient(base_url=f"http://{gw.admin_address}") as admin:
        u2.stop()
        u3.stop()

        async def one_ejected() -> bool:
            await _send(gw, 3)
            return len(await _ejected(admin)) == 1

        await wait_until(one_ejected)
        [out] = await _ejected(admin)
        assert out in (a2, a3)
        view = (await _views(admin))[out]
        assert view["ejection"]["reason"] == "consecutive_gateway_failure"

        # the other dead one keeps failing, but 34% of three is one: the cap holds
        async def overflowed() -> bool:
            await _send(gw, 6)
            stats = (await admin.get("/stats", params={"filter": "outlier_detection"})).json()
            return bool(stats["counters"]["cluster.api.outlier_detection.ejections_overflow"])

        await wait_until(overflowed)
        assert await _ejected(admin) == {out}
        stats = (await admin.get("/stats", params={"filter": "outlier_detection"})).json()
        assert stats["gauges"]["cluster.api.outlier_detection.ejections_active"] == 1
        name = "cluster.api.outlier_detection.ejections_enforced_consecutive_gateway_failure"
        assert stats["counters"][name] == 1


async def test_outlier_detection_changes_through_the_admin_api(
    start_gateway: StartGateway, start_checked_upstream: StartCheckedUpstream
) -> None:
    u1, u2 = await start_checked_upstream("u1"), await start_checked_upstream("u2")
    gw = await start_gateway(simple_config({"api": [u1.address, u2.address]}), admin=True)
    async with httpx.AsyncClient(base_url=f"http://{gw.admin_address}") as admin:
        view = (await admin.get("/clusters/api/health")).json()
        assert view["outlier_detection"] is False
        assert [e["ejection"] for e in view["endpoints"]] == [None, None]

        r = await admin.patch("/clusters/api", json={"outlier_detection": {"interval": -1}})
        assert r.status_code == 422, r.text
        assert [d["loc"] for d in r.json()["detail"]] == ["clusters[0].outlier_detection.interval"]

        # on, with a health check that passes: an ejection ends at the next passing check
        r = await admin.patch(
            "/clusters/api",
            json={
                "outlier_detection": {**OUTLIER_DETECTION, "base_ejection_time": 60},
                "health_check": {
                    "interval": 0.05,
                    "no_traffic_interval": 0.05,
                    "interval_jitter": 0.01,
                    "timeout": 0.5,
                },
            },
        )
        assert r.status_code == 200, r.text
        assert gw.control.config.clusters[0].outlier_detection is not None
        u2.failing = True
        await _send(gw, 6)

        async def returned_by_its_check() -> bool:
            events = (await admin.get("/events", params={"cluster": "api"})).json()["events"]
            return [
                (e["kind"], e["new"], e["reason"]) for e in events if e["kind"] == "ejection"
            ] == [
                ("ejection", "ejected", "consecutive_5xx"),
                ("ejection", "serving", "health_check_passed"),
            ]

        await wait_until(returned_by_its_check)

        # off again: no buffer on the data path, no ejection view
        r = await admin.patch("/clusters/api", json={"outlier_detection": None})
        assert r.status_code == 200, r.text
        assert gw.stats.cluster("api").outcomes is None
        view = (await admin.get("/clusters/api/health")).json()
        assert view["outlier_detection"] is False
