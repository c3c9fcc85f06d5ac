"""Malformed HTTP/2 requests and the known attacks, from raw h2 connections, through a
real gateway to a counting HTTP/1.1 upstream: a malformed request is reset and reaches
no upstream; a flood ends the connection with GOAWAY ENHANCE_YOUR_CALM and a counter."""

from __future__ import annotations

from functools import partial

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
import trio
from h2.errors import ErrorCodes
from hyperframe.frame import ContinuationFrame, HeadersFrame, PingFrame

from gateway.app import Gateway
from gateway.config import Address
from tests.conftest import StartGateway, serve_h11, simple_config

GET = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/x"), (b":authority", b"h")]


class Counting:
    def __init__(self) -> None:
        self.requests: list[bytes] = []

    async def status(self, request: object) -> int:
        return 200


async def start(
    nursery: trio.Nursery, start_gateway: StartGateway, **listener: object
) -> tuple[Gateway, Address, Counting]:
    upstream = Counting()

    async def serve(stream: trio.SocketStream) -> None:
        await serve_h11(
            stream, "up", lambda request: upstream.requests.append(request.target), upstream.status
        )

    listeners = await nursery.start(partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    gateway = await start_gateway(simple_config({"api": [Address("127.0.0.1", port)]}, **listener))
    return gateway, gateway.listener_address("web"), upstream


def raw_client() -> h2.connection.H2Connection:
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
    )
    conn.initiate_connection()
    return conn


async def exchange(
    stream: trio.SocketStream, conn: h2.connection.H2Connection, until: type, stream_id: int = 0
) -> list[h2.events.Event]:
    """Send what ``conn`` has, then read events until one of type ``until`` (for
    ``stream_id`` if given), EOF or a reset connection."""
    await stream.send_all(conn.data_to_send())
    seen: list[h2.events.Event] = []
    with trio.fail_after(10):
        while True:
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                return seen
            if not data:
                return seen
            try:
                events = conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                return seen
            seen += events
            out = conn.data_to_send()
            if out:
                try:
                    await stream.send_all(out)
                except trio.BrokenResourceError:
                    return seen
            for ev in events:
                if isinstance(ev, until) and (not stream_id or ev.stream_id == stream_id):
                    return seen


