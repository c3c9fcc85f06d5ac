"""Retries and outlier detection understand ``grpc-status``: a route's ``retry_on:
[unavailable]`` retries a call answered UNAVAILABLE in its headers (body held, though
gRPC's method is POST), and an endpoint answering gRPC errors in its trailers is
ejected by ``consecutive_5xx`` (UNAVAILABLE counts as a 503, as in Envoy).

The upstreams here are HTTP/1.1 servers speaking gRPC's shapes (a trailers-only
answer as a 200 head, trailers as chunked trailers), so that these run on the
gateway's HTTP/1.1 upstream path; the grpcio end-to-end tests cover HTTP/2 upstreams.
"""

from __future__ import annotations

from functools import partial

import h2.events
import h11
import httpx
import trio

from gateway.config import Address
from tests.conftest import H11Message, StartGateway, serve_h11_messages, simple_config, wait_until
from tests.gateway.test_http2_defence import exchange, raw_client

MESSAGE = b"\x00\x00\x00\x00\x02hi"


class GrpcShaped:
    """An HTTP/1.1 upstream answering each request with the next gRPC status of
    ``script`` (then OK), in its head (``"headers"``) or its trailers."""

    def __init__(self, script: list[int], where: str = "headers") -> None:
        self.script = script
        self.where = where
        self.bodies: list[bytes] = []

    async def serve(self, stream: trio.SocketStream) -> None:
        await serve_h11_messages(stream, self._respond)

    async def _respond(self, message: H11Message) -> list[h11.Event]:
        self.bodies.append(message.body)
        status = self.script.pop(0) if self.script else 0
        grpc = [("content-type", "application/grpc")]
        code = [("grpc-status", str(status)), ("grpc-message", "scripted")]
        if self.where == "headers" and status:
            head = h11.Response(status_code=200, headers=[*grpc, *code, ("content-length", "0")])
            return [head, h11.EndOfMessage()]
        head = h11.Response(status_code=200, headers=[*grpc, ("transfer-encoding", "chunked")])
        return [head, h11.Data(data=MESSAGE), h11.EndOfMessage(headers=code)]


async def _start(nursery: trio.Nursery, upstream: GrpcShaped) -> Address:
    listeners = await nursery.start(partial(trio.serve_tcp, upstream.serve, 0, host="127.0.0.1"))
    return Address("127.0.0.1", listeners[0].socket.getsockname()[1])


async def _call(web: Address) -> tuple[dict[bytes, bytes], dict[bytes, bytes]]:
    """One unary call by hand: (its response headers, its trailers)."""
    conn = raw_client()
    headers = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", b"/test.Echo/Unary"),
        (b":authority", b"h"),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
    ]
    conn.send_headers(1, headers)
    conn.send_data(1, MESSAGE, end_stream=True)
    async with await trio.open_tcp_stream(web.host, web.port) as stream:
        events = await exchange(stream, conn, h2.events.StreamEnded, 1)
    [response] = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
    trailers = [e for e in events if isinstance(e, h2.events.TrailersReceived)]
    return dict(response.headers), dict(trailers[0].headers) if trailers else {}


async def test_a_call_answered_unavailable_is_retried(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    upstream = GrpcShaped([14, 14])
    address = await _start(nursery, upstream)
    route = {
        "match": {"prefix": "/"},
        "cluster": "api",
        "retry": {"attempts": 2, "retry_on": ["unavailable"], "backoff": {"base": 0.001}},
    }
    gateway = await start_gateway(simple_config({"api": [address]}, routes=[route]))
    headers, trailers = await _call(gateway.listener_address("web"))
    assert headers[b":status"] == b"200"
    assert trailers[b"grpc-status"] == b"0"
    assert upstream.bodies == [MESSAGE] * 3  # the held body went with each try
    stats = gateway.stats.cluster("api")
    assert (stats.upstream_rq_retry, stats.upstream_rq_retry_success) == (2, 1)


async def test_a_status_not_named_is_not_retried_and_the_last_try_stands(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    upstream = GrpcShaped([13, 14, 14, 14])
    address = await _start(nursery, upstream)
    route = {
        "match": {"prefix": "/"},
        "cluster": "api",
        "retry": {"attempts": 1, "retry_on": ["unavailable"], "backoff": {"base": 0.001}},
    }
    gateway = await start_gateway(simple_config({"api": [address]}, routes=[route]))
    web = gateway.listener_address("web")
    headers, _ = await _call(web)
    assert headers[b"grpc-status"] == b"13"  # INTERNAL: not named
    headers, _ = await _call(web)
    assert headers[b"grpc-status"] == b"14"  # UNAVAILABLE twice: the second stands
    assert len(upstream.bodies) == 3
    assert gateway.stats.cluster("api").upstream_rq_retry == 1


async def test_grpc_errors_in_trailers_eject_an_endpoint(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    bad = GrpcShaped([14] * 100, where="trailers")
    good = GrpcShaped([])
    addresses = [await _start(nursery, bad), await _start(nursery, good)]
    data = simple_config({"api": addresses})
    data["clusters"][0]["outlier_detection"] = {
        "consecutive_5xx": 3,
        "consecutive_gateway_failure": 0,
        "interval": 60,
        "base_ejection_time": 30,
        "max_ejection_percent": 50,
    }
    gateway = await start_gateway(data, admin=True)
    web = gateway.listener_address("web")
    for _ in range(12):
        await _call(web)
    stats = gateway.stats.cluster("api")
    await wait_until(lambda: stats.outlier_detection_ejections_enforced_consecutive_5xx == 1)
    async with httpx.AsyncClient(base_url=f"http://{gateway.admin_address}") as admin:
        r = await admin.get("/clusters/api/health")
        ejected = [e["address"] for e in r.json()["endpoints"] if e["ejection"]["ejected"]]
    assert ejected == [str(addresses[0])]
    before = len(bad.bodies)
    for _ in range(10):
        _, trailers = await _call(web)
        assert trailers[b"grpc-status"] == b"0"
    assert len(bad.bodies) == before
