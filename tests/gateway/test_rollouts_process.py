"""Staged rollouts in ``triogate run`` processes: across a restart, and with worker processes.

A rollout's status is persisted with the config at every move, so a gateway stopped in
the middle of one and started again from its state file resumes it at the step it was
at, its dwell starting again; with ``--workers 2`` the canary's figures are summed from
both workers and the rollout walks, or rolls back, exactly as in one process.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import httpx

from gateway.config import Address
from gateway.control.state import load_state
from tests.conftest import CheckedUpstream, admin_json, gateway_process, wait_until, worker_rows
from tests.gateway.rollout_support import load, rollout_spec

StartChecked = Callable[[str], Awaitable[CheckedUpstream]]


def config_text(stable: Address, canary: Address) -> str:
    return f"""\
admin: {{address: "127.0.0.1:0"}}
listeners:
  - name: web
    address: "127.0.0.1:0"
    routes: [{{name: main, match: {{prefix: /}}, cluster: v1}}]
clusters:
  - {{name: v1, endpoints: [{{address: "{stable}"}}]}}
  - {{name: v2, endpoints: [{{address: "{canary}"}}]}}
"""


async def rollout(admin: Address, name: str = "checkout-v2") -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=20) as client:
        r = await client.get(f"http://{admin}/rollouts/{name}")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body


async def post(admin: Address, path: str, body: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=20) as client:
        return await client.post(f"http://{admin}{path}", json=body)


def reaches(
    admin: Address, state: str, step: int = 0, name: str = "checkout-v2"
) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        view = await rollout(admin, name)
        return view["state"] == state and view["step"] >= step

    return check


async def test_a_rollout_resumes_at_its_step_after_a_restart(
    tmp_path: Path, start_checked_upstream: StartChecked
) -> None:
    stable, canary = await start_checked_upstream("v1"), await start_checked_upstream("v2")
    config, state = tmp_path / "gw.yaml", tmp_path / "gw.yaml.state.json"
    config.write_text(config_text(stable.address, canary.address))
    spec = rollout_spec(steps=[10, 40, 70, 100], dwell=0.5, interval=0.1)
    async with gateway_process(config, state_file=state) as gateway:
        r = await post(gateway.admin, "/rollouts", spec)
        assert r.status_code == 201, r.text
        async with load(gateway.listeners["web"]):
            await wait_until(reaches(gateway.admin, "running", step=1), within=20)
    saved = load_state(state)
    assert saved is not None
    saved_rollout = saved.rollout("checkout-v2")
    assert saved_rollout is not None
    status = saved_rollout.status
    assert status.state == "running" and 1 <= status.step <= 2, status
    stopped = time.time()

    async with gateway_process(config, state_file=state) as gateway:
        # no traffic yet: the rollout is where it was, its dwell started again
        view = await rollout(gateway.admin)
        assert (view["state"], view["step"], view["weight"]) == (
            "running",
            status.step,
            status.weight,
        )
        assert view["history"] == [attrs.asdict(e) for e in status.history]
        assert view["current"]["step_started"] >= stopped
        [route] = (await admin_json(gateway.admin, "/config"))["listeners"][0]["routes"]
        weights = {wc["cluster"]: wc["weight"] for wc in route["split"]}
        assert weights == {"v1": 100 - status.weight, "v2": status.weight}
        async with load(gateway.listeners["web"]) as running:
            await wait_until(reaches(gateway.admin, "succeeded"), within=20)
        done = await rollout(gateway.admin)
    weights_seen = [e["weight"] for e in done["history"]]
    assert weights_seen == sorted(weights_seen)  # it never went back a step
    assert [e["event"] for e in done["history"]][-1] == "last_step_passed"
    assert not running.errors
    assert sum(running.answers.values()) == running.count("v1", 200) + running.count("v2", 200)


async def test_with_two_workers_a_rollout_walks_and_another_rolls_back(
    tmp_path: Path, start_checked_upstream: StartChecked
) -> None:
    stable, canary = await start_checked_upstream("v1"), await start_checked_upstream("v2")
    config = tmp_path / "gw.yaml"
    config.write_text(config_text(stable.address, canary.address))
    async with gateway_process(config, workers=2) as gateway:
        web = gateway.listeners["web"]
        r = await post(gateway.admin, "/rollouts", rollout_spec(dwell=0.3, interval=0.2))
        assert r.status_code == 201, r.text
        # 16 keep-alive clients: SO_REUSEPORT hashes each connection to a worker, so all
        # on one is a 2 ** -15 chance (with 8 it failed about one run in a hundred)
        async with load(web, clients=16) as running:
            await wait_until(reaches(gateway.admin, "succeeded"), within=30)
        assert not running.errors
        assert running.count("v2", 200) > 0 and running.count("v2") == running.count("v2", 200)
        # both workers served the canary's share: their figures are summed for the judge
        rows = await worker_rows(gateway.admin)
        assert len(rows) == 2 and all(row["downstream_rq_total"] > 0 for row in rows), rows

        # back to v1, which now fails: rolled back on the workers' summed figures
        canary_back = rollout_spec(
            name="back", stable="v2", canary="v1", steps=[20, 100], dwell=60, interval=0.2
        )
        stable.failing = True
        r = await post(gateway.admin, "/rollouts", canary_back)
        assert r.status_code == 201, r.text
        async with load(web, clients=8) as running:
            await wait_until(reaches(gateway.admin, "rolled_back", name="back"), within=30)
            served = running.count("v1")
            before = running.count("v2")
            await wait_until(lambda: running.count("v2") > before + 50, within=10)
        assert running.count("v1") == served  # nothing to the rolled-back canary
        assert running.count("v2") == running.count("v2", 200)  # the stable share never failed
        back = await rollout(gateway.admin, "back")
        assert back["breach"]["gate"] == "max_error_rate" and back["weight"] == 0
