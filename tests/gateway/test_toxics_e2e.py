"""Each network toxic's effect, measured by a raw socket client through a real gateway on
loopback (timing bounds generous: at least the configured figure, well under twice it)."""

from __future__ import annotations

from typing import Any

import httpx
import trio

from gateway.app import Gateway
from tests.conftest import StartGateway, StartUpstream, simple_config
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


async def gateway_with(
    nursery: trio.Nursery,
    start_gateway: StartGateway,
    *toxics: dict[str, Any],
    greeting: bytes = b"",
) -> Gateway:
    echo = await StreamEcho(greeting=greeting).start(nursery)
    return await start_gateway(l4_config({"api": [echo.address]}, toxics=list(toxics)))


async def round_trip(gw: Gateway, payload: bytes = b"ping") -> float:
    """Seconds from sending ``payload`` on a new connection to its echo."""
    stream = await connect(gw)
    async with stream:
        elapsed = timed()
        await stream.send_all(payload)
        assert await receive_exactly(stream, len(payload)) == payload
        return elapsed()


async def download(gw: Gateway, size: int) -> float:
    """Seconds until a new connection's ``size``-byte greeting has arrived."""
    stream = await connect(gw)
    async with stream:
        elapsed = timed()
        assert len(await receive_exactly(stream, size, within=10)) == size
        return elapsed()


