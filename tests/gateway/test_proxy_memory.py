"""The HTTP proxy's rarer branches, over memory streams: no sockets, no gateway process.

Each test runs one ``HttpConnection`` on one end of a memory stream pair (the test holds
the client's end) and gives the cluster's pool a connector that hands each new upstream
connection to a fake upstream task speaking raw HTTP bytes. Every wait is on bytes
arriving (bounded by ``fail_after``), never on the clock.
"""

from __future__ import annotations

import json
import random
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio
import trio.testing

from gateway.cluster.actor import ClusterHandle
from gateway.config import Address, config_from_data
from gateway.dataplane import DataPlane, DataPlaneRef
from gateway.listener.context import ListenerContext
from gateway.observe.accesslog import format_entries
from gateway.proxy.http import HttpConnection
from gateway.routing import RouteTable
from tests.conftest import simple_config

MemoryStream = trio.StapledStream[trio.testing.MemorySendStream, trio.testing.MemoryReceiveStream]
#: serves one upstream connection: (its number, from 1, and the upstream's end of it)
ServeUpstream = Callable[[int, MemoryStream], Awaitable[None]]


class MemoryConnection(trio.abc.HalfCloseableStream):
    """The gateway's end of an in-memory upstream connection, as a ``netio.ByteStream``."""

    def __init__(self, stream: MemoryStream) -> None:
        self.stream = stream

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return bytes(await self.stream.receive_some(max_bytes))

    async def send_eof(self) -> None:
        await self.stream.send_eof()

    async def aclose(self) -> None:
        await self.stream.aclose()

    def close(self) -> None:
        self.stream.send_stream.close()
        self.stream.receive_stream.close()


