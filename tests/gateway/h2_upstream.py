"""A real HTTP/2 upstream for the tests: hypercorn on the test's Trio loop, serving an
ASGI app that records each request (its HTTP version, scheme and client port: one port
per connection) and answers as the request's path asks."""

from __future__ import annotations

from typing import Any

import attrs
import h2.config
import h2.connection
import h2.events
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from gateway.config import Address

Scope = dict[str, Any]


@attrs.define(eq=False)
class H2Upstream:
    """What the app saw, and the knobs a test turns.

    Paths: ``/hold`` waits for ``release`` before answering; ``/big/N`` answers N bytes
    in 64 KiB pieces (``sent`` counts those the app handed to hypercorn); anything else
    echoes the request body after ``ok ``.
    """

    address: Address = attrs.field(factory=lambda: Address("127.0.0.1", 0))
    #: (http_version, scheme, client port, path), one per request
    seen: list[tuple[str, str, int, str]] = attrs.Factory(list)
    release: trio.Event = attrs.Factory(trio.Event)
    holding: int = 0
    sent: int = 0
    #: requests whose client went away before the response ended (``http.disconnect``)
    disconnected: int = 0

    @property
    def connections(self) -> set[int]:
        return {port for _, _, port, _ in self.seen}

    async def _watch(self, receive: Any, scope: trio.CancelScope) -> None:
        """Count the client going away mid-response (ASGI's ``http.disconnect``)."""
        if (await receive())["type"] == "http.disconnect":
            self.disconnected += 1
            scope.cancel()

    async def app(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path: str = scope["path"]
        self.seen.append((scope["http_version"], scope["scheme"], scope["client"][1], path))
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [(b"content-type", b"text/plain")]
        if path == "/hold":
            self.holding += 1
            await self.release.wait()
        if path.startswith("/big/"):
            size = int(path.rsplit("/", 1)[1])
            headers.append((b"content-length", b"%d" % size))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch, receive, nursery.cancel_scope)
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                piece = b"x" * 65536
                while self.sent < size:
                    chunk = piece[: size - self.sent]
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    self.sent += len(chunk)
                await send({"type": "http.response.body", "body": b""})
                nursery.cancel_scope.cancel()
            return
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok " + body})


async def serve_h2_upstream(
    upstream: H2Upstream,
    *,
    certfile: str | None = None,
    keyfile: str | None = None,
    task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``upstream`` on a loopback port (HTTP/2 by prior knowledge or, with a
    certificate, over TLS by ALPN; HTTP/1.1 too) until cancelled."""
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    if certfile is not None:
        config.certfile, config.keyfile = certfile, keyfile
    async with trio.open_nursery() as nursery:
        bound: list[str] = await nursery.start(serve, upstream.app, config)
        upstream.address = Address("127.0.0.1", int(bound[0].rsplit(":", 1)[1]))
        task_status.started(upstream.address)


@attrs.define(eq=False)
class RawH2Upstream:
    """An HTTP/2 server on the ``h2`` state machine, for what hypercorn cannot show: it
    sends a ``/big/N`` response only as the client's windows allow (``sent`` counts what
    went), records the streams the client reset, and can refuse streams unprocessed.

    ``goaway_after``: after answering that many requests on a connection, the next
    request gets ``GOAWAY`` naming the last one answered (it is not processed).
    """

    address: Address = attrs.field(factory=lambda: Address("127.0.0.1", 0))
    sent: int = 0
    resets: int = 0
    answered: int = 0
    connections: int = 0
    goaway_after: int | None = None

    async def serve(self, task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        self.address = Address("127.0.0.1", port)
        task_status.started(self.address)
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        conn.initiate_connection()
        await stream.send_all(conn.data_to_send())
        answered = 0
        pending: dict[int, int] = {}  # stream id -> bytes still to send
        async with stream:
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    return
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        headers = dict(event.headers or ())
                        stream_id = event.stream_id
                        if self.goaway_after is not None and answered >= self.goaway_after:
                            conn.close_connection(last_stream_id=stream_id - 2)
                            continue
                        answered += 1
                        self.answered += 1
                        path = headers[b":path"]
                        size = int(path.rsplit(b"/", 1)[1]) if path.startswith(b"/big/") else 2
                        conn.send_headers(
                            stream_id, [(b":status", b"200"), (b"content-length", b"%d" % size)]
                        )
                        pending[stream_id] = size
                    elif isinstance(event, h2.events.StreamReset):
                        self.resets += 1
                        pending.pop(event.stream_id or 0, None)
                    elif isinstance(event, h2.events.DataReceived):
                        conn.acknowledge_received_data(
                            event.flow_controlled_length or 0, event.stream_id or 0
                        )
                for stream_id, left in list(pending.items()):
                    window = min(conn.local_flow_control_window(stream_id), left, 16384)
                    while window > 0:
                        conn.send_data(stream_id, b"x" * window if left > 2 else b"ok"[:window])
                        self.sent += window
                        left -= window
                        window = min(conn.local_flow_control_window(stream_id), left, 16384)
                    if left:
                        pending[stream_id] = left
                    else:
                        conn.end_stream(stream_id)
                        del pending[stream_id]
                await stream.send_all(conn.data_to_send())
