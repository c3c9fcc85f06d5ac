"""What the fleet tests share: a config naming etcd, writes through the admin API, and
which upstream a node's listener sends a request to (the config version it serves)."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx

from gateway.config import Address
from tests.conftest import GatewayProcess, admin_json, gateway_process


def fleet_config(etcd: str, prefix: str, a: Address, b: Address, extra: str = "") -> str:
    """One listener routing to cluster ``a`` (``b`` beside it), the config kept in etcd."""
    return f"""\
admin: {{address: "127.0.0.1:0"}}
config_store:
  type: etcd
  endpoints: ["{etcd}"]
  prefix: {prefix}
  dial_timeout: 1
listeners:
  - name: web
    address: "127.0.0.1:0"
    routes: [{{name: main, match: {{prefix: /}}, cluster: a}}]
clusters:
  - {{name: a, endpoints: [{{address: "{a}"}}]}}
  - {{name: b, endpoints: [{{address: "{b}"}}]}}
{extra}"""


async def start_nodes(
    stack: AsyncExitStack, config: Path, count: int, tmp_path: Path
) -> list[GatewayProcess]:
    """``count`` nodes of one fleet, each with its own cache (state file), started in turn."""
    nodes = []
    for i in range(count):
        state = tmp_path / f"node{i}.state.json"
        nodes.append(await stack.enter_async_context(gateway_process(config, state_file=state)))
    return nodes


async def served_by(node: GatewayProcess) -> str:
    """The upstream the node's listener sent a request to."""
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.get(f"http://{node.listeners['web']}/")
    assert r.status_code == 200, r.text
    return r.headers["x-upstream"]


async def route_to(
    node: GatewayProcess, cluster: str, *, if_match: int | None = None
) -> httpx.Response:
    """``PUT /config`` on ``node`` with the route sent to ``cluster``."""
    config: dict[str, Any] = await admin_json(node.admin, "/config")
    version = config.pop("version")
    del config["admin"], config["config_store"]
    config["listeners"][0]["routes"][0]["cluster"] = cluster
    match = version if if_match is None else if_match
    async with httpx.AsyncClient(timeout=20) as client:
        return await client.put(
            f"http://{node.admin}/config", json=config, headers={"If-Match": f'"{match}"'}
        )


async def version_of(node: GatewayProcess) -> int:
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.get(f"http://{node.admin}/config")
    assert r.status_code == 200, r.text
    version = int(r.headers["etag"].strip('"'))
    assert version == r.json()["version"]
    return version
