"""HTTP and network filters end to end: Python filters on a real gateway, real clients
(httpx over HTTP/1.1 and HTTP/2, raw sockets for TCP), a recording upstream."""

from __future__ import annotations

from typing import Any

import attrs
import h11
import httpx
import trio

from gateway.app import Gateway
from gateway.config import Address
from tests.conftest import (
    H11Message,
    StartGateway,
    h11_reply,
    serve_h11_messages,
    simple_config,
    wait_until,
)
from tests.gateway import filter_samples
from tests.gateway.l4_support import StreamEcho, connect, l4_config, read_to_end

SAMPLES = "tests.gateway.filter_samples"


@attrs.define(eq=False)
class Recorder:
    """An upstream that records each request (target, headers, body) and answers 200 with
    ``body`` (or the request body echoed, for ``/echo``)."""

    name: str
    body: bytes = b"hello from upstream"
    address: Address = attrs.Factory(lambda: Address("127.0.0.1", 0))
    requests: list[dict[str, Any]] = attrs.Factory(list)

    async def start(self, nursery: trio.Nursery) -> Recorder:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.address = Address("127.0.0.1", listeners[0].socket.getsockname()[1])
        nursery.start_soon(trio.serve_listeners, self._serve, listeners)
        return self

    async def _serve(self, stream: trio.SocketStream) -> None:
        await serve_h11_messages(stream, self._respond)

    async def _respond(self, message: H11Message) -> list[h11.Event]:
        target = message.request.target.decode()
        self.requests.append(
            {
                "target": target,
                "headers": {n.decode(): v.decode() for n, v in message.request.headers},
                "body": message.body,
                "trailers": {n.decode(): v.decode() for n, v in message.trailers},
            }
        )
        body = message.body if target == "/echo" else self.body
        if target == "/big":
            body = b"x" * 100_000
        return h11_reply(200, body, [("x-upstream", self.name)])


def python(filter_name: str, factory: str, **config: Any) -> dict[str, Any]:
    return {"name": filter_name, "python": {"factory": f"{SAMPLES}:{factory}", "config": config}}


