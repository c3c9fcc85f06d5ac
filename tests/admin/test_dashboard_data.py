"""``GET /dashboard/data`` carries each endpoint's health: health check, ejection, the
cluster's breaker and the combined verdict (what ``GET /clusters/{name}/health`` says).

``start_resilient`` (shared with the browser test, ``test_dashboard.py``) brings a
gateway to a known state on loopback: in cluster ``checked`` one endpoint fails its
health checks, in ``ejecting`` one is ejected by outlier detection, and ``breaking``
has its classic breaker open.
"""

from __future__ import annotations

import time
from typing import Any

import attrs
import httpx

from gateway.app import Gateway
from tests.conftest import (
    CheckedUpstream,
    StartCheckedUpstream,
    StartGateway,
    simple_config,
    wait_until,
)
from tests.gateway.rollout_support import rollout_spec


@attrs.frozen
class Resilient:
    """A gateway whose clusters show every kind of trouble, and the upstreams behind."""

    gateway: Gateway
    #: ``checked``: passing and failing their health checks
    well: CheckedUpstream
    sick: CheckedUpstream
    #: ``ejecting``: answering 200, and 503 until ejected
    good: CheckedUpstream
    failing: CheckedUpstream
    #: ``breaking``: answering 503, which opened the cluster's breaker
    broken: CheckedUpstream


async def dashboard_data(admin: httpx.AsyncClient) -> dict[str, Any]:
    r = await admin.get("/dashboard/data")
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def endpoints(data: dict[str, Any], cluster: str) -> dict[str, dict[str, Any]]:
    return {e["address"]: e for e in data["clusters"][cluster]["endpoints"]}


async def start_resilient(
    start_gateway: StartGateway, start_checked_upstream: StartCheckedUpstream
) -> Resilient:
    """Start the gateway and bring it to the state the module docstring describes."""
    well, sick, good, failing, broken = [
        await start_checked_upstream(name) for name in ("well", "sick", "good", "failing", "broken")
    ]
    sick.sick = True
    failing.failing = broken.failing = True
    data = simple_config(
        {
            "checked": [well.address, sick.address],
            "ejecting": [good.address, failing.address],
            "breaking": [broken.address],
        },
        routes=[
            {"match": {"prefix": "/eject"}, "cluster": "ejecting"},
            {"match": {"prefix": "/break"}, "cluster": "breaking"},
            {"match": {"prefix": "/"}, "cluster": "checked"},
        ],
    )
    checked, ejecting, breaking = data["clusters"]
    # (unhurried checks: on a loaded machine a passing endpoint must not time out)
    checked["health_check"] = {
        "path": "/healthz",
        "interval": 0.1,
        "no_traffic_interval": 0.1,
        "interval_jitter": 0.02,
        "timeout": 3,
        "unhealthy_threshold": 2,
        "healthy_threshold": 1,
    }
    ejecting["outlier_detection"] = {
        "consecutive_5xx": 2,
        "consecutive_gateway_failure": 0,
        "interval": 60,
        "base_ejection_time": 60,
        "max_ejection_time": 120,
        "max_ejection_percent": 50,
    }
    breaking["breaker"] = {
        "minimum_requests": 2,
        "failure_rate": 50,
        "window": 10,
        "open_time": 60,
        "max_open_time": 60,
    }
    gw = await start_gateway(data, admin=True)
    async with (
        httpx.AsyncClient(base_url=f"http://{gw.listener_address('web')}") as web,
        httpx.AsyncClient(base_url=f"http://{gw.admin_address}") as admin,
    ):
        for _ in range(2):
            assert (await web.get("/break")).status_code == 503

        async def ejected() -> bool:
            for _ in range(2):  # round robin: one to each
                await web.get("/eject")
            data = await dashboard_data(admin)
            return bool(endpoints(data, "ejecting")[str(failing.address)]["ejection"]["ejected"])

        async def checks_settled() -> bool:
            views = endpoints(await dashboard_data(admin), "checked")
            states = {a: v["health_check"]["state"] for a, v in views.items()}
            return states == {str(well.address): "healthy", str(sick.address): "unhealthy"}

        await wait_until(ejected)
        await wait_until(checks_settled)
    return Resilient(gw, well, sick, good, failing, broken)


async def test_dashboard_data_carries_health_checks_ejections_and_the_breaker(
    start_gateway: StartGateway, start_checked_upstream: StartCheckedUpstream
) -> None:
    setup = await start_resilient(start_gateway, start_checked_upstream)
    async with httpx.AsyncClient(base_url=f"http://{setup.gateway.admin_address}") as admin:
        data = await dashboard_data(admin)
        health = (await admin.get("/clusters/ejecting/health")).json()
    clusters = data["clusters"]
    assert {n: (c["health_check"], c["outlier_detection"]) for n, c in clusters.items()} == {
        "checked": (True, False),
        "ejecting": (False, True),
        "breaking": (False, False),
    }
    assert clusters["breaking"]["breaker"] == {
        "per_worker": False,
        "state": "open",
        "open_time": 60.0,
    }
    assert clusters["checked"]["breaker"] is None and clusters["ejecting"]["breaker"] is None

    checked = endpoints(data, "checked")
    sick = checked[str(setup.sick.address)]
    assert sick["health_check"]["last"]["passed"] is False
    assert sick["health_check"]["last"]["detail"] == "status 503"
    assert (sick["verdict"], sick["serves"]) == ("/failed_active_hc", False)
    assert sick["ejection"] is None  # no outlier detection on this cluster
    well = checked[str(setup.well.address)]
    assert (well["verdict"], well["serves"], well["health_check"]["last"]["passed"]) == (
        "healthy",
        True,
        True,
    )

    ejecting = endpoints(data, "ejecting")
    ejected = ejecting[str(setup.failing.address)]
    ejection = ejected["ejection"]
    assert (ejection["reason"], ejection["times_ejected"]) == ("consecutive_5xx", 1)
    assert ejection["until"] - ejection["since"] == 60
    assert time.time() - 30 < ejection["since"] <= time.time()  # Unix times
    assert (ejected["verdict"], ejected["serves"]) == ("/failed_outlier_check", False)
    assert ejected["health_check"] is None  # no health checks on this cluster
    assert ejecting[str(setup.good.address)]["ejection"] == {"ejected": False}

    [broken] = endpoints(data, "breaking").values()
    # the breaker guards the cluster, not the endpoint: its verdict is its own
    assert (broken["verdict"], broken["ejection"], broken["health_check"]) == (
        "healthy",
        None,
        None,
    )
    # what the dashboard shows is what the health API says
    by_address = {e["address"]: e for e in health["endpoints"]}
    assert by_address[str(setup.failing.address)]["ejection"] == ejection
    assert by_address[str(setup.good.address)]["ejection"]["ejected"] is False


