"""gRPC through the gateway with real grpcio clients and servers (a ``protocol: http2``
cluster): unary, client, server (10,000 messages) and bidirectional streams with their
trailers, deadlines, retries on UNAVAILABLE, and an upstream killed mid-stream."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from typing import Any

import grpc
import pytest

from gateway.config import Address
from tests.conftest import StartGateway, simple_config
from tests.gateway.grpc_support import (
    call_error,
    channel,
    in_thread,
    method,
    start_server,
    unary,
)


def _http2_config(addresses: list[Address], **route: Any) -> dict[str, Any]:
    data = simple_config(
        {"api": addresses}, routes=[{"match": {"prefix": "/"}, "cluster": "api", **route}]
    )
    data["clusters"][0]["protocol"] = "http2"
    return data


@pytest.fixture
def server() -> Iterator[Address]:
    server, port = start_server(workers=16)
    yield Address("127.0.0.1", port)
    server.stop(None)


async def test_unary_calls_and_their_trailers(start_gateway: StartGateway, server: Address) -> None:
    gateway = await start_gateway(_http2_config([server]))
    with channel(gateway.listener_address("web")) as chan:

        def calls() -> list[bytes]:
            return [unary(chan)(b"hello %d" % i, timeout=10) for i in range(50)]

        assert await in_thread(calls) == [b"hello %d" % i for i in range(50)]
        error = await in_thread(lambda: call_error(lambda: unary(chan)(b"fail:9", timeout=10)))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION  # the server's trailers
    assert error.details() == "asked to fail"
    assert gateway.stats.cluster("api").upstream_rq_xx[2] >= 50


async def test_a_server_stream_of_10000_messages(
    start_gateway: StartGateway, server: Address
) -> None:
    gateway = await start_gateway(_http2_config([server]))
    with channel(gateway.listener_address("web")) as chan:
        stream = method(chan, "unary_stream", "ServerStream")
        got = await in_thread(lambda: list(stream(b"10000", timeout=60)))
    assert got == [b"%d" % i for i in range(10000)]


async def test_a_client_stream(start_gateway: StartGateway, server: Address) -> None:
    gateway = await start_gateway(_http2_config([server]))
    with channel(gateway.listener_address("web")) as chan:
        stream = method(chan, "stream_unary", "ClientStream")
        got = await in_thread(lambda: stream(iter([b"%d," % i for i in range(1000)]), timeout=30))
    assert got == b"".join(b"%d," % i for i in range(1000))


async def test_a_bidirectional_stream_in_lock_step(
    start_gateway: StartGateway, server: Address
) -> None:
    """Each message is sent only after the previous one's echo came back: nothing
    on the way may hold a stream until it ends."""
    gateway = await start_gateway(_http2_config([server]))
    with channel(gateway.listener_address("web")) as chan:
        bidi = method(chan, "stream_stream", "Bidi")

        def ping_pong() -> list[bytes]:
            turn = threading.Event()
            turn.set()
            done = False

            def requests() -> Iterator[bytes]:
                for i in range(200):
                    assert turn.wait(10), "an echo did not come back before the stream ended"
                    turn.clear()
                    yield b"ping %d" % i
                while not done:
                    turn.wait(0.05)

            got = []
            for reply in bidi(requests(), timeout=60):
                got.append(reply)
                turn.set()
                if len(got) == 200:
                    break
            done = True
            return got

        got = await in_thread(ping_pong)
    assert got == [b"ping %d" % i for i in range(200)]


async def test_a_deadline_passes_through(start_gateway: StartGateway, server: Address) -> None:
    gateway = await start_gateway(_http2_config([server]))
    with channel(gateway.listener_address("web")) as chan:
        error = await in_thread(lambda: call_error(lambda: unary(chan)(b"sleep:2", timeout=0.3)))
        assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert await in_thread(lambda: unary(chan)(b"after", timeout=10)) == b"after"


async def test_a_retry_on_unavailable(start_gateway: StartGateway) -> None:
    calls = []

    def flaky(request: bytes, context: grpc.ServicerContext) -> bytes:
        calls.append(request)
        if len(calls) % 2:
            context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
        return request

    handler = grpc.method_handlers_generic_handler(
        "test.Flaky",
        {
            "Call": grpc.unary_unary_rpc_method_handler(
                flaky, request_deserializer=bytes, response_serializer=bytes
            )
        },
    )
    server, port = start_server(handler)
    try:
        gateway = await start_gateway(
            _http2_config(
                [Address("127.0.0.1", port)],
                retry={"attempts": 2, "retry_on": ["unavailable"], "backoff": {"base": 0.001}},
            )
        )
        with channel(gateway.listener_address("web")) as chan:
            call = chan.unary_unary("/test.Flaky/Call")
            for i in range(5):
                message = b"%d" % i
                assert await in_thread(partial(call, message, timeout=10)) == message
        assert len(calls) == 10
        assert gateway.stats.cluster("api").upstream_rq_retry == 5
    finally:
        server.stop(None)


SERVE = """\
import sys
sys.path.insert(0, {root!r})
from tests.gateway.grpc_support import start_server
server, port = start_server()
print(port, flush=True)
server.wait_for_termination()
"""


def _start_upstream_process() -> subprocess.Popen[bytes]:
    """A grpcio server in a process of its own, to be killed with SIGKILL."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return subprocess.Popen([sys.executable, "-c", SERVE.format(root=root)], stdout=subprocess.PIPE)


async def test_an_upstream_killed_mid_stream(start_gateway: StartGateway) -> None:
    proc = _start_upstream_process()
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        gateway = await start_gateway(_http2_config([Address("127.0.0.1", port)]))
        with channel(gateway.listener_address("web")) as chan:
            stream = method(chan, "unary_stream", "ServerStream")

            def read_then_kill() -> tuple[int, grpc.RpcError]:
                got = 0
                try:
                    for _ in stream(b"100000000", timeout=30):
                        got += 1
                        if got == 1000:
                            os.kill(proc.pid, signal.SIGKILL)
                except grpc.RpcError as e:
                    return got, e
                raise AssertionError("the stream ended normally")

            got, error = await in_thread(read_then_kill)
            assert got >= 1000
            assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL)
            # the gateway is up: the next call is a gRPC reply of its own
            again = await in_thread(lambda: call_error(lambda: unary(chan)(b"x", timeout=10)))
            assert again.code() is grpc.StatusCode.UNAVAILABLE
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