async def gateway_with(
    nursery: trio.Nursery,
    start_gateway: StartGateway,
    filters: list[dict[str, Any]],
    routes: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> tuple[Gateway, str, Recorder, Recorder]:
    a = await Recorder("a").start(nursery)
    b = await Recorder("b").start(nursery)
    data = simple_config(
        {"a": [a.address], "b": [b.address]}, routes=routes, http_filters=filters, **extra
    )
    gw = await start_gateway(data, admin=True)
    return gw, f"http://{gw.listener_address('web')}", a, b


async def test_a_header_added_by_a_filter_reaches_the_upstream_and_the_client(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    flt = python("tag", "AddHeader", header="x-hello", value="world", response_header="x-seen")
    _gw, url, a, _ = await gateway_with(nursery, start_gateway, [flt])
    async with httpx.AsyncClient() as client:
        r = await client.get(f"{url}/x")
    assert r.status_code == 200
    assert r.text == "hello from upstream"
    assert r.headers["x-seen"] == "world"
    assert a.requests[0]["headers"]["x-hello"] == "world"
    assert a.requests[0]["target"] == "/x"


async def test_filters_run_in_order_and_a_route_disables_one_by_name(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    routes = [
        {"match": {"prefix": "/quiet"}, "cluster": "a", "disabled_filters": ["second"]},
        {"match": {"prefix": "/"}, "cluster": "a"},
    ]
    filters = [
        python("first", "Order", name="first"),
        python("second", "Order", name="second"),
        python("third", "Order", name="third"),
    ]
    _gw, url, a, _ = await gateway_with(nursery, start_gateway, filters, routes)
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{url}/loud")).status_code == 200
        assert (await client.get(f"{url}/quiet")).status_code == 200
    assert a.requests[0]["headers"]["x-order"] == "first,second,third"
    assert a.requests[1]["headers"]["x-order"] == "first,third"


async def test_a_filter_changing_the_path_re_routes_the_request(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    routes = [
        {"match": {"prefix": "/new"}, "cluster": "b"},
        {"match": {"prefix": "/other"}, "cluster": "a"},
    ]
    filters = [python("rewrite", "Rewrite", old="/old", new="/new/place")]
    _gw, url, a, b = await gateway_with(nursery, start_gateway, filters, routes)
    async with httpx.AsyncClient() as client:
        r = await client.get(f"{url}/old")  # no route as it came
        assert (await client.get(f"{url}/nowhere")).status_code == 404
    assert r.status_code == 200
    assert r.headers["x-upstream"] == "b"
    assert [q["target"] for q in b.requests] == ["/new/place"]
    assert a.requests == []


async def test_a_local_reply_never_reaches_the_upstream(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    filters = [python("deny", "Deny", status=451), python("tag", "AddHeader")]
    _gw, url, a, b = await gateway_with(nursery, start_gateway, filters)
    async with httpx.AsyncClient() as client:
        r = await client.get(f"{url}/deny/me")
        again = await client.get(f"{url}/deny/again")  # the connection went on
        fine = await client.get(f"{url}/fine")
    assert (r.status_code, r.text, r.headers["x-denied"]) == (451, "denied by filter\n", "yes")
    assert again.status_code == 451
    assert fine.status_code == 200
    assert [q["target"] for q in a.requests] == ["/fine"]
    assert b.requests == []


async def test_body_hooks_change_the_request_and_the_response_bodies(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    _gw, url, a, _ = await gateway_with(nursery, start_gateway, [python("shout", "Shout")])
    payload = b"quiet words " * 5000  # 60,000 bytes: several pieces
    async with httpx.AsyncClient() as client:
        r = await client.post(f"{url}/echo", content=payload)
        plain = await client.get(f"{url}/x")
    assert a.requests[0]["body"] == payload.upper()
    assert "content-length" not in a.requests[0]["headers"]  # re-framed, chunked
    assert a.requests[0]["headers"]["transfer-encoding"] == "chunked"
    assert r.status_code == 200
    assert r.content == payload.upper() + b"!!"
    assert plain.content == b"HELLO FROM UPSTREAM!!"
    assert plain.headers["transfer-encoding"] == "chunked"


async def test_a_buffering_filter_sees_the_whole_body_and_the_limit_is_413(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    _gw, url, a, _ = await gateway_with(
        nursery, start_gateway, [python("reverse", "Reverse")], filter_buffer_limit_kb=64
    )
    payload = bytes(range(256)) * 200  # 51,200 bytes, in several pieces
    async with httpx.AsyncClient() as client:
        r = await client.post(f"{url}/echo", content=payload)
        big = await client.post(f"{url}/echo", content=payload * 3)
    assert r.content == payload[::-1]
    assert a.requests[0]["body"] == payload[::-1]
    assert big.status_code == 413
    assert len(a.requests) == 1 or len(a.requests[1]["body"]) < len(payload) * 3


async def test_async_hooks_are_awaited_on_both_sides(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    _gw, url, a, _ = await gateway_with(nursery, start_gateway, [python("wait", "AsyncTag")])
    async with httpx.AsyncClient() as client:
        r = await client.get(f"{url}/x")
    assert a.requests[0]["headers"]["x-async"] == "request"
    assert r.headers["x-async"] == "response"
    assert r.status_code == 203  # the response hook set :status


async def test_a_raising_filter_fails_only_that_request_with_500_and_is_counted(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    gw, url, a, _ = await gateway_with(nursery, start_gateway, [python("boom", "Boom")])

    async def get(headers: dict[str, str]) -> httpx.Response:
        async with httpx.AsyncClient() as client:
            return await client.get(f"{url}/x", headers=headers)

    results: dict[int, int] = {}

    async def one(i: int) -> None:
        results[i] = (await get({"x-boom": "1"} if i % 3 == 0 else {})).status_code

    async with trio.open_nursery() as clients:
        for i in range(9):
            clients.start_soon(one, i)
    assert sorted(results[i] for i in range(0, 9, 3)) == [500, 500, 500]
    assert all(results[i] == 200 for i in range(9) if i % 3)
    assert len(a.requests) == 6  # the failed ones never went upstream
    assert gw.stats.filters["web", "http_filter", "boom"].error == 3
    async with httpx.AsyncClient() as client:
        stats = (await client.get(f"http://{gw.admin_address}/stats")).json()
    assert stats["counters"]["listener.web.http_filter.boom.error"] == 3


async def test_response_header_hooks_apply_over_http2_downstream(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    flt = python("tag", "AddHeader", header="x-hello", value="h2", response_header="x-seen")
    _gw, url, a, _ = await gateway_with(nursery, start_gateway, [flt, python("deny", "Deny")])
    async with httpx.AsyncClient(http1=False, http2=True) as client:
        r = await client.get(f"{url}/x")
        denied = await client.get(f"{url}/deny")
    assert r.http_version == "HTTP/2"
    assert r.headers["x-seen"] == "h2"
    assert a.requests[0]["headers"]["x-hello"] == "h2"
    assert (denied.status_code, denied.text) == (403, "denied by filter\n")
    assert len(a.requests) == 1


async def test_on_log_hooks_see_each_request_once_it_ended(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    filter_samples.LOGGED.clear()
    filters = [python("log", "Logged"), python("deny", "Deny")]
    _gw, url, _a, _ = await gateway_with(nursery, start_gateway, filters)
    async with httpx.AsyncClient() as client:
        await client.get(f"{url}/one")
        await client.get(f"{url}/deny")
    await wait_until(lambda: len(filter_samples.LOGGED) == 2)
    assert [(e["path"], e["status"]) for e in filter_samples.LOGGED] == [
        ("/one", 200),
        ("/deny", 403),
    ]


async def test_faults_still_apply_as_the_chains_last_filter_and_a_route_can_disable_them(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    routes = [
        {
            "name": "calm",
            "match": {"prefix": "/calm"},
            "cluster": "a",
            "disabled_filters": ["faults"],
        },
        {"name": "main", "match": {"prefix": "/"}, "cluster": "a"},
    ]
    faults = [{"name": "f", "listener": "web", "percent": 100, "abort": {"status": 503}}]
    gw, url, a, _ = await gateway_with(nursery, start_gateway, [python("tag", "AddHeader")], routes)
    async with httpx.AsyncClient(base_url=f"http://{gw.admin_address}") as admin:
        r = await admin.post("/faults", json=faults[0])
        assert r.status_code in (200, 201), r.text
    async with httpx.AsyncClient() as client:
        aborted = await client.get(f"{url}/x")
        calm = await client.get(f"{url}/calm")
    assert (aborted.status_code, aborted.text) == (503, "fault filter abort\n")
    assert calm.status_code == 200
    assert [q["target"] for q in a.requests] == ["/calm"]


async def test_an_admin_change_of_a_filters_config_applies_to_new_requests_and_a_bad_one_is_refused(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    flt = python("tag", "AddHeader", header="x-hello", value="one")
    gw, url, a, _ = await gateway_with(nursery, start_gateway, [flt])
    async with (
        httpx.AsyncClient(base_url=f"http://{gw.admin_address}") as admin,
        httpx.AsyncClient() as client,
    ):
        assert (await client.get(f"{url}/1")).status_code == 200
        changed = python("tag", "AddHeader", header="x-hello", value="two")
        r = await admin.patch("/listeners/web", json={"http_filters": [changed]})
        assert r.status_code == 200, r.text
        assert (await client.get(f"{url}/2")).status_code == 200
        bad = {"name": "tag", "python": {"factory": f"{SAMPLES}:NoSuchThing"}}
        r = await admin.patch("/listeners/web", json={"http_filters": [bad]})
        assert 400 <= r.status_code < 500
        assert "listeners[0].http_filters[0].python.factory" in r.text
        refused = {"name": "tag", "python": {"factory": f"{SAMPLES}:Refuses"}}
        r = await admin.patch("/listeners/web", json={"http_filters": [refused]})
        assert 400 <= r.status_code < 500
        assert "listeners[0].http_filters[0].python.config" in r.text
        assert (await client.get(f"{url}/3")).status_code == 200
    assert [q["headers"]["x-hello"] for q in a.requests] == ["one", "two", "two"]


async def test_a_network_filter_sees_and_rewrites_tcp_bytes_both_ways(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    filter_samples.TCP_EVENTS.clear()
    echo = await StreamEcho().start(nursery)
    flt = {"name": "tcp", "python": {"factory": f"{SAMPLES}:Tcp"}}
    gw = await start_gateway(l4_config({"api": [echo.address]}, network_filters=[flt]))
    stream = await connect(gw)
    async with stream:
        await stream.send_all(b"hello")
        await stream.send_eof()
        received = await read_to_end(stream)
    # upper-cased on the way up, echoed, bracketed on the way down (per piece)
    assert received.replace(b"][", b"") == b"[HELLO]"
    await wait_until(lambda: filter_samples.TCP_EVENTS == ["new", "close"])


async def test_a_response_hooks_local_reply_replaces_the_upstreams_response(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    routes = [
        {"match": {"prefix": "/b"}, "cluster": "b"},
        {"match": {"prefix": "/"}, "cluster": "a"},
    ]
    _gw, url, _a, b = await gateway_with(nursery, start_gateway, [python("mask", "Masks")], routes)
    async with httpx.AsyncClient() as client:
        masked = await client.get(f"{url}/b")
        shown = await client.get(f"{url}/a")
    assert (masked.status_code, masked.text, masked.headers["x-masked"]) == (
        502,
        "b is hidden\n",
        "1",
    )
    assert len(b.requests) == 1  # it went upstream; its answer never came down
    assert (shown.status_code, shown.text) == (200, "hello from upstream")


async def test_a_response_body_held_over_the_limit_is_a_500(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    _gw, url, _a, _ = await gateway_with(
        nursery, start_gateway, [python("hold", "HoldsResponse")], filter_buffer_limit_kb=16
    )
    async with httpx.AsyncClient() as client:
        small = await client.get(f"{url}/x")
        big = await client.get(f"{url}/big")  # 100,000 bytes, held past 16 KiB
    assert (small.status_code, small.text) == (200, "hello from upstream")
    assert big.status_code == 500
    assert "filter_buffer_limit_kb" in big.text


async def test_request_trailers_go_through_the_trailers_hooks(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    gw, _url, a, _ = await gateway_with(nursery, start_gateway, [python("tr", "Trailers")])
    address = gw.listener_address("web")
    stream = await trio.open_tcp_stream(address.host, address.port)
    async with stream:
        await stream.send_all(
            b"POST /x HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n"
            b"te: trailers\r\n\r\n5\r\nhello\r\n0\r\nx-sent: 1\r\n\r\n"
        )
        received = b""
        with trio.fail_after(5):
            while b"hello from upstream" not in received:
                received += await stream.receive_some(65536)
    assert received.startswith(b"HTTP/1.1 200")
    assert a.requests[0]["body"] == b"hello"
    assert a.requests[0]["trailers"] == {"x-sent": "1", "x-checked": "yes"}
