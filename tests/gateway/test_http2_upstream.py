"""Upstream HTTP/2 (``protocol: http2`` clusters) against a real HTTP/2 server (hypercorn):
many requests multiplexed over few connections, the stream limit, TLS with h2 by ALPN,
flow control that bounds what a slow client makes the gateway hold, a client gone away
resetting its stream, and HTTP/1.1 and HTTP/2 clients both ways."""

from __future__ import annotations

import socket
from functools import partial
from typing import Any

import httpx
import trio

from gateway.config import Address
from tests.conftest import StartGateway, simple_config, wait_until
from tests.gateway.h2_upstream import H2Upstream, RawH2Upstream, serve_h2_upstream
from tests.gateway.tls_support import Pki


def http2_cluster(upstream: Address, **cluster: Any) -> dict[str, Any]:
    data = simple_config({"api": [upstream]})
    data["clusters"][0].update(protocol="http2", **cluster)
    return data


async def start_upstream(nursery: trio.Nursery, **tls: str) -> H2Upstream:
    upstream = H2Upstream()
    await nursery.start(partial(serve_h2_upstream, upstream, **tls))
    return upstream


async def test_concurrent_requests_share_one_connection(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    upstream = await start_upstream(nursery)
    gateway = await start_gateway(http2_cluster(upstream.address))
    web = gateway.listener_address("web")
    bodies: dict[int, str] = {}

    async def post(i: int) -> None:
        # a client connection each: HTTP/1.1 downstream, HTTP/2 upstream
        async with httpx.AsyncClient() as client:
            r = await client.post(f"http://{web}/echo/{i}", content=b"body %d" % i)
            assert r.status_code == 200
            bodies[i] = r.text

    async with trio.open_nursery() as clients:
        for i in range(40):
            clients.start_soon(post, i)
    assert bodies == {i: f"ok body {i}" for i in range(40)}
    assert {version for version, *_ in upstream.seen} == {"2"}
    assert len(upstream.connections) == 1  # a burst waits for the connection being opened
    cluster = gateway.stats.cluster("api")
    assert cluster.upstream_cx_total == 1
    assert cluster.upstream_rq_xx[2] == 40


async def test_streams_over_the_limit_open_another_connection(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    upstream = await start_upstream(nursery)
    data = http2_cluster(upstream.address, http2={"max_concurrent_streams": 2})
    gateway = await start_gateway(data)
    web = gateway.listener_address("web")
    statuses: list[int] = []

    async def hold() -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            statuses.append((await client.get(f"http://{web}/hold")).status_code)

    async with trio.open_nursery() as clients:
        for _ in range(5):
            clients.start_soon(hold)
        await wait_until(lambda: upstream.holding == 5)
        assert len(upstream.connections) == 3  # 2 + 2 + 1 streams
        upstream.release.set()
    assert statuses == [200] * 5
    # the idle connections are reused: three more requests open none
    async with httpx.AsyncClient() as client:
        for _ in range(3):
            assert (await client.get(f"http://{web}/again")).text == "ok "
    assert len(upstream.connections) == 3
    assert gateway.stats.cluster("api").upstream_cx_total == 3


async def test_http2_over_tls_by_alpn(
    nursery: trio.Nursery, start_gateway: StartGateway, pki: Pki
) -> None:
    cert, key = pki.issue("upstream", "api.internal")
    upstream = await start_upstream(nursery, certfile=cert, keyfile=key)
    data = http2_cluster(upstream.address, tls={"ca": pki.ca_file, "sni": "api.internal"})
    gateway = await start_gateway(data)
    web = gateway.listener_address("web")
    async with httpx.AsyncClient() as client:
        for i in range(3):
            r = await client.post(f"http://{web}/tls", content=b"%d" % i)
            assert r.text == f"ok {i}"
    assert [(v, scheme) for v, scheme, *_ in upstream.seen] == [("2", "https")] * 3
    assert len(upstream.connections) == 1
    assert gateway.stats.cluster("api").ssl_handshake == 1


async def test_an_unverified_upstream_gets_no_request(
    nursery: trio.Nursery, start_gateway: StartGateway, pki: Pki
) -> None:
    cert, key = pki.issue("upstream", "other.internal")  # not the SNI the cluster checks
    upstream = await start_upstream(nursery, certfile=cert, keyfile=key)
    data = http2_cluster(upstream.address, tls={"ca": pki.ca_file, "sni": "api.internal"})
    gateway = await start_gateway(data)
    async with httpx.AsyncClient() as client:
        r = await client.get(f"http://{gateway.listener_address('web')}/")
    assert r.status_code == 503 or r.status_code == 502
    assert upstream.seen == []


async def test_http2_clients_to_an_http2_upstream(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    upstream = await start_upstream(nursery)
    gateway = await start_gateway(http2_cluster(upstream.address))
    web = gateway.listener_address("web")
    replies: list[str] = []
    async with httpx.AsyncClient(http1=False, http2=True) as client, trio.open_nursery() as clients:

        async def post(i: int) -> None:
            r = await client.post(f"http://{web}/h2/{i}", content=b"%d" % i)
            assert r.http_version == "HTTP/2"
            replies.append(r.text)

        for i in range(20):
            clients.start_soon(post, i)
    assert sorted(replies) == sorted(f"ok {i}" for i in range(20))
    assert len(upstream.connections) == 1


async def start_raw(nursery: trio.Nursery, **knobs: Any) -> RawH2Upstream:
    upstream = RawH2Upstream(**knobs)
    await nursery.start(upstream.serve)
    return upstream


async def test_a_slow_client_holds_the_upstream_to_its_windows(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    upstream = await start_raw(nursery)
    size = 64 * 1024 * 1024
    gateway = await start_gateway(http2_cluster(upstream.address))
    web = gateway.listener_address("web")
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # no autotuning to 32 MiB
    await sock.connect((web.host, web.port))
    stream = trio.SocketStream(sock)
    async with stream:
        await stream.send_all(b"GET /big/%d HTTP/1.1\r\nHost: x\r\n\r\n" % size)
        # the client reads nothing: the gateway stops taking the response once the
        # sockets' buffers are full (its send buffer: 4 MiB at most here), and the
        # upstream stops at the stream's window (64 KiB), even while other requests on
        # the same connection make the gateway read its frames for a second
        await wait_until(lambda: upstream.sent > 0)
        async with httpx.AsyncClient() as client:
            with trio.move_on_after(1.0):
                while True:
                    assert (await client.get(f"http://{web}/other")).text == "ok"
        assert upstream.connections == 1
        held = upstream.sent
        assert held < 8 << 20, held
        received = 0
        head = b""
        while b"\r\n\r\n" not in head:
            head += await stream.receive_some(65536)
        received = len(head) - head.index(b"\r\n\r\n") - 4
        while received < size:
            data = await stream.receive_some(1 << 20)
            assert data
            received += len(data)
    assert received == size


async def test_a_client_gone_away_resets_its_stream(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    upstream = await start_raw(nursery)
    gateway = await start_gateway(http2_cluster(upstream.address))
    web = gateway.listener_address("web")
    stream = await trio.open_tcp_stream(web.host, web.port)
    await stream.send_all(b"GET /big/%d HTTP/1.1\r\nHost: x\r\n\r\n" % (256 << 20))
    await wait_until(lambda: upstream.sent > 0)
    await stream.aclose()
    await wait_until(lambda: upstream.resets == 1)  # RST_STREAM, sent at once
    assert upstream.sent < 256 << 20
    async with httpx.AsyncClient() as client:  # the connection itself carries on
        assert (await client.get(f"http://{web}/after")).text == "ok"
    assert upstream.connections == 1


async def test_a_stream_refused_by_goaway_is_sent_again_whatever_its_method(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    upstream = await start_raw(nursery, goaway_after=1)
    gateway = await start_gateway(http2_cluster(upstream.address))
    web = gateway.listener_address("web")
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"http://{web}/first")).text == "ok"
        # GOAWAY refuses it unprocessed: safe to send again, even a POST
        r = await client.post(f"http://{web}/second")
        assert (r.status_code, r.text) == (200, "ok")
    assert upstream.answered == 2
    assert upstream.connections == 2
