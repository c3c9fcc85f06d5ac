"""Local replies to gRPC calls are gRPC replies (HTTP 200, trailers-only, ``grpc-status``
by Envoy's mapping), seen by a real ``grpcio`` client through the gateway."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import grpc
import h2.events
import trio

from gateway.config import Address
from tests.conftest import StartGateway, simple_config, wait_until
from tests.gateway.grpc_support import call_error, channel, in_thread, unary
from tests.gateway.test_http2_defence import exchange, raw_client


async def test_no_route_is_unimplemented(
    start_gateway: StartGateway, closed_address: Callable[[], Address]
) -> None:
    data = simple_config(
        {"api": [closed_address()]}, routes=[{"match": {"prefix": "/other"}, "cluster": "api"}]
    )
    gateway = await start_gateway(data)
    with channel(gateway.listener_address("web")) as chan:
        error = await in_thread(lambda: call_error(lambda: unary(chan)(b"x", timeout=10)))
    assert error.code() is grpc.StatusCode.UNIMPLEMENTED
    assert error.details() == "no route for /test.Echo/Unary"
    assert gateway.stats.listener("web").downstream_rq_xx[2] == 1  # the client got a 200


async def test_an_upstream_down_is_unavailable(
    start_gateway: StartGateway, closed_address: Callable[[], Address]
) -> None:
    gateway = await start_gateway(simple_config({"api": [closed_address()]}))
    with channel(gateway.listener_address("web")) as chan:
        error = await in_thread(lambda: call_error(lambda: unary(chan)(b"x", timeout=10)))
    assert error.code() is grpc.StatusCode.UNAVAILABLE


async def test_an_injected_abort_gives_its_grpc_status(
    start_gateway: StartGateway, closed_address: Callable[[], Address]
) -> None:
    data = simple_config({"api": [closed_address()]})
    data["faults"] = [
        {"name": "down", "abort": {"grpc_status": 14}},
    ]
    gateway = await start_gateway(data)
    with channel(gateway.listener_address("web")) as chan:
        error = await in_thread(lambda: call_error(lambda: unary(chan)(b"x", timeout=10)))
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    assert error.details() == "fault filter abort"
    assert gateway.stats.listener("web").fault_aborts_injected == 1


async def test_an_http_status_abort_is_mapped_and_other_requests_keep_http(
    start_gateway: StartGateway, closed_address: Callable[[], Address]
) -> None:
    data = simple_config({"api": [closed_address()]})
    data["faults"] = [{"name": "nope", "abort": {"status": 403}}]
    gateway = await start_gateway(data)
    web = gateway.listener_address("web")
    with channel(web) as chan:
        error = await in_thread(lambda: call_error(lambda: unary(chan)(b"x", timeout=10)))
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    # an HTTP/2 request that is not gRPC gets the HTTP reply
    conn = raw_client()
    stream = await trio.open_tcp_stream(web.host, web.port)
    conn.send_headers(
        1,
        [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"h")],
        end_stream=True,
    )
    async with stream:
        events = await exchange(stream, conn, h2.events.StreamEnded, 1)
    [response] = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
    assert dict(response.headers)[b":status"] == b"403"


async def _silent_upstream(nursery: trio.Nursery) -> Address:
    """An upstream that takes connections and never answers."""

    async def hold(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    listeners = await nursery.start(partial(trio.serve_tcp, hold, 0, host="127.0.0.1"))
    return Address("127.0.0.1", listeners[0].socket.getsockname()[1])


def _grpc_request(path: bytes, timeout: bytes | None) -> list[tuple[bytes, bytes]]:
    headers = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", path),
        (b":authority", b"h"),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
    ]
    if timeout is not None:
        headers.append((b"grpc-timeout", timeout))
    return headers


async def _call_raw(
    web: Address, grpc_timeout: bytes | None
) -> tuple[dict[bytes, bytes], bool, float]:
    """One gRPC call by hand: (its one header block, whether it ended the stream, seconds)."""
    conn = raw_client()
    stream = await trio.open_tcp_stream(web.host, web.port)
    conn.send_headers(1, _grpc_request(b"/test.Echo/Unary", grpc_timeout))
    conn.send_data(1, b"\x00\x00\x00\x00\x01x", end_stream=True)
    start = trio.current_time()
    events = await exchange(stream, conn, h2.events.StreamEnded, 1)
    took = trio.current_time() - start
    [response] = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
    ended = response.stream_ended is not None  # trailers-only: one HEADERS ends the stream
    await stream.aclose()
    return dict(response.headers), ended, took


async def test_grpc_timeout_bounds_the_call_as_deadline_exceeded(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    upstream = await _silent_upstream(nursery)
    data = simple_config(
        {"api": [upstream]}, routes=[{"match": {"prefix": "/"}, "cluster": "api", "timeout": 30}]
    )
    gateway = await start_gateway(data)
    web = gateway.listener_address("web")
    headers, ended, took = await _call_raw(web, b"300m")
    assert ended
    assert headers[b":status"] == b"200"
    assert headers[b"content-type"] == b"application/grpc"
    assert headers[b"grpc-status"] == b"4"  # DEADLINE_EXCEEDED
    assert headers[b"grpc-message"] == b"upstream request timed out"
    assert 0.25 < took < 3


async def test_the_route_timeout_wins_when_smaller_and_a_bad_header_is_ignored(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    upstream = await _silent_upstream(nursery)
    data = simple_config(
        {"api": [upstream]}, routes=[{"match": {"prefix": "/"}, "cluster": "api", "timeout": 0.3}]
    )
    gateway = await start_gateway(data)
    web = gateway.listener_address("web")
    headers, _, took = await _call_raw(web, b"20S")
    assert headers[b"grpc-status"] == b"4"
    assert took < 3
    headers, _, took = await _call_raw(web, b"1x")  # malformed: the route timeout alone
    assert headers[b"grpc-status"] == b"4"
    assert 0.25 < took < 3


async def test_a_client_deadline_through_grpcio(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    upstream = await _silent_upstream(nursery)
    gateway = await start_gateway(simple_config({"api": [upstream]}))
    with channel(gateway.listener_address("web")) as chan:
        error = await in_thread(lambda: call_error(lambda: unary(chan)(b"x", timeout=0.5)))
    assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    web_stats = gateway.stats.listener("web")
    # the gateway ended the call too (its own reply, or the client's reset)
    await wait_until(lambda: web_stats.downstream_rq_xx[2] + web_stats.downstream_rq_xx[0] >= 1)


async def test_an_overflow_is_unavailable_with_envoys_header(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    upstream = await _silent_upstream(nursery)
    data = simple_config({"api": [upstream]})
    data["clusters"][0]["circuit_breakers"] = {"max_requests": 1}
    gateway = await start_gateway(data)
    web = gateway.listener_address("web")
    conn = raw_client()
    async with await trio.open_tcp_stream(web.host, web.port) as stream:
        conn.send_headers(1, _grpc_request(b"/test.Echo/Unary", None))  # held upstream
        await stream.send_all(conn.data_to_send())
        await wait_until(lambda: gateway.stats.cluster("api").rq_in_flight >= 1)
        conn.send_headers(3, _grpc_request(b"/test.Echo/Unary", None), end_stream=True)
        events = await exchange(stream, conn, h2.events.StreamEnded, 3)
    [response] = [
        e for e in events if isinstance(e, h2.events.ResponseReceived) and e.stream_id == 3
    ]
    headers = dict(response.headers)
    assert headers[b"grpc-status"] == b"14"
    assert headers[b"x-envoy-overloaded"] == b"true"
    assert gateway.stats.cluster("api").upstream_rq_pending_overflow == 1
