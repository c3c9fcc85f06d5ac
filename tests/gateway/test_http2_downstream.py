"""HTTP/2 clients through a real gateway to HTTP/1.1 upstreams (loopback, port 0):
httpx with ``http2=True``, curl with prior knowledge, raw h2 connections."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import httpx
import pytest
import trio
import yaml

from gateway.config import Address
from tests.conftest import StartGateway, gateway_process, simple_config
from triogate.demo import serve_demo_upstream

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


async def start(nursery: trio.Nursery, start_gateway: StartGateway, **listener: object) -> Address:
    upstream: Address = await nursery.start(serve_demo_upstream, "up")
    gateway = await start_gateway(simple_config({"api": [upstream]}, **listener))
    return gateway.listener_address("web")


def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(http1=False, http2=True, timeout=10)


async def test_get_and_post_with_bodies_both_ways(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    web = await start(nursery, start_gateway)
    async with client() as http:
        got = await http.get(f"http://{web}/hello?x=1", headers={"x-custom": "yes"})
        assert got.http_version == "HTTP/2"
        assert got.status_code == 200
        info = got.json()
        assert info["path"] == "/hello?x=1"
        assert info["headers"]["host"] == str(web)
        assert info["headers"]["x-custom"] == "yes"
        assert info["headers"]["via"] == "1.1 triogate"
        assert got.headers["via"] == "1.1 triogate"
        body = bytes(range(256)) * 1000
        posted = await http.post(f"http://{web}/echo", content=body)
        assert posted.status_code == 200
        assert posted.content == body


async def test_many_concurrent_streams_share_one_connection(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    web = await start(nursery, start_gateway)
    results: list[int] = []
    async with client() as http:

        async def one(i: int) -> None:
            got = await http.post(f"http://{web}/n/{i}/echo", content=b"%d" % i * 100)
            assert got.content == b"%d" % i * 100
            results.append(got.status_code)

        async with trio.open_nursery() as inner:
            for i in range(80):
                inner.start_soon(one, i)
    assert results == [200] * 80


async def test_curl_with_prior_knowledge(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    if shutil.which("curl") is None:
        pytest.skip("no curl")
    web = await start(nursery, start_gateway)
    done = await trio.run_process(
        ["curl", "-s", "--http2-prior-knowledge", "-w", "\n%{http_version}", f"http://{web}/c"],
        capture_stdout=True,
    )
    out = done.stdout.decode()
    body, version = out.rsplit("\n", 1)
    assert version == "2"
    assert json.loads(body)["path"] == "/c"


async def test_http1_still_served_on_the_same_listener(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    web = await start(nursery, start_gateway)
    async with httpx.AsyncClient() as http:
        got = await http.get(f"http://{web}/one")
    assert got.http_version == "HTTP/1.1"
    assert got.json()["path"] == "/one"


async def test_a_local_reply_is_an_http2_response(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    upstream: Address = await nursery.start(serve_demo_upstream, "up")
    config = simple_config(
        {"api": [upstream]}, routes=[{"match": {"prefix": "/api"}, "cluster": "api"}]
    )
    gateway = await start_gateway(config)
    web = gateway.listener_address("web")
    async with client() as http:
        got = await http.get(f"http://{web}/nowhere")
        assert got.status_code == 404
        again = await http.get(f"http://{web}/api/x")
        assert again.status_code == 200
    stats = gateway.stats.listener("web")
    assert stats.downstream_rq_xx[4] == 1
    assert stats.downstream_rq_xx[2] == 1


# httpcore leaves the request body's async iterator unclosed after a body sent through
# many window updates; the warning is its GC, not the gateway's
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_a_large_body_through_small_windows(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    # (the default window: a smaller one shrinks httpcore's window below zero mid-upload,
    # a client bug; the gateway's side of a shrink is tested with a raw h2 client)
    web = await start(nursery, start_gateway, http2={"max_concurrent_streams": 10})
    body = b"0123456789abcdef" * (4 * 1024 * 1024 // 16)
    async with client() as http:
        posted = await http.post(f"http://{web}/echo", content=body)
        assert posted.content == body
        down = await http.get(f"http://{web}/bytes/{8 * 1024 * 1024}")
        assert len(down.content) == 8 * 1024 * 1024


def raw_client() -> h2.connection.H2Connection:
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    conn.initiate_connection()
    return conn


async def read_events(
    stream: trio.SocketStream, conn: h2.connection.H2Connection, until: type, stream_id: int = 0
) -> list[h2.events.Event]:
    """Events until one of type ``until`` (for ``stream_id``, if given) or EOF."""
    seen: list[h2.events.Event] = []
    with trio.fail_after(10):
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return seen
            events = conn.receive_data(data)
            seen += events
            out = conn.data_to_send()
            if out:
                await stream.send_all(out)
            for ev in events:
                if isinstance(ev, until) and (not stream_id or ev.stream_id == stream_id):
                    return seen


async def test_trailers_cross_both_ways(nursery: trio.Nursery, start_gateway: StartGateway) -> None:
    seen_by_upstream: list[bytes] = []

    async def upstream(stream: trio.SocketStream) -> None:
        buffer = b""
        async with stream:
            while not buffer.endswith(b"x-sum: 42\r\n\r\n"):
                buffer += await stream.receive_some(65536)
            seen_by_upstream.append(buffer)
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: grpc-status\r\n\r\n"
                b"2\r\nok\r\n0\r\ngrpc-status: 0\r\n\r\n"
            )
            await trio.sleep(1)

    listeners = await nursery.start(trio.serve_tcp, upstream, 0)
    port = listeners[0].socket.getsockname()[1]
    gateway = await start_gateway(simple_config({"api": [Address("127.0.0.1", port)]}))
    web = gateway.listener_address("web")
    async with await trio.open_tcp_stream(web.host, web.port) as stream:
        conn = raw_client()
        conn.send_headers(
            1,
            [
                (b":method", b"POST"),
                (b":scheme", b"http"),
                (b":path", b"/t"),
                (b":authority", b"h"),
            ],
        )
        conn.send_data(1, b"hello")
        conn.send_headers(1, [(b"x-sum", b"42")], end_stream=True)
        await stream.send_all(conn.data_to_send())
        events = await read_events(stream, conn, h2.events.StreamEnded, 1)
        trailers = [e for e in events if isinstance(e, h2.events.TrailersReceived)]
        assert trailers and (b"grpc-status", b"0") in trailers[0].headers
        data = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
        assert data == b"ok"
    head = seen_by_upstream[0]
    assert b"transfer-encoding: chunked" in head.lower()
    assert head.endswith(b"5\r\nhello\r\n0\r\nx-sum: 42\r\n\r\n")
    assert gateway.stats.listener("web").http2_trailers == 1


async def test_workers_serve_http2(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        upstream: Address = await nursery.start(serve_demo_upstream, "up")
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(simple_config({"api": [upstream]})))
        async with gateway_process(path, workers=2) as gateway:
            web = gateway.listeners["web"]
            async with client() as http:
                for _ in range(5):
                    got = await http.get(f"http://{web}/w")
                    assert got.status_code == 200
                    assert got.http_version == "HTTP/2"
        nursery.cancel_scope.cancel()
