"""One active health check (``gateway.cluster.health.check_endpoint``) against small
servers on loopback: HTTP status, refused, timeout, and TCP send/expect."""

from __future__ import annotations

import socket
import struct
from collections.abc import Awaitable, Callable

import pytest
import trio

from gateway.cluster.health import USER_AGENT, check_endpoint
from gateway.config import Address
from policies.health import HealthCheckConfig
from tests.conftest import ClosedAddress, StartCheckedUpstream

Handler = Callable[[trio.SocketStream], Awaitable[None]]


@pytest.fixture
def serve(nursery: trio.Nursery) -> Callable[[Handler], Awaitable[Address]]:
    """Serve ``handler`` on a loopback port; returns the address."""

    async def start(handler: Handler) -> Address:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        nursery.start_soon(trio.serve_listeners, handler, listeners)
        return Address("127.0.0.1", listeners[0].socket.getsockname()[1])

    return start


async def test_http_check_passes_on_an_expected_status(
    start_checked_upstream: StartCheckedUpstream,
) -> None:
    upstream = await start_checked_upstream("u1")
    outcome = await check_endpoint(upstream.address, HealthCheckConfig(), "api")
    assert (outcome.passed, outcome.detail) == (True, "status 200")
    # Host is the cluster's name unless ``host`` is set
    await check_endpoint(upstream.address, HealthCheckConfig(host="health.example"), "api")
    assert upstream.checks == ["api", "health.example"]


async def test_http_check_fails_on_another_status(
    start_checked_upstream: StartCheckedUpstream,
) -> None:
    upstream = await start_checked_upstream("u1")
    upstream.sick = True
    outcome = await check_endpoint(upstream.address, HealthCheckConfig(), "api")
    assert (outcome.passed, outcome.detail) == (False, "status 503")
    # a 503 passes when the config expects it
    expecting = HealthCheckConfig(expected_statuses=((500, 503),))
    assert (await check_endpoint(upstream.address, expecting, "api")).passed


async def test_http_check_sends_a_closing_get(
    serve: Callable[[Handler], Awaitable[Address]],
) -> None:
    heads: list[bytes] = []

    async def handler(stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some(4096)
        heads.append(data)
        await stream.send_all(b"HTTP/1.1 204 No Content\r\n\r\n")
        await stream.aclose()

    address = await serve(handler)
    outcome = await check_endpoint(address, HealthCheckConfig(path="/status?x=1"), "api")
    assert outcome.passed and outcome.detail == "status 204"
    [head] = heads
    lines = head.decode().split("\r\n")
    assert lines[0] == "GET /status?x=1 HTTP/1.1"
    assert {"Host: api", "Connection: close", f"User-Agent: {USER_AGENT}"} <= set(lines)


async def test_a_refused_connect_fails(closed_address: ClosedAddress) -> None:
    for config in (HealthCheckConfig(), HealthCheckConfig(type="tcp")):
        outcome = await check_endpoint(closed_address(), config, "api")
        assert (outcome.passed, outcome.detail) == (False, "connect refused")


async def test_a_check_without_an_answer_times_out(
    serve: Callable[[Handler], Awaitable[Address]],
) -> None:
    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    address = await serve(silent)
    config = HealthCheckConfig(timeout=0.2)
    with trio.fail_after(5):
        outcome = await check_endpoint(address, config, "api")
    assert (outcome.passed, outcome.detail) == (False, "timeout")
    tcp = HealthCheckConfig(type="tcp", expect="PONG", timeout=0.2)
    assert (await check_endpoint(address, tcp, "api")).detail == "timeout"


async def test_an_http_check_closed_before_a_response_fails(
    serve: Callable[[Handler], Awaitable[Address]],
) -> None:
    async def rude(stream: trio.SocketStream) -> None:
        await stream.receive_some(4096)
        await stream.aclose()

    outcome = await check_endpoint(await serve(rude), HealthCheckConfig(), "api")
    assert (outcome.passed, outcome.detail) == (False, "closed before a response")


async def test_tcp_check_sends_and_expects_bytes(
    serve: Callable[[Handler], Awaitable[Address]],
) -> None:
    async def pong(stream: trio.SocketStream) -> None:
        data = b""
        while b"PING" not in data:
            data += await stream.receive_some(4096)
        # the expected bytes arrive in pieces, after a banner
        for piece in (b"hello P", b"ON", b"G\n"):
            await stream.send_all(piece)
        await stream.aclose()

    address = await serve(pong)
    config = HealthCheckConfig(type="tcp", send="hex:50 49 4e 47", expect="PONG")
    outcome = await check_endpoint(address, config, "api")
    assert (outcome.passed, outcome.detail) == (True, "expected bytes received")
    wrong = HealthCheckConfig(type="tcp", send="PING", expect="PANG")
    outcome = await check_endpoint(address, wrong, "api")
    assert (outcome.passed, outcome.detail) == (False, "closed before the expected bytes")


async def test_tcp_check_without_expect_passes_on_connect(
    serve: Callable[[Handler], Awaitable[Address]],
) -> None:
    async def quiet(stream: trio.SocketStream) -> None:
        await stream.aclose()

    outcome = await check_endpoint(await serve(quiet), HealthCheckConfig(type="tcp"), "api")
    assert (outcome.passed, outcome.detail) == (True, "connected")


async def test_a_reset_connection_fails(serve: Callable[[Handler], Awaitable[Address]]) -> None:
    async def reset(stream: trio.SocketStream) -> None:
        await stream.receive_some(4096)
        # linger 0: close sends a reset instead of a FIN
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        stream.socket.close()

    for config in (HealthCheckConfig(), HealthCheckConfig(type="tcp", send="x", expect="y")):
        outcome = await check_endpoint(await serve(reset), config, "api")
        assert (outcome.passed, outcome.detail) == (False, "connection reset")


async def test_a_malformed_response_fails(serve: Callable[[Handler], Awaitable[Address]]) -> None:
    async def garbage(stream: trio.SocketStream) -> None:
        await stream.receive_some(4096)
        await stream.send_all(b"SMTP ready\r\n\r\n")
        await trio.sleep_forever()

    outcome = await check_endpoint(await serve(garbage), HealthCheckConfig(), "api")
    assert not outcome.passed and outcome.detail.startswith("malformed response")
