"""Request mirroring end to end: copies reach the shadow cluster with ``-shadow`` hosts,
and a shadow that is slow or down changes nothing for the client."""

from __future__ import annotations

from typing import Any

import attrs
import httpx
import trio

from gateway.app import Gateway
from gateway.config import Address
from gateway.proxy.mirror import MAX_BODY, MAX_IN_FLIGHT
from tests.conftest import ClosedAddress, StartGateway, StartUpstream, simple_config, wait_until


@attrs.define(eq=False)
class Shadow:
    """A shadow upstream: records each request head (and body) it gets; answers 200,
    or, ``silent``, never answers at all."""

    silent: bool = False
    requests: list[bytes] = attrs.Factory(list)

    async def serve(self, stream: trio.SocketStream) -> None:
        data = b""
        async with stream:
            while b"\r\n\r\n" not in data:
                piece = await stream.receive_some()
                if not piece:
                    return
                data += piece
            head = data.partition(b"\r\n\r\n")[0]
            length = next(
                (
                    int(line[15:])
                    for line in head.lower().split(b"\r\n")
                    if line.startswith(b"content-length:")
                ),
                0,
            )
            while len(data) < len(head) + 4 + length:
                data += await stream.receive_some()
            self.requests.append(data)
            if self.silent:
                await trio.sleep_forever()
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )


async def start_shadow(nursery: trio.Nursery, shadow: Shadow) -> Address:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, shadow.serve, listeners)
    return Address("127.0.0.1", listeners[0].socket.getsockname()[1])


async def mirrored_gateway(
    start_upstream: StartUpstream,
    start_gateway: StartGateway,
    shadow: Address,
    percent: float = 100,
    **route: Any,
) -> Gateway:
    ups = {"main": [await start_upstream("main")], "shadow": [shadow]}
    routes = [
        {
            "match": {"prefix": "/"},
            "cluster": "main",
            "mirror": {"cluster": "shadow", "percent": percent},
            **route,
        }
    ]
    return await start_gateway(simple_config(ups, routes=routes))


async def test_copies_reach_the_shadow_with_the_host_suffixed(
    nursery: trio.Nursery, start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    shadow = Shadow()
    gw = await mirrored_gateway(start_upstream, start_gateway, await start_shadow(nursery, shadow))
    async with httpx.AsyncClient(base_url=f"http://{gw.listener_address('web')}") as client:
        for i in range(10):
            r = await client.get(f"/page/{i}", headers={"host": "app.example"})
            assert r.status_code == 200 and r.headers["x-upstream"] == "main"
    await wait_until(lambda: len(shadow.requests) == 10)
    for request in shadow.requests:
        head = request.decode().lower()
        assert "\r\nhost: app.example-shadow\r\n" in head
        assert "\r\nconnection: close\r\n" in head
    assert sorted(r.split(b" ")[1] for r in shadow.requests) == sorted(
        b"/page/%d" % i for i in range(10)
    )
    stats = gw.stats.listener("web")
    await wait_until(lambda: stats.mirror_rq_sent == 10)


async def test_a_share_of_the_requests_is_copied(
    nursery: trio.Nursery, start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    shadow = Shadow()
    address = await start_shadow(nursery, shadow)
    gw = await mirrored_gateway(start_upstream, start_gateway, address, percent=25)
    async with httpx.AsyncClient(base_url=f"http://{gw.listener_address('web')}") as client:
        for _ in range(400):
            assert (await client.get("/")).status_code == 200
    stats = gw.stats.listener("web")
    await wait_until(lambda: stats.mirror_rq_sent + stats.mirror_rq_failed == len(shadow.requests))
    assert 50 <= len(shadow.requests) <= 150  # 25% of 400: 100, sd 8.7


async def test_a_held_body_is_copied_and_a_streamed_one_is_skipped(
    nursery: trio.Nursery, start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    shadow = Shadow()
    address = await start_shadow(nursery, shadow)
    # a retrying route holds an idempotent request's body: that body is copied
    gw = await mirrored_gateway(start_upstream, start_gateway, address, retry={"attempts": 1})
    stats = gw.stats.listener("web")
    async with httpx.AsyncClient(base_url=f"http://{gw.listener_address('web')}") as client:
        r = await client.put("/doc", content=b"hello shadow")
        assert r.status_code == 200 and r.json()["body_bytes"] == 12
        await wait_until(lambda: len(shadow.requests) == 1)
        assert shadow.requests[0].endswith(b"\r\n\r\nhello shadow")
        # a POST's body streams to the real upstream: no copy (not held back for one)
        r = await client.post("/form", content=b"x" * 100)
        assert r.status_code == 200 and r.json()["body_bytes"] == 100
        assert stats.mirror_rq_body_skipped == 1
        # a held body over the mirror's bound is not copied either
        big = b"y" * (MAX_BODY + 1)
        r = await client.put("/big", content=big)
        assert r.status_code == 200 and r.json()["body_bytes"] == len(big)
        assert stats.mirror_rq_body_skipped == 2
    assert len(shadow.requests) == 1


async def test_a_silent_shadow_changes_nothing_and_copies_over_the_bound_are_dropped(
    nursery: trio.Nursery, start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    shadow = Shadow(silent=True)
    gw = await mirrored_gateway(start_upstream, start_gateway, await start_shadow(nursery, shadow))
    total = MAX_IN_FLIGHT + 100
    async with httpx.AsyncClient(base_url=f"http://{gw.listener_address('web')}") as client:
        answers = [await client.get(f"/n/{i}") for i in range(total)]
    assert [(r.status_code, r.headers["x-upstream"]) for r in answers] == [(200, "main")] * total
    stats = gw.stats.listener("web")
    # the copies in flight never end while the test runs: exactly the bound of them
    assert stats.mirror_rq_dropped == total - MAX_IN_FLIGHT
    await wait_until(lambda: len(shadow.requests) == MAX_IN_FLIGHT)
    assert stats.mirror_rq_sent == stats.mirror_rq_failed == 0


async def test_a_shadow_that_is_down_changes_nothing_for_the_client(
    start_upstream: StartUpstream, start_gateway: StartGateway, closed_address: ClosedAddress
) -> None:
    gw = await mirrored_gateway(start_upstream, start_gateway, closed_address())
    async with httpx.AsyncClient(base_url=f"http://{gw.listener_address('web')}") as client:
        answers = [await client.get(f"/n/{i}") for i in range(50)]
    assert [(r.status_code, r.headers["x-upstream"]) for r in answers] == [(200, "main")] * 50
    stats = gw.stats.listener("web")
    await wait_until(lambda: stats.mirror_rq_failed == 50)
    assert stats.mirror_rq_sent == stats.mirror_rq_dropped == 0
