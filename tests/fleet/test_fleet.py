"""Three ``triogate run`` nodes sharing one config through a real etcd.

A write on one node is served by the others; concurrent writes conflict as ``If-Match``
does (one wins, the other gets 412); with etcd down traffic flows on the last config
and writes get 503 naming etcd; a node that missed writes while cut from its watch
catches up (from its revision, or by reading the prefix again after a compaction);
registrations and the rollout leadership are the fleet's, not a node's.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.conftest import (
    GatewayProcess,
    StartUpstream,
    admin_json,
    gateway_process,
    wait_until,
    worker_rows,
)
from tests.fleet.conftest import EtcdServer, freeze, thaw
from tests.fleet.fleet_support import (
    fleet_config,
    route_to,
    served_by,
    start_nodes,
    version_of,
)
from tests.gateway.rollout_support import load, rollout_spec


def serves(node: object, upstream: str):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return await served_by(node) == upstream  # type: ignore[arg-type]

    return check


async def test_a_write_on_one_node_is_served_by_the_others(
    etcd: EtcdServer, start_upstream: StartUpstream, tmp_path: Path
) -> None:
    a, b = await start_upstream("a"), await start_upstream("b")
    config = tmp_path / "fleet.yaml"
    config.write_text(fleet_config(etcd.url, "/triogate/test", a, b))
    async with AsyncExitStack() as stack:
        first, second, third = await start_nodes(stack, config, 3, tmp_path)
        # the first seeded etcd from the file; the others found its config there
        assert first.lines[0].startswith("etcd /triogate/test was empty: seeded it from")
        for node in (second, third):
            assert node.lines[0].startswith("etcd /triogate/test holds config version 1")
        for node in (first, second, third):
            assert await served_by(node) == "a"
        r = await route_to(first, "b")
        assert r.status_code == 200, r.text
        assert r.headers["etag"] == '"2"'
        for node in (second, third):
            await wait_until(serves(node, "b"), within=10)
        assert [await version_of(n) for n in (first, second, third)] == [2, 2, 2]
        # each node's key carries its admin address once its admin API serves
        admins = sorted(str(n.admin) for n in (first, second, third))
        # and the version it runs, within a round of its session
        nodes = await wait_until(lambda: _fleet_listing(second, admins, 2), within=10)
        assert sum(n["leader"] for n in nodes) == 1
        assert [n["self"] for n in nodes].count(True) == 1
    # a node started again with the same file changes nothing in etcd
    async with gateway_process(config, state_file=tmp_path / "again.json") as again:
        assert again.lines[0].startswith("etcd /triogate/test holds config version 2")
        assert await served_by(again) == "b"


async def test_concurrent_conflicting_writes_one_wins_the_other_gets_412(
    etcd: EtcdServer, start_upstream: StartUpstream, tmp_path: Path
) -> None:
    a, b = await start_upstream("a"), await start_upstream("b")
    config = tmp_path / "fleet.yaml"
    config.write_text(fleet_config(etcd.url, "/triogate/race", a, b))
    async with AsyncExitStack() as stack:
        nodes = await start_nodes(stack, config, 3, tmp_path)
        for _ in range(5):
            version = await version_of(nodes[0])
            await wait_until(lambda v=version: _all_at(nodes, v), within=10)
            # both valid, both read the same version, on two nodes at once
            statuses = await _race(nodes[0], nodes[1], version)
            assert sorted(statuses.values()) == [200, 412], statuses
            winner = "b" if statuses["b"] == 200 else "a"
            for node in nodes:  # the winner's change, on every node
                await wait_until(serves(node, winner), within=10)
                assert await version_of(node) == version + 1


async def test_writes_without_if_match_on_two_nodes_both_land(
    etcd: EtcdServer, start_upstream: StartUpstream, tmp_path: Path
) -> None:
    a, b = await start_upstream("a"), await start_upstream("b")
    config = tmp_path / "fleet.yaml"
    config.write_text(fleet_config(etcd.url, "/triogate/merge", a, b))
    async with AsyncExitStack() as stack:
        first, second = await start_nodes(stack, config, 2, tmp_path)
        answers: list[httpx.Response] = []

        async def add_faults(node: GatewayProcess, prefix: str) -> None:
            async with httpx.AsyncClient(timeout=20) as client:
                for i in range(5):
                    body = {"name": f"{prefix}{i}", "percent": 0, "abort": {"status": 503}}
                    answers.append(await client.post(f"http://{node.admin}/faults", json=body))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(add_faults, first, "first-")
            nursery.start_soon(add_faults, second, "second-")
        # a write that found the other node first was tried again on its config: no
        # write lost, none refused
        assert [r.status_code for r in answers] == [201] * 10, [r.text for r in answers]
        for node in (first, second):
            await wait_until(lambda n=node: _at_least(n, 11), within=10)
            faults = await admin_json(node.admin, "/faults")
            assert len(faults) == 10
        assert await version_of(first) == await version_of(second) == 11


async def _race(first: GatewayProcess, second: GatewayProcess, version: int) -> dict[str, int]:
    """``first`` routes to b and ``second`` to a, both with ``If-Match: version``."""
    statuses: dict[str, int] = {}

    async def write(node: GatewayProcess, cluster: str) -> None:
        r = await route_to(node, cluster, if_match=version)
        statuses[cluster] = r.status_code

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write, first, "b")
        nursery.start_soon(write, second, "a")
    return statuses


async def _fleet_listing(
    node: GatewayProcess, admins: list[str], version: int
) -> list[dict[str, Any]] | None:
    """``GET /fleet`` on ``node`` once it lists exactly the nodes at ``admins``, each
    at ``version``."""
    listed: list[dict[str, Any]] = await admin_json(node.admin, "/fleet")
    found = sorted(str(n["address"]) for n in listed)
    if found != admins or any(n["version"] != version for n in listed):
        return None
    return listed


async def _all_at(nodes: list, version: int) -> bool:  # type: ignore[type-arg]
    return all([await version_of(n) == version for n in nodes])


async def _at_least(node: object, version: int) -> bool:
    return await version_of(node) >= version  # type: ignore[arg-type]


async def test_with_etcd_down_traffic_flows_writes_get_503_and_nodes_catch_up(
    etcd: EtcdServer, start_upstream: StartUpstream, tmp_path: Path
) -> None:
    a, b = await start_upstream("a"), await start_upstream("b")
    config = tmp_path / "fleet.yaml"
    config.write_text(fleet_config(etcd.url, "/triogate/outage", a, b))
    async with AsyncExitStack() as stack:
        first, second = await start_nodes(stack, config, 2, tmp_path)
        assert (await route_to(first, "b")).status_code == 200
        await wait_until(serves(second, "b"), within=10)
        await etcd.stop()
        # traffic keeps flowing on the last config; a write is refused, naming etcd
        for node in (first, second):
            assert await served_by(node) == "b"
        r = await route_to(second, "a")
        assert r.status_code == 503, r.text
        assert "etcd" in r.json()["detail"]
        assert await version_of(second) == 2
        # a node that starts now starts from its cache, says so first, refuses writes
        cache = tmp_path / "node0.state.json"
        third = await stack.enter_async_context(gateway_process(config, state_file=cache))
        assert third.lines[0].startswith("etcd unreachable"), third.lines
        assert "local cache" in third.lines[0]
        assert await served_by(third) == "b"
        refused = await route_to(third, "a")
        assert refused.status_code == 503 and "etcd" in refused.json()["detail"]
        await etcd.start()
        # once etcd is back a write is taken, and reaches every node, the late one too
        await wait_until(lambda: _write_taken(first, "a"), within=20)
        for node in (second, third):
            await wait_until(serves(node, "a"), within=20)
        assert len({await version_of(n) for n in (first, second, third)}) == 1
        assert (await route_to(third, "b")).status_code == 200


async def _write_taken(node: object, cluster: str) -> bool:
    r = await route_to(node, cluster)  # type: ignore[arg-type]
    assert r.status_code in (200, 503), r.text
    return r.status_code == 200


async def test_writes_made_while_a_node_was_cut_from_its_watch_reach_it(
    etcd: EtcdServer, start_upstream: StartUpstream, tmp_path: Path
) -> None:
    a, b = await start_upstream("a"), await start_upstream("b")
    config = tmp_path / "fleet.yaml"
    config.write_text(fleet_config(etcd.url, "/triogate/cut", a, b))
    async with AsyncExitStack() as stack:
        writer, late = await start_nodes(stack, config, 2, tmp_path)
        for target, compact in (("b", False), ("a", True)):
            # frozen while etcd restarts: its watch's connection is gone when it wakes
            freeze(late.process)
            try:
                await etcd.stop()
                await etcd.start()
                await wait_until(lambda t=target: _write_taken(writer, t), within=20)
                if compact:  # the revisions it missed are compacted away: it reads again
                    header = await etcd.call("/v3/kv/range", {"key": "eA=="})
                    revision = header["header"]["revision"]  # type: ignore[index]
                    await etcd.call("/v3/kv/compaction", {"revision": revision})
            finally:
                thaw(late.process)
            await wait_until(serves(late, target), within=20)
            assert await version_of(late) == await version_of(writer)


async def _leader(nodes: list[GatewayProcess]) -> GatewayProcess:
    """The node that drives the rollouts, as ``/fleet`` says once one does."""

    async def found() -> str | None:
        listed = await admin_json(nodes[0].admin, "/fleet")
        leaders = [n["address"] for n in listed if n["leader"]]
        return leaders[0] if leaders else None

    address = await wait_until(found, within=20)
    [leader] = [n for n in nodes if str(n.admin) == address]
    return leader


async def _rollout(node: GatewayProcess) -> dict[str, Any]:
    view: dict[str, Any] = await admin_json(node.admin, "/rollouts/checkout-v2")
    return view


async def test_the_rollout_leader_killed_mid_rollout_another_node_continues_it(
    etcd: EtcdServer, start_upstream: StartUpstream, tmp_path: Path
) -> None:
    a, b = await start_upstream("a"), await start_upstream("b")
    config = tmp_path / "fleet.yaml"
    config.write_text(fleet_config(etcd.url, "/triogate/leader", a, b))
    spec = rollout_spec(stable="a", canary="b", steps=[10, 40, 70, 100], dwell=1.0, interval=0.2)
    async with AsyncExitStack() as stack:
        nodes = await start_nodes(stack, config, 3, tmp_path)
        leader = await _leader(nodes)
        followers = [n for n in nodes if n is not leader]
        async with httpx.AsyncClient(timeout=20) as client:
            r = await client.post(f"http://{followers[0].admin}/rollouts", json=spec)
        assert r.status_code == 201, r.text
        async with load(leader.listeners["web"]):
            # the leader's judgements move it; the followers serve its weights
            await wait_until(lambda: _at_step(followers[1], 1), within=20)
        moved = await _rollout(followers[1])
        assert moved["state"] == "running"
        leader.process.kill()
        async with load(followers[0].listeners["web"]), load(followers[1].listeners["web"]):
            await wait_until(lambda: _in_state(followers[1], "succeeded"), within=40)
        done = await _rollout(followers[0])
        weights = [e["weight"] for e in done["history"]]
        assert weights == sorted(weights)  # it went on from its step, never back
        assert done["history"][-1]["event"] == "last_step_passed"
        assert (await _leader(followers)) in followers


async def _at_step(node: GatewayProcess, step: int) -> bool:
    return bool((await _rollout(node))["step"] >= step)


async def _in_state(node: GatewayProcess, state: str) -> bool:
    return bool((await _rollout(node))["state"] == state)


async def test_a_registration_through_one_node_expires_on_every_node(
    etcd: EtcdServer, start_upstream: StartUpstream, tmp_path: Path
) -> None:
    a, b = await start_upstream("a"), await start_upstream("b")
    instance = await start_upstream("instance")
    config = tmp_path / "fleet.yaml"
    extra = "  - {name: pool, discovery: {type: registry, default_ttl: 2}}\n"
    text = fleet_config(etcd.url, "/triogate/registry", a, b).replace(
        "clusters:\n", "clusters:\n" + extra
    )
    config.write_text(text)
    async with AsyncExitStack() as stack:
        nodes = await start_nodes(stack, config, 3, tmp_path)
        first = nodes[0]
        path = "/clusters/pool/endpoints"
        async with httpx.AsyncClient(timeout=20) as client:
            r = await client.post(f"http://{first.admin}{path}", json={"address": str(instance)})
            assert r.status_code == 201, r.text
            assert r.json()["ttl"] == 2
            for node in nodes:  # every node serves it, as its own cluster's member
                await wait_until(lambda n=node: _members(n, [str(instance)]), within=10)
            # heartbeats through another node keep it
            for _ in range(4):
                beat = await client.put(
                    f"http://{nodes[1].admin}{path}/{instance}/heartbeat", json={}
                )
                assert beat.status_code == 200, beat.text
                await trio.sleep(1)
            for node in nodes:
                assert await _members(node, [str(instance)])
        # no more heartbeats: etcd's lease expires, and every node drops it
        for node in nodes:
            await wait_until(lambda n=node: _members(n, []), within=15)
        async with httpx.AsyncClient(timeout=20) as client:
            gone = await client.put(f"http://{nodes[2].admin}{path}/{instance}/heartbeat", json={})
        assert gone.status_code == 404, gone.text


async def _members(node: GatewayProcess, addresses: list[str]) -> bool:
    view = await admin_json(node.admin, "/clusters/pool/discovery")
    return sorted(e["address"] for e in view["endpoints"]) == addresses


async def test_a_node_with_two_workers_takes_part(
    etcd: EtcdServer, start_upstream: StartUpstream, tmp_path: Path
) -> None:
    """The store watch and commits live in the primary's control plane: its worker
    processes serve what the fleet writes, and a write through it reaches the others."""
    a, b = await start_upstream("a"), await start_upstream("b")
    config = tmp_path / "fleet.yaml"
    config.write_text(fleet_config(etcd.url, "/triogate/workers", a, b))
    async with AsyncExitStack() as stack:
        plain = await stack.enter_async_context(
            gateway_process(config, state_file=tmp_path / "plain.json")
        )
        pooled = await stack.enter_async_context(
            gateway_process(config, state_file=tmp_path / "pooled.json", workers=2)
        )
        assert await served_by(pooled) == "a"

        async def every_connection_to(upstream: str) -> bool:
            # a new connection each: SO_REUSEPORT spreads them over both workers
            return [await served_by(pooled) for _ in range(12)] == [upstream] * 12

        r = await route_to(plain, "b")
        assert r.status_code == 200, r.text
        await wait_until(lambda: every_connection_to("b"), within=10)
        rows = await worker_rows(pooled.admin)
        assert [row["version"] for row in rows] == [2, 2]
        assert all(row["downstream_rq_total"] > 0 for row in rows), rows
        r = await route_to(pooled, "a")
        assert r.status_code == 200, r.text
        await wait_until(serves(plain, "a"), within=10)
        await wait_until(lambda: every_connection_to("a"), within=10)