class Reader:
    """Reads a stream up to markers, keeping what came after for the next read."""

    def __init__(self, stream: MemoryStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def _more(self) -> bool:
        data = await self.stream.receive_some(65536)
        self.buffer += data
        return bool(data)

    async def until(self, marker: bytes) -> bytes:
        with trio.fail_after(5):
            while marker not in self.buffer:
                if not await self._more():
                    raise AssertionError(f"EOF before {marker!r}: {bytes(self.buffer)!r}")
        end = self.buffer.index(marker) + len(marker)
        out = bytes(self.buffer[:end])
        del self.buffer[:end]
        return out

    async def next_head(self) -> bytes | None:
        """The next message head; None if the stream ends cleanly before one."""
        with trio.fail_after(5):
            while not self.buffer:
                if not await self._more():
                    return None
        return await self.until(b"\r\n\r\n")

    async def exactly(self, n: int) -> bytes:
        with trio.fail_after(5):
            while len(self.buffer) < n:
                if not await self._more():
                    raise AssertionError(f"EOF after {bytes(self.buffer)!r}, wanted {n} bytes")
        out = bytes(self.buffer[:n])
        del self.buffer[:n]
        return out

    async def to_eof(self) -> bytes:
        with trio.fail_after(5):
            while await self._more():
                pass
        out = bytes(self.buffer)
        self.buffer.clear()
        return out


@attrs.define
class Rig:
    """One client connection to a proxy whose only endpoint is a fake upstream."""

    ctx: ListenerContext
    handle: ClusterHandle
    client: MemoryStream
    reader: Reader
    #: upstream connections the pool opened
    opened: int = 0

    async def response(self, body_length: int) -> tuple[bytes, bytes]:
        """The next response's head and its ``body_length`` body bytes."""
        head = await self.reader.until(b"\r\n\r\n")
        return head, await self.reader.exactly(body_length)

    async def records(self) -> list[dict[str, Any]]:
        """The access log lines of the requests finished since the last call, once every
        task is blocked (the proxy closes a request just after its last byte went out)."""
        await trio.testing.wait_all_tasks_blocked()
        lines = format_entries(self.ctx.access_log.take()).splitlines()
        return [json.loads(line) for line in lines]


async def start_rig(
    nursery: trio.Nursery,
    serve_upstream: ServeUpstream,
    cluster: dict[str, Any] | None = None,
    **route: Any,
) -> Rig:
    """A rig whose route has the fields ``route``, and its cluster ``cluster``."""
    data = simple_config(
        {"c": [Address("192.0.2.1", 80)]},
        routes=[{"match": {"prefix": "/"}, "cluster": "c", **route}],
        access_log={"enabled": True},
    )
    data["clusters"][0].update(cluster or {})
    config = config_from_data(data)
    listener = config.listeners[0]
    cluster = config.cluster("c")
    assert cluster is not None
    handle = ClusterHandle(cluster)
    plane = DataPlane(config, {"web": RouteTable(listener)}, {"c": handle})
    ctx = ListenerContext(listener, DataPlaneRef(plane), rng=random.Random(7))
    # (what the cluster's actor does in a gateway)
    ctx.registry.cluster("c").thresholds = cluster.circuit_breakers
    client, server = trio.testing.memory_stream_pair()
    rig = Rig(ctx, handle, client, Reader(client))

    async def connect(address: Address) -> MemoryConnection:
        gateway_end, upstream_end = trio.testing.memory_stream_pair()
        rig.opened += 1
        nursery.start_soon(serve_upstream, rig.opened, upstream_end)
        return MemoryConnection(gateway_end)

    for endpoint in handle.snapshot.all_endpoints:
        endpoint.pool.connector = connect
    nursery.start_soon(HttpConnection(server, ctx, b"203.0.113.9").serve)
    return rig


OK_HELLO = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


async def test_a_head_response_has_a_length_and_no_body(nursery: trio.Nursery) -> None:
    heads: list[tuple[int, bytes]] = []

    async def upstream(number: int, stream: MemoryStream) -> None:
        reader = Reader(stream)
        heads.append((number, await reader.until(b"\r\n\r\n")))
        if number == 1:
            await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
        else:
            await stream.send_all(OK_HELLO)
        await reader.to_eof()

    rig = await start_rig(nursery, upstream)
    await rig.client.send_all(b"HEAD /x HTTP/1.1\r\nHost: h\r\n\r\n")
    head = await rig.reader.until(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: 5\r\n" in head
    # the next response comes whole, so the proxy waited for no body after the HEAD's
    await rig.client.send_all(b"GET /y HTTP/1.1\r\nHost: h\r\n\r\n")
    head, body = await rig.response(5)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and body == b"hello"
    assert heads[0] == (1, heads[0][1]) and heads[0][1].startswith(b"HEAD /x HTTP/1.1\r\n")
    # (a connection that answered a HEAD is not reused: an upstream that wrongly sent a
    # body would have it read as the next response)
    assert [number for number, _ in heads] == [1, 2]
    assert [(r["method"], r["response_code"], r["bytes_sent"]) for r in await rig.records()] == [
        ("HEAD", 200, 0),
        ("GET", 200, 5),
    ]


async def test_expect_100_continue_relays_the_100_then_the_body(nursery: trio.Nursery) -> None:
    received: list[bytes] = []

    async def upstream(number: int, stream: MemoryStream) -> None:
        reader = Reader(stream)
        received.append(await reader.until(b"\r\n\r\n"))
        await stream.send_all(b"HTTP/1.1 100 Continue\r\n\r\n")
        received.append(await reader.exactly(5))
        await stream.send_all(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")

    rig = await start_rig(nursery, upstream)
    await rig.client.send_all(
        b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    )
    # the client sends its body only once the 100 arrived
    assert await rig.reader.until(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert b"Expect: 100-continue\r\n" in received[0]
    await rig.client.send_all(b"hello")
    head, body = await rig.response(2)
    assert head.startswith(b"HTTP/1.1 201 Created\r\n") and body == b"ok"
    assert received[1] == b"hello"
    [record] = await rig.records()
    assert (record["response_code"], record["bytes_received"], record["bytes_sent"]) == (201, 5, 2)


async def test_an_http10_client_gets_a_close_delimited_body(nursery: trio.Nursery) -> None:
    async def upstream(number: int, stream: MemoryStream) -> None:
        await Reader(stream).until(b"\r\n\r\n")
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\nx-sum: 1\r\n\r\n"
        )

    rig = await start_rig(nursery, upstream)
    # asking for keep-alive does not help: a body of unknown length ends with the connection
    await rig.client.send_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    reply = await rig.reader.to_eof()
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"transfer-encoding" not in head.lower() and b"connection: close" in head
    assert body == b"hello"  # not re-chunked, and no trailers for HTTP/1.0


async def test_an_http10_client_keeps_its_connection_only_when_it_asks(
    nursery: trio.Nursery,
) -> None:
    async def upstream(number: int, stream: MemoryStream) -> None:
        reader = Reader(stream)
        while await reader.next_head() is not None:
            await stream.send_all(OK_HELLO)

    rig = await start_rig(nursery, upstream)
    for _ in range(2):
        await rig.client.send_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        head, body = await rig.response(5)
        assert b"connection: keep-alive\r\n" in head and body == b"hello"
    await rig.client.send_all(b"GET / HTTP/1.0\r\n\r\n")
    head, body = await rig.response(5)
    assert b"connection: close\r\n" in head and body == b"hello"
    assert await rig.reader.to_eof() == b""  # and the proxy closed it
    assert rig.opened == 1


async def test_an_early_response_reuses_neither_connection(nursery: trio.Nursery) -> None:
    upstream_saw_eof = trio.Event()

    async def upstream(number: int, stream: MemoryStream) -> None:
        reader = Reader(stream)
        await reader.until(b"\r\n\r\n")
        await stream.send_all(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n\r\n")
        await reader.to_eof()  # whatever of the body came, then the pool's close
        upstream_saw_eof.set()

    rig = await start_rig(nursery, upstream)
    await rig.client.send_all(
        b"POST /big HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n" + b"x" * 10
    )
    reply = await rig.reader.to_eof()  # 413, then the client connection closes
    assert reply.startswith(b"HTTP/1.1 413 Content Too Large\r\n")
    with trio.fail_after(5):
        await upstream_saw_eof.wait()
    [endpoint] = rig.handle.snapshot.endpoints
    assert (endpoint.pool.open, endpoint.pool.idle, endpoint.active) == (0, 0, 0)
    [record] = await rig.records()
    assert record["response_code"] == 413


def closing_after_one(bodies: list[bytes]) -> ServeUpstream:
    """An upstream whose first connection answers once, then closes its side (an idle
    keep-alive connection the upstream let go of); later connections answer everything."""

    async def upstream(number: int, stream: MemoryStream) -> None:
        reader = Reader(stream)
        while (head := await reader.next_head()) is not None:
            bodies.append(head)
            await stream.send_all(OK_HELLO)
            if number == 1:
                await stream.send_eof()
                await reader.to_eof()
                return

    return upstream


async def test_a_stale_pooled_connection_resends_an_idempotent_request(
    nursery: trio.Nursery,
) -> None:
    heads: list[bytes] = []
    rig = await start_rig(nursery, closing_after_one(heads))
    for _ in range(2):
        await rig.client.send_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        head, body = await rig.response(5)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and body == b"hello"
    assert rig.opened == 2  # the second GET went once more, on a fresh connection
    assert len(heads) == 2
    stats = rig.ctx.cluster_stats["c"]
    assert stats.upstream_rq_retry == 0  # not a retry of the route's: the request never left
    assert stats.upstream_rq_xx[2] == 2


async def test_a_stale_pooled_connection_fails_a_post(nursery: trio.Nursery) -> None:
    heads: list[bytes] = []
    rig = await start_rig(nursery, closing_after_one(heads))
    await rig.client.send_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    await rig.response(5)
    await rig.client.send_all(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
    head = await rig.reader.until(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert rig.opened == 1  # the POST may have been taken: it is not sent again
    records = await rig.records()
    assert [(r["response_code"], r["response_flags"]) for r in records] == [(200, "-"), (502, "UC")]


def answering(statuses: list[int]) -> ServeUpstream:
    """An upstream that answers the n-th request it gets (over all connections) with
    ``statuses[n]``."""
    count = 0

    async def upstream(number: int, stream: MemoryStream) -> None:
        nonlocal count
        reader = Reader(stream)
        while await reader.next_head() is not None:
            status = statuses[count]
            count += 1
            await stream.send_all(b"HTTP/1.1 %d X\r\nContent-Length: 2\r\n\r\n%d" % (status, 10))

    return upstream


async def test_a_retried_status_is_dropped_and_the_request_tried_again(
    nursery: trio.Nursery,
) -> None:
    retry = {"attempts": 1, "retry_on": ["gateway-error"]}
    rig = await start_rig(nursery, answering([503, 200]), retry=retry)
    await rig.client.send_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    head, _ = await rig.response(2)
    assert head.startswith(b"HTTP/1.1 200 X\r\n")
    stats = rig.ctx.cluster_stats["c"]
    assert (stats.upstream_rq_retry, stats.upstream_rq_xx[5], stats.upstream_rq_xx[2]) == (1, 1, 1)
    [record] = await rig.records()
    assert (record["response_code"], record["response_flags"]) == (200, "-")


async def test_the_last_try_answers_whatever_it_gets(nursery: trio.Nursery) -> None:
    retry = {"attempts": 1, "retry_on": ["5xx"]}
    rig = await start_rig(nursery, answering([500, 503]), retry=retry)
    await rig.client.send_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    head, _ = await rig.response(2)
    assert head.startswith(b"HTTP/1.1 503 X\r\n")
    [record] = await rig.records()
    assert (record["response_code"], record["response_flags"]) == (
        503,
        "URX",
    )  # retries were exhausted
    assert rig.ctx.cluster_stats["c"].upstream_rq_xx[5] == 2


async def test_a_post_with_a_body_is_not_retried_on_status(nursery: trio.Nursery) -> None:
    retry = {"attempts": 2, "retry_on": ["5xx"]}
    rig = await start_rig(nursery, answering([503, 200]), retry=retry)
    await rig.client.send_all(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi")
    head, _ = await rig.response(2)
    assert head.startswith(b"HTTP/1.1 503 X\r\n")  # the body was streamed, not kept
    assert rig.opened == 1