MALFORMED = {
    "uppercase name": [*GET, (b"X-Upper", b"1")],
    "connection": [*GET, (b"connection", b"keep-alive")],
    "keep-alive": [*GET, (b"keep-alive", b"5")],
    "proxy-connection": [*GET, (b"proxy-connection", b"x")],
    "transfer-encoding": [*GET, (b"transfer-encoding", b"chunked")],
    "upgrade": [*GET, (b"upgrade", b"websocket")],
    "te gzip": [*GET, (b"te", b"gzip")],
    "path without slash": [(n, b"x" if n == b":path" else v) for n, v in GET],
    "no method": [h for h in GET if h[0] != b":method"],
    "no path": [h for h in GET if h[0] != b":path"],
    "pseudo after regular": [*GET[:3], (b"a", b"1"), GET[3]],
    "unknown pseudo": [*GET, (b":protocol", b"x")],
    "value with newline": [*GET, (b"x-a", b"1\r\nx-b: 2")],
    "content-length on a body-less request": [*GET, (b"content-length", b"5")],
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_a_malformed_request_is_reset_and_never_forwarded(
    nursery: trio.Nursery, start_gateway: StartGateway, case: str
) -> None:
    gateway, web, upstream = await start(nursery, start_gateway)
    async with await trio.open_tcp_stream(web.host, web.port) as stream:
        conn = raw_client()
        conn.send_headers(1, MALFORMED[case], end_stream=True)
        events = await exchange(stream, conn, h2.events.StreamReset, 1)
        resets = [e for e in events if isinstance(e, h2.events.StreamReset)]
        assert resets and resets[0].error_code == ErrorCodes.PROTOCOL_ERROR
        # the connection goes on: a good request on it is served
        conn.send_headers(3, GET, end_stream=True)
        events = await exchange(stream, conn, h2.events.StreamEnded, 3)
        assert any(isinstance(e, h2.events.ResponseReceived) for e in events)
    assert upstream.requests == [b"/x"]  # only the good one
    stats = gateway.stats.listener("web")
    assert stats.http2_rx_messaging_error == 1
    assert stats.http2_tx_reset == 1


@pytest.mark.parametrize("sent", [b"abcdef", b"abc"])
async def test_a_body_unlike_its_content_length_is_reset(
    nursery: trio.Nursery, start_gateway: StartGateway, sent: bytes
) -> None:
    gateway, web, upstream = await start(nursery, start_gateway)
    async with await trio.open_tcp_stream(web.host, web.port) as stream:
        conn = raw_client()
        conn.send_headers(1, [*GET[:1], *GET[1:], (b"content-length", b"4")])
        conn.send_data(1, sent, end_stream=True)
        events = await exchange(stream, conn, h2.events.StreamReset, 1)
    assert any(isinstance(e, h2.events.StreamReset) for e in events)
    assert gateway.stats.listener("web").http2_rx_messaging_error == 1
    # the body goes upstream only as it streams: the upstream saw no whole request
    assert all(r != b"/x" for r in upstream.requests) or not upstream.requests


async def test_rapid_reset_gets_goaway_enhance_your_calm(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    gateway, web, _ = await start(nursery, start_gateway)
    async with await trio.open_tcp_stream(web.host, web.port) as stream:
        conn = raw_client()
        for i in range(300):
            conn.send_headers(1 + 2 * i, GET, end_stream=True)
            conn.reset_stream(1 + 2 * i, ErrorCodes.CANCEL)
        events = await exchange(stream, conn, h2.events.ConnectionTerminated)
    goaways = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert goaways and goaways[0].error_code == ErrorCodes.ENHANCE_YOUR_CALM
    stats = gateway.stats.listener("web")
    assert stats.http2_rapid_reset == 1
    assert stats.http2_rx_reset >= 200
    assert stats.http2_goaway_sent >= 1


async def test_ping_flood_gets_goaway(nursery: trio.Nursery, start_gateway: StartGateway) -> None:
    gateway, web, _ = await start(nursery, start_gateway)
    async with await trio.open_tcp_stream(web.host, web.port) as stream:
        conn = raw_client()
        flood = b"".join(PingFrame(0, opaque_data=b"%08d" % i).serialize() for i in range(500))
        await stream.send_all(conn.data_to_send() + flood)
        events = await exchange(stream, conn, h2.events.ConnectionTerminated)
    goaways = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert goaways and goaways[0].error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert gateway.stats.listener("web").http2_control_flood == 1


async def test_continuation_flood_gets_goaway_before_buffering(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    gateway, web, upstream = await start(nursery, start_gateway)
    async with await trio.open_tcp_stream(web.host, web.port) as stream:
        conn = raw_client()
        first = HeadersFrame(1, data=b"", flags=["END_STREAM"]).serialize()
        flood = b"".join(ContinuationFrame(1, data=b"").serialize() for _ in range(1000))
        await stream.send_all(conn.data_to_send() + first + flood)
        events = await exchange(stream, conn, h2.events.ConnectionTerminated)
    goaways = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert goaways and goaways[0].error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert gateway.stats.listener("web").http2_continuation_flood == 1
    assert upstream.requests == []


async def test_a_header_block_over_the_limit_is_refused(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    gateway, web, upstream = await start(nursery, start_gateway, http2={"max_header_list_kb": 4})
    async with await trio.open_tcp_stream(web.host, web.port) as stream:
        conn = raw_client()
        big = [(b"x-big-%d" % i, b"v" * 1000) for i in range(8)]
        conn.send_headers(1, [*GET, *big], end_stream=True)
        events = await exchange(stream, conn, h2.events.ConnectionTerminated)
    assert any(isinstance(e, h2.events.ConnectionTerminated) for e in events)
    assert gateway.stats.listener("web").http2_header_overflow == 1
    assert upstream.requests == []


async def test_max_concurrent_streams_is_enforced(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    gateway, web, _ = await start(nursery, start_gateway, http2={"max_concurrent_streams": 5})
    async with await trio.open_tcp_stream(web.host, web.port) as stream:
        conn = raw_client()
        await exchange(stream, conn, h2.events.RemoteSettingsChanged)
        assert conn.remote_settings.max_concurrent_streams == 5
        # a client that ignores the setting (opening streams the upstream holds)
        conn.remote_settings = h2.settings.Settings(client=False)
        for i in range(8):
            conn.send_headers(
                1 + 2 * i, [*GET[:2], (b":path", b"/delay/500"), GET[3]], end_stream=True
            )
        events = await exchange(stream, conn, h2.events.ConnectionTerminated)
    goaways = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert goaways and goaways[0].error_code == ErrorCodes.PROTOCOL_ERROR
    assert gateway.stats.listener("web").http2_too_many_streams == 1
