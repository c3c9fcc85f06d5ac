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

import httpx
import trio

from tests.conftest import StartUpstream, admin_json, gateway_process, wait_until
from tests.fleet.conftest import EtcdServer, freeze, thaw
from tests.fleet.fleet_support import (
    fleet_config,
    route_to,
    served_by,
    start_nodes,
    version_of,
)


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
        nodes = await admin_json(second.admin, "/fleet")
        assert sorted(n["address"] for n in nodes) == sorted(
            str(n.admin) for n in (first, second, third)
        )
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
        for round_ in range(5):
            version = await version_of(nodes[0])
            await wait_until(lambda v=version: _all_at(nodes, v), within=10)
            statuses: dict[str, int] = {}

            async def write(node: object, cluster: str) -> None:
                r = await route_to(node, cluster, if_match=version)  # type: ignore[arg-type]
                statuses[cluster] = r.status_code

            async with trio.open_nursery() as nursery:
                nursery.start_soon(write, nodes[0], "b" if round_ % 2 == 0 else "a")
                nursery.start_soon(write, nodes[1], "x")
            # the loser's change names a cluster that exists on every node: "x" does not,
            # so a refusal by validation would be 422, never 412
            assert sorted(statuses.values()) in ([200, 412], [412, 422], [200, 422]), statuses
            assert list(statuses.values()).count(200) <= 1
        for node in nodes:
            await wait_until(lambda n=node: _at_least(n, version + 1), within=10)
        assert len({await version_of(n) for n in nodes}) == 1


async def _all_at(nodes: list, version: int) -> bool:  # type: ignore[type-arg]
    return all([await version_of(n) == version for n in nodes])


async def _at_least(node: object, version: int) -> bool:
    return await version_of(node) >= version  # type: ignore[arg-type]
