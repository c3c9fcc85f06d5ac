"""Malformed requests: the right status, a closed connection, nothing ambiguous upstream.

Each request goes over a raw socket to a gateway in front of a raw-byte recording
upstream. The upstream answers any request it sees with 200, and records every byte;
after each case the test asserts what it received (nothing, or never a smuggled request).
"""

from __future__ import annotations

import pytest
import trio

from gateway.app import Gateway
from gateway.config import Address
from tests.conftest import StartGateway, simple_config, wait_until

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"

CASES: list[tuple[str, bytes, int]] = [
    (
        "content-length and transfer-encoding",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        + SMUGGLED,
        400,
    ),
    (
        "transfer-encoding and content-length",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n"
        + SMUGGLED,
        400,
    ),
    (
        "differing duplicate content-length",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd"
        + SMUGGLED,
        400,
    ),
    ("content-length list", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4, 4\r\n\r\nabcd", 400),
    (
        "non-numeric content-length",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4x\r\n\r\nabcd",
        400,
    ),
    ("negative content-length", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
    ("space before colon", b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\nhello", 400),
    ("space before colon in host", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
    ("missing host on 1.1", b"GET / HTTP/1.1\r\nX: y\r\n\r\n", 400),
    ("two hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("obsolete line folding", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400),
    ("bare LF", b"GET / HTTP/1.1\nHost: a\n\n", 400),
    (
        "transfer-encoding gzip only",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
        400,
    ),
    (
        "chunked not last",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "gzip, chunked",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
    ),
    ("NUL in header value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400),
    ("garbage request line", b"HELLO\r\n\r\n", 400),
    (
        "too many headers",
        b"GET / HTTP/1.1\r\nHost: a\r\n"
        + b"".join(b"X-%d: v\r\n" % i for i in range(101))
        + b"\r\n",
        431,
    ),
    (
        "headers over 60 KiB",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"v" * (61 * 1024) + b"\r\n\r\n",
        431,
    ),
    ("url over 60 KiB", b"GET /" + b"a" * (61 * 1024) + b" HTTP/1.1\r\nHost: a\r\n\r\n", 431),
]

# cases whose head is valid and whose body is not: the head may reach the upstream,
# but never a complete request built from the bad body
BODY_CASES: list[tuple[str, bytes, int]] = [
    (
        "invalid chunk size",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
        + SMUGGLED,
        400,
    ),
    (
        "chunk size overflow",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\nx\r\n0\r\n\r\n",
        400,
    ),
    (
        "chunk without CRLF",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n"
        + SMUGGLED,
        400,
    ),
]


class Recorder:
    """A raw upstream: records bytes per connection, answers 200 to anything."""

    def __init__(self) -> None:
        self.received: list[bytearray] = []
        #: connections accepted and not yet closed
        self.open = 0

    async def serve(self, stream: trio.SocketStream) -> None:
        buf = bytearray()
        self.received.append(buf)
        self.open += 1
        async with stream:
            try:
                while data := await stream.receive_some(65536):
                    buf += data
                    if b"\r\n\r\n" in buf and b"0\r\n\r\n" in buf[buf.index(b"\r\n\r\n") :]:
                        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            except trio.BrokenResourceError:
                pass
            finally:
                self.open -= 1

    @property
    def everything(self) -> bytes:
        return b"".join(bytes(b) for b in self.received)


@pytest.fixture
async def recorder_and_gateway(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> tuple[Recorder, Gateway]:
    recorder = Recorder()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, recorder.serve, listeners)
    port = listeners[0].socket.getsockname()[1]
    gw = await start_gateway(simple_config({"rec": [Address("127.0.0.1", port)]}))
    return recorder, gw


async def exchange(address: Address, payload: bytes) -> tuple[bytes, bool]:
    """Send ``payload`` raw; return what came back and whether the gateway closed."""
    stream = await trio.open_tcp_stream(address.host, address.port)
    async with stream:
        try:
            await stream.send_all(payload)
        except trio.BrokenResourceError:
            pass  # the gateway may close before reading everything
        reply = b""
        closed = False
        with trio.move_on_after(5):
            try:
                while data := await stream.receive_some(65536):
                    reply += data
                closed = True
            except trio.BrokenResourceError:
                closed = True
    return reply, closed


@pytest.mark.parametrize(("name", "payload", "status"), CASES, ids=[c[0] for c in CASES])
async def test_malformed_head_is_refused_and_nothing_reaches_upstream(
    recorder_and_gateway: tuple[Recorder, Gateway], name: str, payload: bytes, status: int
) -> None:
    recorder, gw = recorder_and_gateway
    reply, closed = await exchange(gw.listener_address("web"), payload)
    assert reply.startswith(b"HTTP/1.1 %d " % status), reply[:200]
    assert b"connection: close\r\n" in reply
    assert closed, "the gateway must close the connection after a malformed request"
    assert recorder.everything == b""


@pytest.mark.parametrize(("name", "payload", "status"), BODY_CASES, ids=[c[0] for c in BODY_CASES])
async def test_malformed_body_is_refused_and_never_completes_upstream(
    recorder_and_gateway: tuple[Recorder, Gateway], name: str, payload: bytes, status: int
) -> None:
    recorder, gw = recorder_and_gateway
    reply, closed = await exchange(gw.listener_address("web"), payload)
    assert reply.startswith(b"HTTP/1.1 %d " % status), reply[:200]
    assert closed
    # the upstream read whatever reached it: each connection the gateway opened to it
    # was accepted, and has been closed
    opened = gw.stats.clusters["rec"].upstream_cx_total
    await wait_until(lambda: len(recorder.received) == opened and not recorder.open)
    seen = recorder.everything
    assert b"/smuggled" not in seen
    assert b"0\r\n\r\n" not in seen  # the upstream never saw the body end


async def test_slow_headers_are_cut_off(nursery: trio.Nursery, start_gateway: StartGateway) -> None:
    recorder = Recorder()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, recorder.serve, listeners)
    port = listeners[0].socket.getsockname()[1]
    data = simple_config({"rec": [Address("127.0.0.1", port)]}, header_timeout=0.3)
    gw = await start_gateway(data)
    address = gw.listener_address("web")
    stream = await trio.open_tcp_stream(address.host, address.port)

    async def trickle() -> None:
        # a header line every 50 ms: the head never ends (the slow client is the test)
        try:
            while True:
                await stream.send_all(b"X: y\r\n")
                await trio.sleep(0.05)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async with stream, trio.open_nursery() as inner:
        start = trio.current_time()
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: a\r\n")
        inner.start_soon(trickle)
        reply = b""
        with trio.fail_after(5):
            try:
                while data_in := await stream.receive_some(65536):
                    reply += data_in
            except trio.BrokenResourceError:
                pass
        elapsed = trio.current_time() - start
        inner.cancel_scope.cancel()
    assert reply.startswith(b"HTTP/1.1 408 ")
    assert elapsed >= 0.3
    assert recorder.everything == b""
