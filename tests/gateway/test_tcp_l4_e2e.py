"""The TCP listener end to end on loopback: split, half-close, idle timeout, connect
retries, byte stats, ``enabled`` off and on, and a live toxic change losing no byte."""

from __future__ import annotations

import trio

from gateway.app import Gateway
from tests.conftest import ClosedAddress, StartGateway, refuses_connections, wait_until
from tests.gateway.l4_support import (
    StreamEcho,
    change_listener,
    connect,
    l4_config,
    read_to_end,
    receive_exactly,
    timed,
    toxic,
)


async def echo_once(gw: Gateway, payload: bytes) -> bytes:
    stream = await connect(gw)
    async with stream:
        await stream.send_all(payload)
        await stream.send_eof()
        return await read_to_end(stream)


async def test_a_weighted_split_sends_connections_to_both_clusters_by_weight(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    a = await StreamEcho().start(nursery)
    b = await StreamEcho().start(nursery)
    gw = await start_gateway(
        l4_config({"a": [a.address], "b": [b.address]}, split={"a": 1, "b": 3})
    )
    for i in range(100):
        assert await echo_once(gw, b"c%d" % i) == b"c%d" % i
    clusters = gw.stats.clusters
    assert clusters["a"].upstream_cx_total + clusters["b"].upstream_cx_total == 100
    assert a.accepted + b.accepted == 100
    assert 55 <= b.accepted <= 95  # 75 expected; six standard deviations either way


async def test_half_close_passes_both_ways_and_bytes_are_counted(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    echo = await StreamEcho(greeting=b"hello:").start(nursery)
    gw = await start_gateway(l4_config({"api": [echo.address]}))
    payload = bytes(range(256)) * 400  # 102,400 bytes
    stream = await connect(gw)
    async with stream:
        assert await receive_exactly(stream, 6) == b"hello:"
        await stream.send_all(payload)
        await stream.send_eof()  # the client is done writing; the reply still flows
        assert await read_to_end(stream) == payload
    listener = gw.stats.listener("tcp")
    cluster = gw.stats.clusters["api"]

    def counted() -> bool:
        return listener.downstream_cx_active == 0

    await wait_until(counted)
    assert listener.downstream_cx_rx_bytes_total == len(payload)
    assert listener.downstream_cx_tx_bytes_total == len(payload) + 6
    assert cluster.upstream_cx_tx_bytes_total == len(payload)
    assert cluster.upstream_cx_rx_bytes_total == len(payload) + 6


async def test_idle_timeout_closes_a_quiet_connection_and_traffic_keeps_it_open(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    echo = await StreamEcho().start(nursery)
    gw = await start_gateway(l4_config({"api": [echo.address]}, idle_timeout=0.4))
    stream = await connect(gw)
    async with stream:
        elapsed = timed()
        quiet = timed()
        for i in range(6):  # 0.9 s of traffic, more than twice the idle timeout
            await stream.send_all(b"%d" % i)
            assert await receive_exactly(stream, 1) == b"%d" % i
            quiet = timed()  # the last byte either way
            await trio.sleep(0.15)
        assert elapsed() > 0.8
        assert await read_to_end(stream, within=3) == b""  # closed by the gateway
        assert 0.35 <= quiet() < 1.5
    assert await echo_once(gw, b"again") == b"again"


async def test_a_failed_connect_is_tried_again_on_another_endpoint(
    nursery: trio.Nursery, start_gateway: StartGateway, closed_address: ClosedAddress
) -> None:
    echo = await StreamEcho().start(nursery)
    dead = [closed_address(), closed_address()]
    gw = await start_gateway(l4_config({"api": [*dead, echo.address]}))
    for i in range(6):  # round robin starts on each endpoint in turn: every one succeeds
        assert await echo_once(gw, b"r%d" % i) == b"r%d" % i
    cluster = gw.stats.clusters["api"]
    assert cluster.upstream_cx_connect_fail >= 4
    assert cluster.upstream_cx_connect_attempts_exceeded == 0


async def test_connect_attempts_stop_at_three_and_are_counted(
    nursery: trio.Nursery, start_gateway: StartGateway, closed_address: ClosedAddress
) -> None:
    dead = [closed_address() for _ in range(5)]
    gw = await start_gateway(l4_config({"api": dead}))
    stream = await connect(gw)
    async with stream:  # closed without a byte (a reset: what the client sent was unread)
        try:
            assert await read_to_end(stream) == b""
        except trio.BrokenResourceError:
            pass
    cluster = gw.stats.clusters["api"]
    assert cluster.upstream_cx_connect_fail == 3
    assert cluster.upstream_cx_connect_attempts_exceeded == 1


async def test_disabled_listener_refuses_and_closes_then_accepts_on_the_same_port(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    echo = await StreamEcho().start(nursery)
    gw = await start_gateway(l4_config({"api": [echo.address]}))
    address = gw.listener_address("tcp")
    stream = await connect(gw)
    async with stream:
        await stream.send_all(b"open")
        assert await receive_exactly(stream, 4) == b"open"
        await change_listener(gw, enabled=False)
        assert await refuses_connections(address)
        try:
            assert await read_to_end(stream) == b""  # the open connection was closed
        except trio.BrokenResourceError:
            pass
    assert gw.control.listeners["tcp"].bound is None
    await change_listener(gw, enabled=True)
    assert gw.listener_address("tcp") == address  # port 0: the port it had
    assert not await refuses_connections(address)
    assert await echo_once(gw, b"back") == b"back"


async def test_a_listener_configured_disabled_refuses_until_enabled(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    echo = await StreamEcho().start(nursery)
    gw = await start_gateway(l4_config({"api": [echo.address]}, enabled=False))
    handle = gw.control.listeners["tcp"]
    assert handle.bound is None
    last = handle.last_bound
    assert last is not None
    assert await refuses_connections(last)
    await change_listener(gw, enabled=True)
    assert gw.listener_address("tcp") == last
    assert await echo_once(gw, b"up") == b"up"


async def test_toxics_added_changed_and_removed_live_lose_no_byte(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    echo = await StreamEcho().start(nursery)
    gw = await start_gateway(l4_config({"api": [echo.address]}))
    stream = await connect(gw)
    sent = b""
    received = b""

    async def send(piece: bytes) -> None:
        nonlocal sent
        await stream.send_all(piece)
        sent += piece

    async with stream:
        await send(b"plain;")
        received += await receive_exactly(stream, 6)
        # a latency toxic added to the live connection holds what comes next
        await change_listener(gw, toxics=[toxic("slow", "latency", latency=400)])
        elapsed = timed()
        await send(b"held;")
        await trio.sleep(0.1)
        # changed while the chunk is held: a bandwidth stage after it, latency shorter
        await change_listener(
            gw,
            toxics=[
                toxic("slow", "latency", latency=200),
                toxic("pace", "bandwidth", rate=100),
            ],
        )
        await send(b"x" * 30_000)  # 0.3 s at 100 KB/s
        await trio.sleep(0.05)
        await change_listener(gw, toxics=[])  # removed: what is held goes at once
        await send(b";end")
        received += await receive_exactly(stream, len(sent) - len(received))
        assert elapsed() < 1.5
        assert received == sent
        await stream.send_eof()
        assert await read_to_end(stream) == b""
