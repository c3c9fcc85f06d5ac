"""A change is applied fully or not at all: bind, persist and actor failures roll back.

Each test reads the running state before and after a failed change: live routing with
real requests, ``/status``, ``GET /config``, the state file, and the identity of the
actors' handles (a restarted listener or cluster would have a new incarnation).
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from gateway.app import Gateway
from gateway.cluster import actor as cluster_actor
from gateway.config import Address, Cluster
from gateway.listener import context as listener_context
from tests.admin.admin_support import UPSTREAMS, admin_config, issue_locs

StartGateway = Callable[..., Awaitable[Gateway]]


class Running:
    """A gateway with the admin API and a state file, and clients for both sides."""

    def __init__(self, gateway: Gateway, state: Path, admin: httpx.AsyncClient) -> None:
        self.gateway = gateway
        self.state = state
        self.admin = admin

    def web_url(self) -> str:
        return f"http://{self.gateway.listener_address('web')}"

    async def snapshot(self) -> dict[str, Any]:
        """Everything a refused change must leave as it was."""
        config = (await self.admin.get("/config")).json()
        status = (await self.admin.get("/status")).json()
        control = self.gateway.control
        return {
            "config": config,
            "status_listeners": {k: v["address"] for k, v in status["listeners"].items()},
            "status_weights": {
                name: [(e["address"], e["weight"], e["state"]) for e in c["endpoints"]]
                for name, c in status["clusters"].items()
            },
            "state_file": self.state.read_text() if self.state.is_file() else None,
            "listener_handles": {k: id(v) for k, v in control.listeners.items()},
            "cluster_handles": {k: id(v) for k, v in control.clusters.items()},
            "snapshots": {k: v.snapshot.config for k, v in control.clusters.items()},
        }

    async def served_by(self, url: str | None = None) -> str:
        async with httpx.AsyncClient(base_url=url or self.web_url()) as web:
            r = await web.get("/")
        assert r.status_code == 200, r.text
        return str(r.json()["upstream"])


@pytest.fixture
async def running(
    tmp_path: Path,
    start_upstream: Callable[[str], Awaitable[Address]],
    start_gateway: StartGateway,
) -> AsyncIterator[Running]:
    upstreams = {name: await start_upstream(name) for name in UPSTREAMS}
    state = tmp_path / "state" / "gateway.state.json"
    state.parent.mkdir()
    gateway = await start_gateway(admin_config(upstreams), admin=True, state_path=state)
    async with httpx.AsyncClient(base_url=f"http://{gateway.admin_address}") as admin:
        # one acknowledged change, so the state file exists and has content to compare
        r = await admin.patch(
            "/clusters/a", json={"pool": {"max_idle": 64}}, headers={"If-Match": '"1"'}
        )
        assert r.status_code == 200, r.text
        yield Running(gateway, state, admin)


def _held_port() -> socket.socket:
    """A port another process could hold: bound and listening, without SO_REUSEPORT."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    return busy


async def test_a_refused_bind_changes_nothing(running: Running) -> None:
    config, _ = (await running.admin.get("/config")).json(), None
    before = await running.snapshot()
    assert await running.served_by() == "a"
    old_port = running.gateway.listener_address("web").port
    with _held_port() as busy:
        port = busy.getsockname()[1]
        config["clusters"][0]["endpoints"][0]["weight"] = 7
        config["listeners"][0]["address"] = f"127.0.0.1:{port}"
        r = await running.admin.put("/config", json=config)
        assert issue_locs(r) == ["listeners[0].address"]
        assert "cannot bind" in r.text and str(port) in r.text
    after = await running.snapshot()
    assert after == before
    # the old listener still serves on its port, and the cluster runs its old weight
    assert running.gateway.listener_address("web").port == old_port
    assert await running.served_by() == "a"
    weights = [e.weight for e in running.gateway.control.clusters["a"].snapshot.config.endpoints]
    assert weights == [1]


async def test_a_failed_persist_rolls_back_and_names_the_cause(running: Running) -> None:
    before = await running.snapshot()
    folder = running.state.parent
    moved = folder.with_name("moved-away")
    folder.rename(moved)
    folder.write_text("a file where the state folder was\n")
    try:
        r = await running.admin.patch(
            "/clusters/a", json={"lb_policy": "random"}, headers={"If-Match": '"2"'}
        )
        assert r.status_code == 503, r.text
        assert "state file" in r.json()["detail"] and str(folder) in r.json()["detail"]
        after = await running.snapshot()
        before["state_file"] = after["state_file"] = None  # the folder is gone: compare the rest
        assert after == before
        assert running.gateway.control.clusters["a"].snapshot.config.lb_policy == "round_robin"
        assert await running.served_by() == "a"
    finally:
        folder.unlink()
        moved.rename(folder)
    # the same change goes through once the state can be written, and is persisted
    r = await running.admin.patch(
        "/clusters/a", json={"lb_policy": "random"}, headers={"If-Match": '"2"'}
    )
    assert r.status_code == 200, r.text
    saved = json.loads(running.state.read_text())
    assert saved["version"] == 3 and saved["clusters"][0]["lb_policy"] == "random"
    assert (await running.snapshot())["listener_handles"] == before["listener_handles"]


