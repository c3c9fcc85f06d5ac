"""Circuit breakers and outlier detection on the TCP proxy, end to end on loopback.

A client connection is the cluster's request: over a ``circuit_breakers`` threshold, or
with the classic ``breaker`` open, it is closed at once without a connection to any
endpoint; a connection's end (connect failure, upstream reset, normal end) is what the
breaker judges; the outlier detector hears of each connect. Read through the stats and
the admin API.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import attrs
import httpx
import trio

from gateway.app import Gateway
from gateway.config import Address
from policies.breaker import BreakerState
from tests.conftest import ClosedAddress, StartGateway, wait_until
from tests.gateway.test_breakers_e2e import BREAKER


@attrs.define(eq=False)
class TcpUpstream:
    """A TCP upstream whose behaviour is chosen per accepted connection by ``mode``:
    ``echo`` (read to EOF, answer ``echo:`` and what came, close), ``hold`` (echo once
    ``release`` is called) or ``reset`` (reset the connection at once)."""

    address: Address = attrs.Factory(lambda: Address("127.0.0.1", 0))
    mode: str = "echo"
    #: connections accepted
    accepted: int = 0
    released: trio.Event = attrs.Factory(trio.Event)

    async def start(self, nursery: trio.Nursery) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.address = Address("127.0.0.1", listeners[0].socket.getsockname()[1])
        nursery.start_soon(trio.serve_listeners, self._serve, listeners)

    def release(self) -> None:
        self.released.set()

    async def _serve(self, stream: trio.SocketStream) -> None:
        self.accepted += 1
        mode = self.mode
        if mode == "reset":
            stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await stream.aclose()  # linger 0: the close is a reset
            return
        if mode == "hold":
            await self.released.wait()
        async with stream:
            received = b""
            try:
                while data := await stream.receive_some(65536):
                    received += data
                await stream.send_all(b"echo:" + received)
            except trio.BrokenResourceError:
                pass


async def start_tcp_upstream(nursery: trio.Nursery, mode: str = "echo") -> TcpUpstream:
    upstream = TcpUpstream(mode=mode)
    await upstream.start(nursery)
    return upstream


def tcp_config(endpoints: list[Address], **cluster: Any) -> dict[str, Any]:
    """One TCP listener ``tcp`` in front of cluster ``api``."""
    return {
        "admin": {"address": "127.0.0.1:0"},
        "listeners": [
            {"name": "tcp", "address": "127.0.0.1:0", "protocol": "tcp", "cluster": "api"}
        ],
        "clusters": [
            {"name": "api", "endpoints": [{"address": str(a)} for a in endpoints], **cluster}
        ],
    }


async def open_client(gw: Gateway) -> trio.SocketStream:
    address = gw.listener_address("tcp")
    return await trio.open_tcp_stream(address.host, address.port)


async def read_to_end(stream: trio.SocketStream) -> bytes:
    """What arrives until the gateway closes (EOF or a reset), within 5 s."""
    received = b""
    with trio.fail_after(5):
        try:
            while data := await stream.receive_some(65536):
                received += data
        except trio.BrokenResourceError:
            pass
    return received


async def exchange(gw: Gateway, payload: bytes = b"ping") -> bytes:
    """One connection through the gateway: send ``payload``, half-close, read the rest."""
    stream = await open_client(gw)
    async with stream:
        try:
            await stream.send_all(payload)
            await stream.send_eof()
        except trio.BrokenResourceError:
            pass  # closed at once by the gateway
        return await read_to_end(stream)


def connections_open(gw: Gateway) -> int:
    """The cluster's open upstream connections now (its gauge, refreshed)."""
    gw.stats.refresh_gauges()
    return gw.stats.clusters["api"].upstream_cx_active


async def closed_at_once(gw: Gateway) -> bool:
    """A connection the gateway closes without a byte, before the client sent any."""
    stream = await open_client(gw)
    async with stream:
        return await read_to_end(stream) == b""