async def test_latency_delays_each_direction_by_its_figure(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    gw = await gateway_with(nursery, start_gateway, toxic("lag", "latency", latency=200))
    assert 0.2 <= await round_trip(gw) < 0.35
    await change_listener(
        gw,
        toxics=[
            toxic("lag", "latency", latency=200),
            toxic("up", "latency", "upstream", latency=100),
        ],
    )
    assert 0.3 <= await round_trip(gw) < 0.45


async def test_bandwidth_paces_a_download_at_its_rate(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    # 100 KB/s = 100,000 B/s: 10,000 B now, then one such piece per 100 ms
    gw = await gateway_with(
        nursery, start_gateway, toxic("slow", "bandwidth", rate=100), greeting=b"g" * 100_000
    )
    assert 0.85 <= await download(gw, 100_000) < 1.4


async def test_shared_bandwidth_is_one_rate_for_all_connections(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    gw = await gateway_with(
        nursery,
        start_gateway,
        toxic("slow", "bandwidth", rate=100, shared=True),
        greeting=b"g" * 50_000,
    )
    times: list[float] = []

    async def one() -> None:
        times.append(await download(gw, 50_000))

    async with trio.open_nursery() as both:
        both.start_soon(one)
        both.start_soon(one)
    # 100,000 B in all at 100 KB/s: the later one ends near 1 s (alone: 0.4 s each)
    assert 0.85 <= max(times) < 1.4


async def test_reset_peer_resets_the_connection(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    gw = await gateway_with(nursery, start_gateway, toxic("rst", "reset_peer", timeout=100))
    address = gw.listener_address("tcp")
    sock = trio.socket.socket()
    with sock:
        await sock.connect((address.host, address.port))
        elapsed = timed()
        await sock.send(b"hello")  # its echo is the first downstream chunk: dropped
        with trio.fail_after(3):
            try:
                data = await sock.recv(100)
            except ConnectionResetError:
                data = None
        assert data is None, data
        assert elapsed() >= 0.1


async def test_limit_data_truncates_then_closes(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    gw = await gateway_with(
        nursery, start_gateway, toxic("cap", "limit_data", bytes=10), greeting=b"0123456789abcdef"
    )
    stream = await connect(gw)
    async with stream:
        try:
            assert await read_to_end(stream) == b"0123456789"
        except trio.BrokenResourceError:
            raise AssertionError("a limit closes, it does not reset") from None


async def test_slicer_delivers_every_byte_in_small_pieces(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    greeting = bytes(range(200))
    gw = await gateway_with(
        nursery,
        start_gateway,
        toxic("cut", "slicer", average_size=20, size_variation=5, delay=20_000),  # 20 ms apart
        greeting=greeting,
    )
    address = gw.listener_address("tcp")
    sock = trio.socket.socket()
    with sock:
        await sock.connect((address.host, address.port))
        pieces: list[bytes] = []
        with trio.fail_after(5):
            while sum(map(len, pieces)) < len(greeting):
                pieces.append(await sock.recv(65536))
    assert b"".join(pieces) == greeting
    assert len(pieces) >= 6  # 200 B cut to at most 25 B pieces, 20 ms apart
    assert max(map(len, pieces)) <= 25


async def test_timeout_drops_data_and_closes_after_its_idle_time(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    gw = await gateway_with(
        nursery, start_gateway, toxic("hang", "timeout", "upstream", timeout=300)
    )
    stream = await connect(gw)
    async with stream:
        await stream.send_all(b"dropped")
        quiet = timed()  # the chunk re-arms the timer
        assert await read_to_end(stream) == b""
        assert 0.28 <= quiet() < 0.8


async def test_slow_close_delays_the_end_of_the_stream(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    gw = await gateway_with(nursery, start_gateway, toxic("linger", "slow_close", delay=300))
    stream = await connect(gw)
    async with stream:
        elapsed = timed()
        await stream.send_all(b"bye")
        await stream.send_eof()
        assert await receive_exactly(stream, 3) == b"bye"
        assert elapsed() < 0.2  # the data is not delayed
        assert await read_to_end(stream) == b""
        assert 0.3 <= elapsed() < 0.6


async def test_slow_open_delays_the_upstream_connection(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    gw = await gateway_with(
        nursery, start_gateway, toxic("late", "slow_open", delay=300), greeting=b"hi"
    )
    assert 0.3 <= await download(gw, 2) < 0.5


async def test_source_restricts_a_toxic_to_some_clients(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    gw = await gateway_with(
        nursery, start_gateway, toxic("lag", "latency", latency=300, source=["10.0.0.0/8"])
    )
    assert await round_trip(gw) < 0.2  # loopback is not in 10/8
    await change_listener(
        gw, toxics=[toxic("lag", "latency", latency=300, source=["10.0.0.0/8", "127.0.0.1"])]
    )
    assert 0.3 <= await round_trip(gw) < 0.45


async def test_toxicity_zero_never_applies_and_one_always_does(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    gw = await gateway_with(
        nursery, start_gateway, toxic("lag", "latency", latency=300, toxicity=0.0)
    )
    for _ in range(5):
        assert await round_trip(gw) < 0.2
    await change_listener(gw, toxics=[toxic("lag", "latency", latency=300, toxicity=1.0)])
    for _ in range(3):
        assert 0.3 <= await round_trip(gw) < 0.45


async def test_toxics_act_on_the_client_side_of_an_http_listener(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    upstream = await start_upstream("a")
    gw = await start_gateway(simple_config({"a": [upstream]}))
    assert gw.control.listeners["web"].ctx.toxics is None  # no toxic: no wrapper at all
    address = gw.listener_address("web")
    url = f"http://{address}/"

    async def timed_get() -> tuple[float, httpx.Response]:
        async with httpx.AsyncClient() as client:
            elapsed = timed()
            response = await client.get(url)
            return elapsed(), response

    took, response = await timed_get()
    assert response.status_code == 200 and took < 0.2
    await change_listener(gw, "web", toxics=[toxic("lag", "latency", latency=200)])
    took, response = await timed_get()
    assert response.status_code == 200 and response.text
    assert 0.2 <= took < 0.4
    await change_listener(gw, "web", toxics=[toxic("cap", "limit_data", bytes=12)])
    sock = trio.socket.socket()
    with sock:
        await sock.connect((address.host, address.port))
        await sock.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        with trio.fail_after(5):
            while data := await sock.recv(65536):
                received += data
    assert received == b"HTTP/1.1 200"  # cut at 12 bytes, then closed