async def test_a_cluster_crashing_on_its_change_is_rolled_back(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    reconfigure = cluster_actor._ClusterActor._reconfigure

    def crash_on_random(self: cluster_actor._ClusterActor, new: Cluster) -> None:
        if new.lb_policy == "random":
            raise RuntimeError("injected crash")
        reconfigure(self, new)

    monkeypatch.setattr(cluster_actor._ClusterActor, "_reconfigure", crash_on_random)
    before = await running.snapshot()
    config = (await running.admin.get("/config")).json()
    # clusters change in order: a (applied, then undone), b (crashes on it), c (never reached)
    config["clusters"][0]["endpoints"][0]["weight"] = 5
    config["clusters"][1]["lb_policy"] = "random"
    config["clusters"][2]["endpoints"][0]["weight"] = 6
    config["listeners"][0]["idle_timeout"] = 5
    r = await running.admin.put("/config", json=config)
    assert r.status_code == 503, r.text
    assert "cluster 'b'" in r.json()["detail"] and "rolled back" in r.json()["detail"]
    after = await running.snapshot()
    assert after == before
    # nothing the change did not touch was restarted; a runs its old weight again
    assert running.gateway.control.listeners["web"].config.idle_timeout == 60
    assert [e.weight for e in running.gateway.control.clusters["a"].snapshot.config.endpoints] == [
        1
    ]
    assert running.gateway.control.clusters["b"].snapshot.config.lb_policy == "round_robin"
    assert await running.served_by() == "a"


async def test_a_listener_crashing_on_its_change_is_rolled_back(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    reconfigure = listener_context.ListenerContext.reconfigure

    def crash_on_short_idle(self: listener_context.ListenerContext, config: Any) -> None:
        if config.idle_timeout == 1:
            raise RuntimeError("injected crash")
        reconfigure(self, config)

    monkeypatch.setattr(listener_context.ListenerContext, "reconfigure", crash_on_short_idle)
    before = await running.snapshot()
    config = (await running.admin.get("/config")).json()
    config["clusters"][0]["endpoints"][0]["weight"] = 9
    config["listeners"][0]["idle_timeout"] = 1
    r = await running.admin.put("/config", json=config)
    assert r.status_code == 503, r.text
    assert "listener 'web'" in r.json()["detail"]
    after = await running.snapshot()
    # the listener crashed and its supervisor restarted it (same handle, same port: the
    # undo was answered by the new incarnation); everything else is as it was
    assert after == before
    assert await running.served_by() == "a"
    assert [e.weight for e in running.gateway.control.clusters["a"].snapshot.config.endpoints] == [
        1
    ]


async def test_a_listener_change_that_needs_no_socket_refuses_no_connection(
    running: Running,
) -> None:
    """``idle_timeout`` changed again and again while clients open new connections."""
    port = running.gateway.listener_address("web").port
    handle = running.gateway.control.listeners["web"]
    outcomes: list[int | str] = []
    changes = 0

    async def clients() -> None:
        # a fresh connection per request: a rebind would refuse some of them
        for _ in range(200):
            try:
                async with httpx.AsyncClient(base_url=running.web_url()) as web:
                    outcomes.append((await web.get("/")).status_code)
            except httpx.TransportError as e:
                outcomes.append(repr(e))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(clients)
        nursery.start_soon(clients)
        for timeout in (5, 6, 7, 8, 9, 10, 11, 12, 13, 14):
            version = (await running.admin.get("/config")).headers["etag"]
            r = await running.admin.patch(
                "/listeners/web", json={"idle_timeout": timeout}, headers={"If-Match": version}
            )
            assert r.status_code == 200, r.text
            changes += 1
    assert changes == 10
    assert outcomes == [200] * 400
    assert running.gateway.control.listeners["web"] is handle
    assert handle.config.idle_timeout == 14 and handle.ctx.config.idle_timeout == 14
    assert running.gateway.listener_address("web").port == port


async def test_an_address_change_rebinds_and_the_old_port_closes(running: Running) -> None:
    old = running.gateway.listener_address("web")
    handle = running.gateway.control.listeners["web"]
    async with httpx.AsyncClient(base_url=running.web_url()) as kept:
        assert (await kept.get("/")).status_code == 200  # a keep-alive connection on the old port
        r = await running.admin.patch(
            "/listeners/web", json={"address": "127.0.0.2:0"}, headers={"If-Match": '"2"'}
        )
        assert r.status_code == 200, r.text
        new = running.gateway.listener_address("web")
        assert new.host == "127.0.0.2"
        assert running.gateway.control.listeners["web"] is handle  # the same actor
        assert await running.served_by() == "a"
        # the connection accepted before the move still works
        assert (await kept.get("/")).status_code == 200
    with pytest.raises(OSError):
        await trio.open_tcp_stream(old.host, old.port)
    status = (await running.admin.get("/status")).json()
    assert status["listeners"]["web"]["address"] == str(new)


async def test_two_listeners_swapping_ports_in_one_change(running: Running) -> None:
    config = (await running.admin.get("/config")).json()
    web = running.gateway.listener_address("web")
    config["listeners"][0]["address"] = "127.0.0.2:0"
    second = {**config["listeners"][0], "name": "second", "address": str(web)}
    config["listeners"].append(second)
    r = await running.admin.put("/config", json=config)
    assert r.status_code == 200, r.text
    # "second" took the port "web" left in the same change
    assert running.gateway.listener_address("second") == web
    assert running.gateway.listener_address("web").host == "127.0.0.2"
    assert await running.served_by(f"http://{web}") == "a"