@attrs.frozen
class Rollouts:
    """A gateway with two staged rollouts moved by real traffic (``start_rollouts``)."""

    gateway: Gateway
    stable: CheckedUpstream
    #: ``checkout``'s canary: healthy; the rollout passed its first step and was paused
    canary: CheckedUpstream
    #: ``payments``' canary: failing; the rollout was rolled back on its error rate
    broken: CheckedUpstream


async def start_rollouts(
    start_gateway: StartGateway, start_checked_upstream: StartCheckedUpstream
) -> Rollouts:
    """Start the gateway, and move ``checkout`` to its second step (50%), then pause it,
    and ``payments`` until its failing canary rolls it back, both by sending requests."""
    stable, canary, broken = [await start_checked_upstream(name) for name in ("v1", "v2", "broken")]
    broken.failing = True
    data = simple_config(
        {"v1": [stable.address], "v2": [canary.address], "broken": [broken.address]},
        routes=[
            {"name": "payments", "match": {"prefix": "/pay"}, "cluster": "v1"},
            {"name": "main", "match": {"prefix": "/"}, "cluster": "v1"},
        ],
    )
    gw = await start_gateway(data, admin=True)
    async with (
        httpx.AsyncClient(base_url=f"http://{gw.listener_address('web')}") as web,
        httpx.AsyncClient(base_url=f"http://{gw.admin_address}") as admin,
    ):
        for spec in (
            rollout_spec(name="checkout", dwell=0.5),
            rollout_spec(
                name="payments", route="payments", canary="broken", steps=[20, 100], dwell=60
            ),
        ):
            r = await admin.post("/rollouts", json=spec)
            assert r.status_code == 201, r.text

        def status(name: str) -> tuple[str, int]:
            rollout = gw.control.config.rollout(name)
            assert rollout is not None
            return rollout.status.state, rollout.status.step

        async def second_step() -> bool:
            for _ in range(5):
                assert (await web.get("/checkout")).status_code == 200
            return status("checkout") != ("running", 0)

        async def rolled_back() -> bool:
            for _ in range(5):
                await web.get("/pay")
            return status("payments")[0] == "rolled_back"

        await wait_until(second_step, within=20)
        # the step holds for its dwell (0.5 s): time to pause it there
        r = await admin.post("/rollouts/checkout/pause", json={})
        assert r.status_code == 200, r.text
        assert status("checkout") == ("paused", 1)
        await wait_until(rolled_back, within=20)
    return Rollouts(gw, stable, canary, broken)


async def test_dashboard_data_carries_each_rollout_as_the_api_shows_it(
    start_gateway: StartGateway, start_checked_upstream: StartCheckedUpstream
) -> None:
    setup = await start_rollouts(start_gateway, start_checked_upstream)
    async with httpx.AsyncClient(base_url=f"http://{setup.gateway.admin_address}") as admin:
        data = await dashboard_data(admin)
        api = (await admin.get("/rollouts")).json()
    rollouts = {r["name"]: r for r in data["rollouts"]}
    assert list(rollouts) == ["checkout", "payments"]

    checkout = rollouts["checkout"]
    assert (checkout["state"], checkout["step"], checkout["weight"]) == ("paused", 1, 50)
    assert (checkout["stable"], checkout["canary"], checkout["route"]) == ("v1", "v2", "main")
    assert [e["event"] for e in checkout["history"]] == ["started", "step_passed", "pause"]
    assert checkout["breach"] is None
    assert checkout["gates"] == {"max_error_rate": 0.01, "max_p99_ms": 1000, "min_requests": 5}
    assert set(checkout["current"]) == {
        *("step_started", "judged_at", "requests", "errors", "error_rate", "p99_ms")
    }

    payments = rollouts["payments"]
    assert (payments["state"], payments["step"], payments["weight"]) == ("rolled_back", 0, 0)
    breach = payments["breach"]
    assert (breach["gate"], breach["limit"]) == ("max_error_rate", 0.01)
    assert breach["value"] > 0.01 and breach == payments["history"][-1]
    assert payments["current"] is None  # a finished rollout has no step in progress

    # what the dashboard shows is what the rollouts API says (but the step in progress,
    # judged again in between)
    for view in (*data["rollouts"], *api):
        view.pop("current")
    assert data["rollouts"] == api
