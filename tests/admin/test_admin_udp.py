"""A udp listener through the native admin API: created, served, changed live, and its
bad fields refused with 422 naming each path."""

from __future__ import annotations

import socket

import trio

from tests.admin.admin_support import AdminSetup, issue_locs
from tests.conftest import wait_until


async def _echo(sock: trio.socket.SocketType) -> None:
    with sock:
        while True:
            data, source = await sock.recvfrom(65535)
            await sock.sendto(b"echo:" + data, source)


async def test_a_udp_listener_created_through_the_api_serves(
    setup: AdminSetup, nursery: trio.Nursery
) -> None:
    upstream = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await upstream.bind(("127.0.0.1", 0))
    nursery.start_soon(_echo, upstream)
    host, port = upstream.getsockname()
    cluster = {"name": "udp-echo", "endpoints": [{"address": f"{host}:{port}"}]}
    r = await setup.admin.post("/clusters", json=cluster)
    assert r.status_code == 201, r.text
    listener = {
        "name": "dgram",
        "address": "127.0.0.1:0",
        "protocol": "udp",
        "cluster": "udp-echo",
        "max_sessions": 5,
        "idle_timeout": 30,
        "toxics": [{"name": "slow", "type": "latency", "attributes": {"latency": 10}}],
    }
    r = await setup.admin.post("/listeners", json=listener)
    assert r.status_code == 201, r.text
    assert r.json()["protocol"] == "udp" and r.json()["max_sessions"] == 5
    bound = setup.gateway.listener_address("dgram")
    client = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with client:
        await client.sendto(b"hi", (bound.host, bound.port))
        with trio.fail_after(2):
            data, source = await client.recvfrom(100)
        assert data == b"echo:hi" and source == (bound.host, bound.port)
        r = await setup.admin.patch("/listeners/dgram", json={"enabled": False})
        assert r.status_code == 200, r.text
        assert setup.gateway.control.listeners["dgram"].bound is None
        r = await setup.admin.patch("/listeners/dgram", json={"enabled": True})
        assert r.status_code == 200, r.text
        await client.sendto(b"again", (bound.host, bound.port))
        with trio.fail_after(2):
            data, _ = await client.recvfrom(100)
        assert data == b"echo:again"
    r = await setup.admin.get("/stats")
    assert r.status_code == 200
    stats = setup.gateway.stats.listener("dgram").counters()
    assert stats["downstream_sess_total"] == 2 and stats["toxics.datagrams_delayed"] == 2
    r = await setup.admin.delete("/listeners/dgram")
    assert r.status_code == 204
    await wait_until(lambda: "dgram" not in setup.gateway.control.listeners)


async def test_bad_udp_fields_are_refused_naming_each_path(setup: AdminSetup) -> None:
    before, _ = await setup.config()
    listener = {
        "name": "dgram",
        "address": "127.0.0.1:0",
        "protocol": "udp",
        "cluster": "nowhere",
        "max_sessions": 0,
        "toxics": [
            {"name": "cut", "type": "limit_data", "attributes": {"bytes": 5}},
            {"name": "lossy", "type": "packet_loss", "attributes": {"percent": 150}},
        ],
    }
    r = await setup.admin.post("/listeners", json=listener)
    assert sorted(issue_locs(r)) == [
        "listeners[1].cluster",
        "listeners[1].max_sessions",
        "listeners[1].toxics[0].type",
        "listeners[1].toxics[1].attributes.percent",
    ]
    r = await setup.admin.post(
        "/listeners", json={**listener, "cluster": "a", "max_sessions": "many", "toxics": []}
    )
    assert issue_locs(r) == ["listeners[1].max_sessions"]
    assert (await setup.config())[0] == before  # nothing of it applied
