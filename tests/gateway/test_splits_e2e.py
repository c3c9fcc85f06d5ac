"""Weighted and sticky splits end to end: shares over 10,000 requests, every user sticky,
a weight change through the admin API moving about 10% of the users.

The requests go down one keep-alive connection, written fifty at a time (HTTP/1.1
pipelining) and read back by Content-Length, to upstreams that answer with a fixed
response: ten thousand of them take a few seconds, where a full HTTP client and the demo
upstream take much longer. The decision itself is tested over whole populations in
``tests/property/test_split.py``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import httpx
import trio

from gateway.app import Gateway
from gateway.config import Address
from tests.conftest import StartGateway, simple_config


class KeepAliveClient:
    """GETs down one connection, written in batches (HTTP/1.1 pipelining), answered in order."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def upstreams_of(self, requests: Sequence[Sequence[tuple[str, str]]]) -> list[str]:
        """GET ``/status/200`` once per entry of ``requests`` (its headers); the
        ``x-upstream`` of each 200 answer, in order."""
        seen: list[str] = []
        for start in range(0, len(requests), BATCH):
            batch = requests[start : start + BATCH]
            await self.stream.send_all(b"".join(map(_request, batch)))
            for _ in batch:
                seen.append(await self._upstream_of_next())
        return seen

    async def _upstream_of_next(self) -> str:
        while b"\r\n\r\n" not in self.buffer:
            await self._receive()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status, *fields = head.decode("latin-1").split("\r\n")
        assert status.startswith("HTTP/1.1 200"), head
        found = dict(f.lower().split(": ", 1) for f in fields)
        length = int(found["content-length"])
        while len(self.buffer) < length:
            await self._receive()
        self.buffer = self.buffer[length:]
        return found["x-upstream"]

    async def _receive(self) -> None:
        piece = await self.stream.receive_some()
        assert piece, "the gateway closed the connection"
        self.buffer += piece


#: requests written at once
BATCH = 50


def _request(headers: Sequence[tuple[str, str]]) -> bytes:
    lines = ["GET /status/200 HTTP/1.1", "Host: test", *(f"{n}: {v}" for n, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def start_fixed_upstream(nursery: trio.Nursery, name: str) -> Address:
    """An upstream answering every body-less request with a fixed 200 naming it: far
    cheaper than the demo upstream, so that the loop measures the gateway."""
    answer = (f"HTTP/1.1 200 OK\r\nx-upstream: {name}\r\ncontent-length: 2\r\n\r\nok").encode()

    async def serve(stream: trio.SocketStream) -> None:
        pending = b""
        async with stream:
            while piece := await stream.receive_some():
                pending += piece
                heads = pending.count(b"\r\n\r\n")
                pending = pending[pending.rfind(b"\r\n\r\n") + 4 :] if heads else pending
                if heads:
                    await stream.send_all(answer * heads)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, serve, listeners)
    return Address("127.0.0.1", listeners[0].socket.getsockname()[1])


async def split_gateway(
    nursery: trio.Nursery, start_gateway: StartGateway, **route: object
) -> Gateway:
    ups = {name: [await start_fixed_upstream(nursery, name)] for name in ("v1", "v2")}
    split = [{"cluster": "v1", "weight": 90}, {"cluster": "v2", "weight": 10}]
    routes = [{"name": "main", "match": {"prefix": "/"}, "split": split, **route}]
    return await start_gateway(simple_config(ups, routes=routes), admin=True)


@asynccontextmanager
async def connect(gw: Gateway) -> AsyncIterator[KeepAliveClient]:
    address = gw.listener_address("web")
    async with await trio.open_tcp_stream(address.host, address.port) as stream:
        yield KeepAliveClient(stream)


async def test_a_90_10_split_holds_within_two_points_over_10000_requests(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    gw = await split_gateway(nursery, start_gateway)
    async with connect(gw) as client:
        seen = Counter(await client.upstreams_of([()] * 10_000))
    assert set(seen) == {"v1", "v2"}
    assert abs(seen["v2"] / 10_000 - 0.10) <= 0.02, seen


async def test_every_user_is_sticky_and_a_weight_change_moves_about_ten_percent(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    gw = await split_gateway(nursery, start_gateway, split_key={"header": "x-user"})
    users = [f"user-{i}" for i in range(2000)]
    keyed = [[("x-user", user)] for user in users]
    async with connect(gw) as client:
        first = await client.upstreams_of(keyed)
        assert await client.upstreams_of(keyed) == first  # every user, again: the same cluster
    assert abs(first.count("v2") / len(users) - 0.10) <= 0.02
    async with httpx.AsyncClient(base_url=f"http://{gw.admin_address}") as admin:
        r = await admin.put("/listeners/web/routes/main/split", json={"v1": 80, "v2": 20})
        assert r.status_code == 200, r.text
        r = await admin.get("/listeners/web/routes/main")
        assert r.json()["split_key"] == {"header": "x-user", "cookie": None}  # kept
    async with connect(gw) as client:
        second = await client.upstreams_of(keyed)
    assert abs(second.count("v2") / len(users) - 0.20) <= 0.02
    moved = Counter((a, b) for a, b in zip(first, second, strict=True) if a != b)
    assert set(moved) == {("v1", "v2")}  # nobody left the canary
    assert abs(sum(moved.values()) / len(users) - 0.10) <= 0.02, moved


async def test_a_cookie_key_is_sticky_and_a_request_without_a_key_is_split_at_random(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    gw = await split_gateway(nursery, start_gateway, split_key={"cookie": "uid"})
    cookies = [[("cookie", f"theme=dark; uid=u{i}")] for i in range(200)]
    async with connect(gw) as client:
        first = await client.upstreams_of(cookies)
        assert set(first) == {"v1", "v2"}
        for _ in range(2):
            assert await client.upstreams_of(cookies) == first
        # without the cookie: both clusters, as a weighted random pick
        keyless = Counter(await client.upstreams_of([[("cookie", "theme=dark")]] * 400))
    assert set(keyless) == {"v1", "v2"}