async def test_max_connections_closes_new_connections_at_once(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    a = await start_tcp_upstream(nursery, "hold")
    b = await start_tcp_upstream(nursery, "hold")
    data = tcp_config(
        [a.address, b.address],
        circuit_breakers={"max_connections": 1, "max_pending_requests": 1},
    )
    gw = await start_gateway(data)
    stats = gw.stats.clusters["api"]
    first = await open_client(gw)
    async with first:
        await first.send_all(b"first")
        await wait_until(lambda: a.accepted + b.accepted == 1)
        gw.stats.refresh_gauges()
        assert (stats.upstream_cx_active, stats.circuit_breakers_cx_open) == (1, 1)
        # the other endpoint has no connection, but the cluster has its one
        assert await closed_at_once(gw)
        assert a.accepted + b.accepted == 1
        assert (stats.upstream_cx_overflow, stats.upstream_cx_total) == (1, 1)
        a.release()
        b.release()
        await first.send_eof()
        assert await read_to_end(first) == b"echo:first"
    # closed: its place is free again (and no connection is left pending)
    await wait_until(lambda: not connections_open(gw))
    assert stats.circuit_breakers_cx_open == 0
    for i in range(2):
        assert await exchange(gw, b"next%d" % i) == b"echo:next%d" % i
    assert (stats.upstream_cx_overflow, stats.upstream_cx_total) == (1, 3)
    assert stats.upstream_rq_pending_overflow == 0


async def test_max_pending_requests_zero_refuses_every_connection(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    upstream = await start_tcp_upstream(nursery)
    data = tcp_config(
        [upstream.address],
        circuit_breakers={"max_pending_requests": 0},
        breaker=BREAKER,
        outlier_detection={"consecutive_gateway_failure": 1, "interval": 60},
    )
    gw = await start_gateway(data, admin=True)
    for _ in range(5):
        assert await closed_at_once(gw)
    assert upstream.accepted == 0
    stats = gw.stats.clusters["api"]
    assert stats.upstream_rq_pending_overflow == 5
    assert (stats.upstream_cx_total, stats.upstream_cx_overflow) == (0, 0)
    assert stats.endpoint(str(upstream.address)).cx_total == 0
    # the gateway's own limit says nothing of the upstream: neither the breaker (past
    # its minimum_requests by now) nor the outlier detector hears of it
    assert stats.breaker is not None
    assert stats.breaker.breaker.window(trio.current_time()).requests == 0
    await trio.sleep(0.2)  # several of the cluster actor's takes of the detector's results
    async with admin_client(gw) as admin:
        view = await _health(admin)
    assert view["breaker"]["state"] == "closed"
    assert view["endpoints"][0]["ejection"]["ejected"] is False


async def _health(admin: httpx.AsyncClient) -> dict[str, Any]:
    r = await admin.get("/clusters/api/health")
    assert r.status_code == 200, r.text
    view: dict[str, Any] = r.json()
    return view


async def _breaker_events(admin: httpx.AsyncClient) -> list[tuple[str, str, str]]:
    events = (await admin.get("/events", params={"cluster": "api"})).json()["events"]
    return [(e["old"], e["new"], e["reason"]) for e in events if e["kind"] == "breaker"]


def admin_client(gw: Gateway) -> httpx.AsyncClient:
    """One client for a test's admin reads (making one takes a while: a TLS context)."""
    return httpx.AsyncClient(base_url=f"http://{gw.admin_address}")


async def test_connect_failures_open_the_breaker_which_then_closes_connections_at_once(
    start_gateway: StartGateway, closed_address: ClosedAddress
) -> None:
    data = tcp_config(
        [closed_address()],
        breaker={**BREAKER, "open_time": 30, "max_open_time": 60},
        # each failed connect gives its places back
        circuit_breakers={"max_connections": 1, "max_pending_requests": 1},
    )
    gw = await start_gateway(data, admin=True)
    stats = gw.stats.clusters["api"]
    for _ in range(4):
        assert await exchange(gw) == b""
    assert stats.upstream_cx_connect_fail == 4
    assert (stats.upstream_cx_overflow, stats.upstream_rq_pending_overflow) == (0, 0)
    async with admin_client(gw) as admin:
        assert (await _health(admin))["breaker"]["state"] == "open"
        # open: closed at once, no connect tried
        assert await closed_at_once(gw)
        assert stats.breaker_rq_rejected == 1
        assert stats.upstream_cx_connect_fail == 4 and stats.upstream_cx_total == 4
        gw.stats.refresh_gauges()
        assert stats.breaker_open == 1
        assert await _breaker_events(admin) == [("closed", "open", "failure_rate_exceeded")]


async def test_upstream_resets_open_the_breaker_and_passing_probes_close_it(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    upstream = await start_tcp_upstream(nursery, "reset")
    breaker = {**BREAKER, "open_time": 0.5}
    gw = await start_gateway(tcp_config([upstream.address], breaker=breaker), admin=True)
    stats = gw.stats.clusters["api"]
    guard = stats.breaker
    assert guard is not None
    for _ in range(4):
        assert await exchange(gw) == b""
    assert upstream.accepted == 4
    assert stats.upstream_cx_connect_fail == 0  # each connected, then was reset
    # (the state as of the breaker's last call: its open time runs while the test reads)
    assert guard.breaker.state is BreakerState.OPEN
    assert await closed_at_once(gw)
    assert upstream.accepted == 4 and stats.breaker_rq_rejected == 1

    async with admin_client(gw) as admin:

        async def half_open() -> bool:
            return bool((await _health(admin))["breaker"]["state"] == "half_open")

        # a probe that is reset again reopens it, for twice as long
        await wait_until(half_open)
        assert await exchange(gw) == b""
        assert upstream.accepted == 5
        assert (guard.breaker.state, guard.breaker.open_time) == (BreakerState.OPEN, 1.0)

        # connections that connect and end normally pass: closed, connections flow again
        upstream.mode = "echo"
        await wait_until(half_open)
        for i in range(2):
            assert await exchange(gw, b"probe%d" % i) == b"echo:probe%d" % i
        assert (await _health(admin))["breaker"]["state"] == "closed"
        assert await exchange(gw, b"after") == b"echo:after"
        assert await _breaker_events(admin) == [
            ("closed", "open", "failure_rate_exceeded"),
            ("open", "half_open", "open_time_elapsed"),
            ("half_open", "open", "probe_failed"),
            ("open", "half_open", "open_time_elapsed"),
            ("half_open", "closed", "probes_passed"),
        ]


async def test_a_client_that_resets_says_nothing_of_the_upstream(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    upstream = await start_tcp_upstream(nursery, "hold")
    gw = await start_gateway(tcp_config([upstream.address], breaker=BREAKER))
    stats = gw.stats.clusters["api"]
    assert stats.breaker is not None
    for i in range(4):
        stream = await open_client(gw)
        await stream.send_all(b"x")
        await wait_until(lambda n=i + 1: upstream.accepted == n)
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await stream.aclose()
        await wait_until(lambda: not connections_open(gw))
    assert upstream.accepted == 4
    # four abandoned connections: nothing in the window, and it stays closed
    assert stats.breaker.breaker.window(trio.current_time()).requests == 0
    upstream.release()
    assert await exchange(gw) == b"echo:ping"
    assert stats.breaker.breaker.window(trio.current_time()).requests == 1


async def test_connect_failures_eject_an_endpoint_and_connections_avoid_it(
    nursery: trio.Nursery, start_gateway: StartGateway, closed_address: ClosedAddress
) -> None:
    live = await start_tcp_upstream(nursery)
    dead = closed_address()
    data = tcp_config(
        [live.address, dead],
        outlier_detection={
            "consecutive_5xx": 0,
            "consecutive_gateway_failure": 2,
            "interval": 60,
            "base_ejection_time": 30,
            "max_ejection_percent": 50,
        },
    )
    gw = await start_gateway(data, admin=True)
    # round robin: two each, and each connect to the dead one is tried again on the live
    # one (the TCP proxy's connect retries), so every client gets its answer
    answers = [await exchange(gw, b"r%d" % i) for i in range(4)]
    assert answers == [b"echo:r%d" % i for i in range(4)]

    async with admin_client(gw) as admin:

        async def ejected() -> dict[str, Any]:
            views = {e["address"]: e for e in (await _health(admin))["endpoints"]}
            assert views[str(live.address)]["ejection"]["ejected"] is False
            ejection: dict[str, Any] = views[str(dead)]["ejection"]
            return ejection if ejection["ejected"] else {}

        ejection = await wait_until(ejected)
    assert ejection["reason"] == "consecutive_gateway_failure"
    for i in range(4):
        assert await exchange(gw, b"after%d" % i) == b"echo:after%d" % i
    endpoints = gw.stats.clusters["api"].endpoints
    assert endpoints[str(dead)].cx_connect_fail == 2
    assert endpoints[str(live.address)].cx_total == 8
    assert gw.stats.clusters["api"].upstream_cx_connect_attempts_exceeded == 0
