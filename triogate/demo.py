"""Built-in demo upstreams: small HTTP/1.1 servers that say who answered.

``triogate demo`` runs two of them behind a gateway; the tests use them as real
upstreams. Paths:

- ``/...``              200, JSON: upstream name, method, path, request headers and
                        the request body's length (the body is read, never kept)
- ``.../status/NNN``    that status
- ``.../delay/MS``      200 after MS milliseconds
- ``.../bytes/N``       N bytes of body, streamed in 64 KiB pieces (chunked)
- ``.../echo`` (POST)   the body back (chunked)

Any path with ``close=1`` in its query gets ``Connection: close``. Each response names
the upstream (``x-upstream``) and the connection that served it
(``x-upstream-connection``).
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import h11
import trio

from gateway.config import Address


class _Conn:
    _ids = 0

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.SERVER)
        _Conn._ids += 1
        #: which connection served a request, so tests can see reuse
        self.id = _Conn._ids

    async def send(self, event: Any) -> None:
        data = self.h11.send(event)
        if data:
            await self.stream.send_all(data)

    async def next_event(self) -> Any:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.h11.receive_data(await self.stream.receive_some(65536))


async def _respond(conn: _Conn, name: str, request: h11.Request) -> None:
    path = request.target.decode("latin-1")
    headers = [(b"x-upstream", name.encode()), (b"x-upstream-connection", b"%d" % conn.id)]
    if "close=1" in path:
        headers.append((b"connection", b"close"))
    body_size = 0
    body_chunks: list[bytes] = []
    echo = path.split("?")[0].endswith("/echo")
    while True:
        event = await conn.next_event()
        if isinstance(event, h11.EndOfMessage):
            break
        if isinstance(event, h11.Data):
            body_size += len(event.data)
            if echo:
                body_chunks.append(event.data)
    # the last two path segments pick a behaviour, so any route prefix can come before
    segments = path.split("?")[0].strip("/").split("/")
    verb, arg = (segments[-2], segments[-1]) if len(segments) >= 2 else ("", "")
    if verb == "status" and arg.isdigit():
        status = int(arg)
        body = f"{status} from {name}\n".encode()
        await conn.send(
            h11.Response(
                status_code=status, headers=[*headers, (b"content-length", b"%d" % len(body))]
            )
        )
        await conn.send(h11.Data(data=body))
    elif verb == "delay" and arg.isdigit():
        await trio.sleep(int(arg) / 1000)
        body = f"slept {arg} ms in {name}\n".encode()
        await conn.send(
            h11.Response(
                status_code=200, headers=[*headers, (b"content-length", b"%d" % len(body))]
            )
        )
        await conn.send(h11.Data(data=body))
    elif verb == "bytes" and arg.isdigit():
        remaining = int(arg)
        await conn.send(
            h11.Response(status_code=200, headers=[*headers, (b"transfer-encoding", b"chunked")])
        )
        piece = b"x" * 65536
        while remaining > 0:
            n = min(remaining, len(piece))
            await conn.send(h11.Data(data=piece[:n]))
            remaining -= n
    elif echo:
        await conn.send(
            h11.Response(status_code=200, headers=[*headers, (b"transfer-encoding", b"chunked")])
        )
        for piece in body_chunks:
            await conn.send(h11.Data(data=piece))
    else:
        info = {
            "upstream": name,
            "connection": conn.id,
            "method": request.method.decode(),
            "path": path,
            "body_bytes": body_size,
            "headers": {k.decode(): v.decode("latin-1") for k, v in request.headers},
        }
        body = (json.dumps(info, indent=1) + "\n").encode()
        await conn.send(
            h11.Response(
                status_code=200,
                headers=[
                    *headers,
                    (b"content-type", b"application/json"),
                    (b"content-length", b"%d" % len(body)),
                ],
            )
        )
        await conn.send(h11.Data(data=body))
    await conn.send(h11.EndOfMessage())


async def _serve_connection(stream: trio.SocketStream, *, name: str) -> None:
    conn = _Conn(stream)
    try:
        while True:
            event = await conn.next_event()
            if isinstance(event, h11.ConnectionClosed):
                return
            if not isinstance(event, h11.Request):
                return
            await _respond(conn, name, event)
            if conn.h11.our_state is h11.MUST_CLOSE:
                return
            conn.h11.start_next_cycle()
    except (h11.ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
        return
    finally:
        await stream.aclose()


LOOPBACK_ANY_PORT = Address("127.0.0.1", 0)


async def serve_demo_upstream(
    name: str,
    address: Address = LOOPBACK_ANY_PORT,
    *,
    task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve a demo upstream until cancelled; reports the bound address."""
    listeners = await trio.open_tcp_listeners(address.port, host=address.host)
    host, port = listeners[0].socket.getsockname()[:2]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, partial(_serve_connection, name=name), listeners)
        task_status.started(Address(host, port))


DEMO_CONFIG = """\
# The demo: two built-in upstreams behind one listener.
admin: {{address: 127.0.0.1:{admin_port}}}
listeners:
  - name: web
    address: 127.0.0.1:{port}
    routes:
      - match: {{prefix: /api}}
        cluster: api
      - match: {{prefix: /}}
        cluster: web
clusters:
  - name: api
    endpoints:
      - {{address: "{api1}"}}
      - {{address: "{api2}"}}
  - name: web
    endpoints: [{{address: "{web1}"}}]
"""
