"""Chunked trailers: parsed onto MessageEnded, written after the last chunk, forwarded
both ways through a real gateway (raw sockets on loopback, port 0)."""

from __future__ import annotations

import pytest
import trio

from gateway.config import Address
from gateway.errors import DownstreamProtocolError
from gateway.http1.events import MESSAGE_ENDED, DataReceived, MessageEnded
from gateway.http1.parse import RequestParser, ResponseParser
from gateway.http1.serialize import last_chunk
from tests.conftest import StartGateway, simple_config

CHUNKED_POST = (
    b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"
    b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\nX-Two: 2\r\n\r\n"
)


def test_request_trailers_end_the_message() -> None:
    parser = RequestParser()
    for i in range(0, len(CHUNKED_POST), 7):  # in pieces: trailers may straddle reads
        parser.feed(CHUNKED_POST[i : i + 7])
    parser.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    events = list(parser.events)
    ends = [e for e in events if isinstance(e, MessageEnded)]
    assert ends[0] == MessageEnded(((b"X-Checksum", b"abc"), (b"X-Two", b"2")))
    assert ends[1] is MESSAGE_ENDED  # the next request has none of them
    assert b"".join(e.data for e in events if isinstance(e, DataReceived)) == b"hello"


def test_trailers_count_against_the_header_limits() -> None:
    parser = RequestParser(max_headers=3)
    head = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
    with pytest.raises(DownstreamProtocolError) as raised:
        parser.feed(head + b"".join(b"T%d: x\r\n" % i for i in range(4)) + b"\r\n")
    assert raised.value.status_hint == 431


def test_response_trailers_end_the_message() -> None:
    parser = ResponseParser()
    parser.feed(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nGrpc-Status: 0\r\n\r\n"
    )
    assert parser.events[-1] == MessageEnded(((b"Grpc-Status", b"0"),))


def test_the_last_chunk_carries_only_fields_that_may_cross_a_proxy() -> None:
    assert last_chunk(()) == b"0\r\n\r\n"
    trailers = ((b"X-Sum", b"1"), (b"Content-Length", b"9"), (b"Connection", b"x"), (b"b", b"2"))
    assert last_chunk(trailers) == b"0\r\nX-Sum: 1\r\nb: 2\r\n\r\n"


async def read_until(stream: trio.SocketStream, marker: bytes, buffer: bytearray) -> bytes:
    with trio.fail_after(10):
        while marker not in buffer:
            data = await stream.receive_some(65536)
            assert data, f"EOF before {marker!r}: {bytes(buffer)!r}"
            buffer += data
    end = buffer.index(marker) + len(marker)
    out = bytes(buffer[:end])
    del buffer[:end]
    return out


async def test_trailers_cross_the_gateway_both_ways(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    upstream_saw: list[bytes] = []

    async def upstream(stream: trio.SocketStream) -> None:
        buffer = bytearray()
        async with stream:
            head = await read_until(stream, b"\r\n\r\n", buffer)
            body = await read_until(stream, b"\r\n\r\n", buffer)  # to the trailers' end
            upstream_saw.extend((head, body))
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nyes\r\n0\r\nX-Result: done\r\nKeep-Alive: timeout=1\r\n\r\n"
            )
            while await stream.receive_some(65536):  # until the gateway lets go
                pass

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, upstream, listeners)
    port = listeners[0].socket.getsockname()[1]
    gw = await start_gateway(simple_config({"c": [Address("127.0.0.1", port)]}))
    address = gw.listener_address("web")
    client = await trio.open_tcp_stream(address.host, address.port)
    async with client:
        await client.send_all(CHUNKED_POST)
        buffer = bytearray()
        head = await read_until(client, b"\r\n\r\n", buffer)
        body = await read_until(client, b"\r\n\r\n", buffer)
    assert b"transfer-encoding: chunked\r\n" in upstream_saw[0].lower()
    assert upstream_saw[1] == b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\nX-Two: 2\r\n\r\n"
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"transfer-encoding: chunked" in head
    # re-chunked for an HTTP/1.1 client, the trailer after the last chunk; hop-by-hop dropped
    assert body == b"3\r\nyes\r\n0\r\nX-Result: done\r\n\r\n"
