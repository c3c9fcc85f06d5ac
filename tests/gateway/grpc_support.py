"""gRPC test helpers: a generated-free service (bytes in, bytes out) for ``grpcio``
servers, and blocking client calls run in a thread from a Trio test.

The service ``test.Echo`` has one method of each kind:

    Unary         the request back
    ServerStream  ``int(request)`` messages ``b"0"``, ``b"1"``...
    ClientStream  the requests joined
    Bidi          each request back as it arrives
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any, TypeVar

import grpc
import trio

T = TypeVar("T")

SERVICE = "test.Echo"
#: grpcio must not go through a proxy from the environment, and nothing may wait long
CHANNEL_OPTIONS = [("grpc.enable_http_proxy", 0), ("grpc.enable_retries", 0)]


def _same(data: bytes) -> bytes:
    return data


def _unary(request: bytes, context: grpc.ServicerContext) -> bytes:
    if request.startswith(b"sleep:"):
        time.sleep(float(request[6:]))
    if request.startswith(b"fail:"):
        context.abort(grpc.StatusCode(_code(int(request[5:]))), "asked to fail")
    return request


def _code(number: int) -> tuple[int, str]:
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code.value  # type: ignore[no-any-return]
    raise ValueError(number)


def _server_stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    for i in range(int(request)):
        yield b"%d" % i


def _client_stream(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
    return b"".join(requests)


def _bidi(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
    yield from requests


def echo_handler() -> grpc.GenericRpcHandler:
    kw: dict[str, Any] = {"request_deserializer": _same, "response_serializer": _same}
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(_unary, **kw),
            "ServerStream": grpc.unary_stream_rpc_method_handler(_server_stream, **kw),
            "ClientStream": grpc.stream_unary_rpc_method_handler(_client_stream, **kw),
            "Bidi": grpc.stream_stream_rpc_method_handler(_bidi, **kw),
        },
    )


def start_server(
    *handlers: grpc.GenericRpcHandler, workers: int = 8, tls: tuple[str, str] | None = None
) -> tuple[grpc.Server, int]:
    """A started grpcio server on a free loopback port, with the echo service; over TLS
    with ``tls`` (certificate and key files)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    server.add_generic_rpc_handlers((echo_handler(), *handlers))
    if tls is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        cert, key = (Path(f).read_bytes() for f in tls)
        credentials = grpc.ssl_server_credentials([(key, cert)])
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return server, port


def channel(address: object) -> grpc.Channel:
    return grpc.insecure_channel(str(address), options=CHANNEL_OPTIONS)


def method(chan: grpc.Channel, kind: str, name: str) -> Any:
    factory = getattr(chan, kind)
    return factory(f"/{SERVICE}/{name}", request_serializer=_same, response_deserializer=_same)


def unary(chan: grpc.Channel) -> Any:
    return method(chan, "unary_unary", "Unary")


async def in_thread(fn: Callable[[], T]) -> T:
    """Run a blocking grpcio call without blocking the gateway's Trio loop."""
    return await trio.to_thread.run_sync(fn, abandon_on_cancel=True)


def call_error(fn: Callable[[], object]) -> grpc.RpcError:
    """The ``RpcError`` a call raises (an AssertionError if it succeeds)."""
    try:
        fn()
    except grpc.RpcError as e:
        return e
    raise AssertionError("the call succeeded")
