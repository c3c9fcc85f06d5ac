"""Staged rollouts end to end: a gateway with its admin API, real upstreams, httpx clients.

A load of keep-alive clients runs through every test, and each answer is kept with the
upstream that sent it (``x-upstream``): a healthy canary walks its steps to 100% with
every request answered 200; a canary that starts failing is rolled back at the first
judgement after its failures cross the gate, and every failed answer came from the
canary, none from the stable share; the operator's commands move the rollout as its
state allows (409 otherwise, 404 for an unknown rollout, 422 naming the field of a bad
spec with nothing changed).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import attrs
import httpx
import pytest
import trio

from gateway.app import Gateway
from gateway.config import Address
from tests.conftest import CheckedUpstream, simple_config, wait_until
from tests.gateway.rollout_support import load, rollout_spec

StartGateway = Callable[..., Awaitable[Gateway]]
StartChecked = Callable[[str], Awaitable[CheckedUpstream]]


@attrs.frozen
class Rig:
    gateway: Gateway
    admin: httpx.AsyncClient
    stable: CheckedUpstream
    canary: CheckedUpstream

    @property
    def web(self) -> Address:
        return self.gateway.listener_address("web")

    async def rollout(self, name: str = "checkout-v2") -> dict[str, Any]:
        r = await self.admin.get(f"/rollouts/{name}")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    async def state(self, name: str = "checkout-v2") -> str:
        return str((await self.rollout(name))["state"])

    async def route_split(self) -> dict[str, int]:
        config = (await self.admin.get("/config")).json()
        [route] = config["listeners"][0]["routes"]
        if route["cluster"] is not None:
            return {route["cluster"]: 100}
        return {wc["cluster"]: wc["weight"] for wc in route["split"]}


@pytest.fixture
async def rig(
    start_checked_upstream: StartChecked, start_gateway: StartGateway
) -> AsyncIterator[Rig]:
    stable, canary = await start_checked_upstream("v1"), await start_checked_upstream("v2")
    config = simple_config(
        {"v1": [stable.address], "v2": [canary.address]},
        routes=[{"name": "main", "match": {"prefix": "/"}, "cluster": "v1"}],
    )
    gateway = await start_gateway(config, admin=True)
    async with httpx.AsyncClient(base_url=f"http://{gateway.admin_address}") as admin:
        yield Rig(gateway, admin, stable, canary)


async def test_a_healthy_canary_walks_its_steps_to_100(rig: Rig) -> None:
    async with load(rig.web) as running:
        r = await rig.admin.post("/rollouts", json=rollout_spec())
        assert r.status_code == 201, r.text
        assert r.headers["location"] == "/rollouts/checkout-v2"
        started = r.json()
        assert (started["state"], started["step"], started["weight"]) == ("running", 0, 10)
        assert await rig.route_split() == {"v1": 90, "v2": 10}
        await wait_until(_state_is(rig, "succeeded"), within=20)
    done = await rig.rollout()
    assert done["weight"] == 100
    moves = [(e["event"], e["state"], e["weight"]) for e in done["history"]]
    assert moves == [
        ("started", "running", 10),
        ("step_passed", "running", 50),
        ("step_passed", "running", 100),
        ("last_step_passed", "succeeded", 100),
    ]
    times = [e["at"] for e in done["history"]]
    assert times == sorted(times)
    # each step held for its dwell at least
    assert all(b - a >= 0.4 for a, b in itertools.pairwise(times))
    assert await rig.route_split() == {"v1": 0, "v2": 100}
    assert not running.errors
    assert running.count("v1", 200) + running.count("v2", 200) == sum(running.answers.values())
    # the canary was judged on its own requests on the route, counted while the rollout
    # watched it (not after it succeeded)
    stats = (await rig.admin.get("/stats")).json()["counters"]
    counted = stats["listener.web.route.main.cluster.v2.upstream_rq_2xx"]
    assert 3 * 5 <= counted <= running.count("v2")
    assert stats["listener.web.route.main.cluster.v2.upstream_rq_5xx"] == 0
    # a finished rollout never moves again
    for action in ("pause", "resume", "abort", "promote"):
        r = await rig.admin.post(f"/rollouts/checkout-v2/{action}", json={})
        assert r.status_code == 409, (action, r.text)
        assert "succeeded" in r.json()["detail"]
    assert await rig.route_split() == {"v1": 0, "v2": 100}


def _state_is(rig: Rig, state: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await rig.state() == state

    return check


async def test_a_failing_canary_is_rolled_back_and_users_of_stable_see_no_failure(
    rig: Rig,
) -> None:
    interval = 0.5
    spec = rollout_spec(steps=[20, 50, 100], dwell=60, interval=interval)
    async with load(rig.web) as running:
        r = await rig.admin.post("/rollouts", json=spec)
        assert r.status_code == 201, r.text
        # the canary serves well through a few judgements, then starts failing
        await wait_until(lambda: running.count("v2", 200) >= 20, within=10)
        await trio.sleep(interval)
        rig.canary.failing = True
        failing_since = trio.current_time()
        wall_since = time.time()
        await wait_until(_state_is(rig, "rolled_back"), within=10)
        rolled_back_after = trio.current_time() - failing_since
        served_canary = running.count("v2")
        # nothing goes to the canary once its weight is 0
        served_stable = running.count("v1")
        await wait_until(lambda: running.count("v1") > served_stable + 50, within=10)
    assert running.count("v2") == served_canary
    done = await rig.rollout()
    assert (done["state"], done["weight"]) == ("rolled_back", 0)
    breach = done["breach"]
    assert breach["gate"] == "max_error_rate"
    assert breach["value"] > breach["limit"] == 0.01
    assert breach["at"] >= wall_since
    # judged every interval: the first judgement with the failures in it rolled back
    assert rolled_back_after < 2 * interval, rolled_back_after
    assert [e["event"] for e in done["history"]] == ["started", "gate_breached"]
    assert await rig.route_split() == {"v1": 100, "v2": 0}
    # every failed answer came from the canary; the stable share never failed
    assert not running.errors
    assert running.count("v2", 503) > 0
    assert running.count("v1") == running.count("v1", 200)
    assert running.count("gateway") == 0


async def test_a_slow_canary_breaches_the_p99_gate(rig: Rig) -> None:
    spec = rollout_spec(
        steps=[50, 100],
        dwell=60,
        interval=0.3,
        gates={"max_error_rate": 0.5, "max_p99_ms": 30, "min_requests": 5},
    )
    rig.canary.delay = 0.08
    async with load(rig.web):
        r = await rig.admin.post("/rollouts", json=spec)
        assert r.status_code == 201, r.text
        await wait_until(_state_is(rig, "rolled_back"), within=10)
    breach = (await rig.rollout())["breach"]
    assert breach["gate"] == "max_p99_ms"
    assert breach["value"] > 30 == breach["limit"]


async def test_too_few_requests_hold_the_step(rig: Rig) -> None:
    # no traffic: the step has fewer than min_requests, so it is never judged
    r = await rig.admin.post("/rollouts", json=rollout_spec(dwell=0.1, interval=0.05))
    assert r.status_code == 201, r.text
    await trio.sleep(0.5)
    view = await rig.rollout()
    assert (view["state"], view["step"], view["weight"]) == ("running", 0, 10)
    assert view["current"]["requests"] == 0
    assert view["current"]["judged_at"] is not None


async def test_commands_move_the_rollout_as_its_state_allows(rig: Rig) -> None:
    r = await rig.admin.post("/rollouts", json=rollout_spec(dwell=60))
    assert r.status_code == 201, r.text
    r = await rig.admin.post("/rollouts/checkout-v2/resume", json={})
    assert r.status_code == 409 and "running" in r.json()["detail"], r.text
    r = await rig.admin.post("/rollouts/checkout-v2/pause", json={})
    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["weight"]) == ("paused", 10)
    assert await rig.route_split() == {"v1": 90, "v2": 10}
    r = await rig.admin.post("/rollouts/checkout-v2/pause", json={})
    assert r.status_code == 409
    r = await rig.admin.post("/rollouts/checkout-v2/resume", json={})
    assert (r.status_code, r.json()["state"]) == (200, "running")
    r = await rig.admin.post("/rollouts/checkout-v2/promote", json={})
    assert (r.json()["state"], r.json()["weight"]) == ("succeeded", 100)
    assert await rig.route_split() == {"v1": 0, "v2": 100}
    events = [e["event"] for e in r.json()["history"]]
    assert events == ["started", "pause", "resume", "promote"]
    # a second rollout of the same route, then aborted
    r = await rig.admin.post("/rollouts", json=rollout_spec(name="back", stable="v2", canary="v1"))
    assert r.status_code == 201, r.text
    assert await rig.route_split() == {"v2": 90, "v1": 10}
    r = await rig.admin.post("/rollouts/back/abort", json={})
    assert (r.json()["state"], r.json()["weight"]) == ("aborted", 0)
    assert await rig.route_split() == {"v2": 100, "v1": 0}
    r = await rig.admin.post("/rollouts/nope/pause", json={})
    assert r.status_code == 404
    r = await rig.admin.get("/rollouts")
    assert [v["name"] for v in r.json()] == ["checkout-v2", "back"]
    r = await rig.admin.delete("/rollouts/back")
    assert r.status_code == 204
    assert (await rig.admin.get("/rollouts/back")).status_code == 404
    assert await rig.route_split() == {"v2": 100, "v1": 0}  # the split stays


async def test_a_bad_rollout_is_refused_by_field_and_changes_nothing(rig: Rig) -> None:
    before = (await rig.admin.get("/config")).json()
    cases = {
        "rollouts[0].canary": rollout_spec(canary="nope"),
        "rollouts[0].route": rollout_spec(route="other"),
        "rollouts[0].listener": rollout_spec(listener="nope"),
        "rollouts[0].steps": rollout_spec(steps=[50, 20]),
        "rollouts[0].dwell": rollout_spec(dwell=0),
        "rollouts[0].gates.max_error_rate": rollout_spec(gates={"max_error_rate": 2}),
        "rollouts[0].status": {**rollout_spec(), "status": {"state": "succeeded"}},
    }
    for loc, body in cases.items():
        r = await rig.admin.post("/rollouts", json=body)
        assert r.status_code == 422, (loc, r.text)
        assert loc in [i["loc"] for i in r.json()["detail"]], (loc, r.text)
    assert (await rig.admin.get("/config")).json() == before
    r = await rig.admin.post("/rollouts", json=rollout_spec(dwell=60))
    assert r.status_code == 201
    r = await rig.admin.post("/rollouts", json=rollout_spec(dwell=60))
    assert r.status_code == 409
    # a route the rollout owns cannot go to a third cluster, nor be removed, while it runs
    config = (await rig.admin.get("/config")).json()
    config["listeners"][0]["routes"][0]["split"][0]["cluster"] = "v3"
    config["clusters"].append({"name": "v3", "endpoints": [{"address": "127.0.0.1:9"}]})
    r = await rig.admin.put("/config", json=config)
    assert r.status_code == 422 and "rollouts[0].route" in r.text, r.text
