"""A tiny, fast HTTP/1.1 keep-alive upstream for the benchmark when nginx is not installed.

Every request gets the same 13-byte answer, ``hello, world\\n``. The server is an asyncio
``Protocol`` over raw bytes with no HTTP library in the way: it finds the end of each
request head, skips a ``Content-Length`` body if there is one, and writes a canned
response, so that on one core it answers several times faster than a Python proxy can
forward and is not what the benchmark measures. It understands pipelining, keep-alive
and ``Connection: close``; chunked request bodies are refused with 501 and the connection
closed, since the benchmark never sends them.

Run: ``python bench/upstream.py --port 8080`` (``--port 0`` picks a free port and prints it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import signal

BODY = b"hello, world\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(BODY)
) + BODY
RESPONSE_CLOSE = RESPONSE.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
NOT_IMPLEMENTED = b"HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"

HEAD_END = b"\r\n\r\n"
MAX_HEAD = 64 * 1024
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:[^\r\n]*chunked", re.IGNORECASE)
_CONNECTION_CLOSE = re.compile(rb"\r\nconnection:[^\r\n]*close", re.IGNORECASE)
_CONNECTION_KEEP_ALIVE = re.compile(rb"\r\nconnection:[^\r\n]*keep-alive", re.IGNORECASE)


class HelloProtocol(asyncio.Protocol):
    """One connection: answers every complete request in the buffer with ``RESPONSE``."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._body_left = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        assert transport is not None
        buffer = self._skip_body(self._buffer + data if self._buffer else data)
        # The common case (one small GET per read) costs one find() and one write().
        replies: list[bytes] = []
        keep_alive = True
        while keep_alive and not self._body_left:
            end = buffer.find(HEAD_END)
            if end < 0:
                if len(buffer) > MAX_HEAD:
                    replies.append(BAD_REQUEST)
                    keep_alive = False
                break
            reply, keep_alive = self._answer(buffer[:end])
            replies.append(reply)
            buffer = self._skip_body(buffer[end + len(HEAD_END) :])
        self._buffer = buffer
        if replies:
            transport.write(b"".join(replies))
        if not keep_alive:
            transport.close()

    def _skip_body(self, buffer: bytes) -> bytes:
        """Drop what is left of the current request's body from the front of buffer."""
        if not self._body_left:
            return buffer
        skipped = min(self._body_left, len(buffer))
        self._body_left -= skipped
        return buffer[skipped:]

    def _answer(self, head: bytes) -> tuple[bytes, bool]:
        """Return the reply to one request head and whether the connection stays open."""
        if _CHUNKED.search(head):
            return NOT_IMPLEMENTED, False
        length = _CONTENT_LENGTH.search(head)
        if length is not None:
            self._body_left = int(length.group(1))
        request_line = head.split(b"\r\n", 1)[0]
        if request_line.endswith(b"HTTP/1.0"):
            keep_alive = _CONNECTION_KEEP_ALIVE.search(head) is not None
        else:
            keep_alive = _CONNECTION_CLOSE.search(head) is None
        return (RESPONSE if keep_alive else RESPONSE_CLOSE), keep_alive


async def serve_hello(host: str, port: int) -> None:
    """Serve ``HelloProtocol`` on host:port until cancelled or sent SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(HelloProtocol, host, port, backlog=1024, reuse_address=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    bound_port = server.sockets[0].getsockname()[1]
    print(f"upstream listening on {host}:{bound_port}", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_hello(args.host, args.port))


if __name__ == "__main__":
    main()
