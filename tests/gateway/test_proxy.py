"""The HTTP/1.1 reverse proxy end to end: real upstreams, real clients, loopback."""

from __future__ import annotations

import json
from typing import Any

import httpx
import trio

from gateway.app import Gateway
from gateway.config import Address
from tests.conftest import ClosedAddress, StartGateway, StartUpstream, simple_config


def url(gateway: Gateway, path: str = "/") -> str:
    return f"http://{gateway.listener_address('web')}{path}"


async def get_json(client: httpx.AsyncClient, target: str, **kw: Any) -> dict[str, Any]:
    r = await client.get(target, **kw)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


async def test_proxies_and_rewrites_headers(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    up = await start_upstream("u1")
    gw = await start_gateway(simple_config({"c": [up]}))
    async with httpx.AsyncClient() as client:
        r = await client.get(
            url(gw, "/hello?x=1"),
            headers={
                "Connection": "keep-alive, X-Secret",
                "X-Secret": "hop",
                "Keep-Alive": "timeout=5",
                "X-Forwarded-For": "10.9.8.7",
                "X-Kept": "yes",
            },
        )
    assert r.status_code == 200
    seen = r.json()
    assert seen["path"] == "/hello?x=1"
    h = seen["headers"]
    assert h["x-kept"] == "yes"
    assert "x-secret" not in h and "keep-alive" not in h and "connection" not in h
    assert h["x-forwarded-for"] == "10.9.8.7, 127.0.0.1"
    assert h["x-forwarded-proto"] == "http"
    assert len(h["x-request-id"]) == 36 and h["x-request-id"][14] == "4"
    assert h["via"] == "1.1 triogate"
    assert r.headers["via"] == "1.1 triogate"
    assert r.headers["x-upstream"] == "u1"


async def test_request_id_is_passed_on(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    gw = await start_gateway(simple_config({"c": [await start_upstream("u1")]}))
    async with httpx.AsyncClient() as client:
        seen = await get_json(client, url(gw), headers={"x-request-id": "abc-123"})
    assert seen["headers"]["x-request-id"] == "abc-123"


async def test_routes_by_first_match_exact_path_prefix_and_host(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    ups = {n: await start_upstream(n) for n in ("api", "web", "other", "exact")}
    data = simple_config({n: [a] for n, a in ups.items()})
    data["listeners"][0]["virtual_hosts"] = [
        {
            "name": "main",
            "domains": ["*"],
            "routes": [
                {"match": {"path": "/api/exact"}, "cluster": "exact"},
                {"match": {"prefix": "/api"}, "cluster": "api"},
                {"match": {"prefix": "/"}, "cluster": "web"},
            ],
        },
        {
            "name": "other",
            "domains": ["other.example", "*.other.example"],
            "routes": [{"match": {"prefix": "/"}, "cluster": "other"}],
        },
    ]
    del data["listeners"][0]["routes"]
    gw = await start_gateway(data)
    async with httpx.AsyncClient() as client:

        async def who(path: str, host: str | None = None) -> str:
            headers = {"host": host} if host else {}
            return str((await get_json(client, url(gw, path), headers=headers))["upstream"])

        assert await who("/api/users") == "api"
        assert await who("/apix") == "api"
        assert await who("/api/exact") == "exact"
        assert await who("/api/exact?q=1") == "exact"
        assert await who("/api/exact/more") == "api"
        assert await who("/index.html") == "web"
        assert await who("/api", host="other.example:8080") == "other"
        assert await who("/", host="a.b.other.example") == "other"
        assert await who("/", host="OTHER.EXAMPLE") == "other"


async def test_round_robin_and_keep_alive_both_sides(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    a, b = await start_upstream("a"), await start_upstream("b")
    gw = await start_gateway(simple_config({"c": [a, b]}))
    async with httpx.AsyncClient() as client:
        seen = [await get_json(client, url(gw)) for _ in range(6)]
    order = [s["upstream"] for s in seen]
    assert order[:2] in (["a", "b"], ["b", "a"]) and order == order[:2] * 3  # strict alternation
    # one client connection, and one reused upstream connection per endpoint
    for name in ("a", "b"):
        assert len({s["connection"] for s in seen if s["upstream"] == name}) == 1
    handle = gw.control.listeners["web"]
    assert handle.connections == 0 or handle.connections == 1


async def test_connection_close_from_upstream_is_never_reused(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    gw = await start_gateway(simple_config({"c": [await start_upstream("u")]}))
    async with httpx.AsyncClient() as client:
        first = await client.get(url(gw, "/?close=1"))
        second = await client.get(url(gw, "/?close=1"))
        third = await client.get(url(gw, "/"))
        fourth = await client.get(url(gw, "/"))
    conns = [r.headers["x-upstream-connection"] for r in (first, second, third, fourth)]
    assert len(set(conns[:3])) == 3, conns
    assert conns[2] == conns[3]
    assert "connection" not in first.headers or first.headers["connection"] != "close"


async def test_local_replies(
    start_upstream: StartUpstream, start_gateway: StartGateway, closed_address: ClosedAddress
) -> None:
    up = await start_upstream("u")
    closed = closed_address()
    data = simple_config(
        {"live": [up], "dead": [closed], "empty": []},
        routes=[
            {"match": {"prefix": "/delay"}, "cluster": "live", "timeout": 0.3},
            {"match": {"prefix": "/status"}, "cluster": "live"},
            {"match": {"prefix": "/dead"}, "cluster": "dead"},
            {"match": {"prefix": "/empty"}, "cluster": "empty"},
        ],
    )
    gw = await start_gateway(data)
    async with httpx.AsyncClient() as client:
        nr = await client.get(url(gw, "/nowhere"))
        uf = await client.get(url(gw, "/dead"))
        uh = await client.get(url(gw, "/empty"))
        ut = await client.get(url(gw, "/delay/3000"))
        ok = await client.get(url(gw, "/status/201"))
    assert (nr.status_code, nr.text) == (404, "no route for /nowhere\n")
    assert uf.status_code == 502 and "connect to" in uf.text
    assert uh.status_code == 503 and "no healthy endpoint" in uh.text
    assert ut.status_code == 504 and "timed out" in ut.text
    assert ok.status_code == 201


async def test_upstream_reset_is_502(nursery: trio.Nursery, start_gateway: StartGateway) -> None:
    async def slam(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.aclose()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, slam, listeners)
    port = listeners[0].socket.getsockname()[1]
    gw = await start_gateway(simple_config({"c": [Address("127.0.0.1", port)]}))
    async with httpx.AsyncClient() as client:
        r = await client.get(url(gw))
    assert r.status_code == 502
    assert "closed without responding" in r.text


async def test_bodies_stream_both_ways(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    gw = await start_gateway(simple_config({"c": [await start_upstream("u")]}))
    payload = bytes(range(256)) * 4096  # 1 MiB

    async def pieces() -> Any:
        for i in range(0, len(payload), 100_000):
            yield payload[i : i + 100_000]

    async with httpx.AsyncClient() as client:
        chunked = await client.post(url(gw, "/echo"), content=pieces())
        sized = await client.post(url(gw, "/echo"), content=payload)
        counted = await client.post(url(gw, "/count"), content=payload)
        big = await client.get(url(gw, "/bytes/5000000"))
        head = await client.head(url(gw, "/"))
        after_head = await client.get(url(gw, "/"))
    assert chunked.content == payload
    assert sized.content == payload
    assert json.loads(counted.content)["body_bytes"] == len(payload)
    assert len(big.content) == 5_000_000
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) > 0
    assert after_head.status_code == 200


async def test_tcp_listener_copies_bytes_both_ways_with_half_close(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    async def echo(stream: trio.SocketStream) -> None:
        async with stream:
            received = b""
            while data := await stream.receive_some(65536):
                received += data
            await stream.send_all(b"echo:" + received)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, echo, listeners)
    port = listeners[0].socket.getsockname()[1]
    data = {
        "admin": {"address": "127.0.0.1:0"},
        "listeners": [{"name": "web", "address": "127.0.0.1:0", "protocol": "tcp", "cluster": "e"}],
        "clusters": [{"name": "e", "endpoints": [{"address": f"127.0.0.1:{port}"}]}],
    }
    gw = await start_gateway(data)
    address = gw.listener_address("web")
    stream = await trio.open_tcp_stream(address.host, address.port)
    async with stream:
        payload = b"x" * 300_000
        await stream.send_all(payload)
        await stream.send_eof()  # the echo server answers only after our half-close
        reply = b""
        with trio.fail_after(5):
            while data_in := await stream.receive_some(65536):
                reply += data_in
    assert reply == b"echo:" + payload
