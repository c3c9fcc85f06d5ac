"""A test upstream that runs as a real process, for tests that kill it with SIGKILL.

HTTP/1.1 with keep-alive over asyncio streams, the standard library only, so that a
restart takes a few tens of milliseconds. Each connection's requests are answered in
order; a request body (``Content-Length``) is read and dropped.

    GET /healthz        200, or 503 while ``sick``; counted in ``checks``
    GET /_upstream      this process's counts and settings as JSON; counted nowhere.
                        Query parameters change settings first: ``delay``,
                        ``fail_rate``, ``fail_status``, ``sick`` (0 or 1)
    anything else       after ``delay`` seconds, ``fail_status`` for a ``fail_rate``
                        share of the requests and 200 for the rest, with an
                        ``x-upstream: NAME`` header and the body ``NAME`` and a newline

Failures are spread evenly, not drawn at random: request ``n`` (from 0) fails when
``floor((n + 1) * rate) > floor(n * rate)``, so a rate of 0.5 fails every other one
and the share is exact after any count of requests.

The counts (``received``: heads read; ``served``: answers written) and the wall-clock
times (``listening_at``, ``first_served_at``) are those of this process only: a
restart starts from zero.

Run: ``python tests/upstream_process.py --name u1 [--port 0] [--delay S]
[--fail-rate R] [--fail-status N] [--sick]``. Once listening it prints one line,
``upstream NAME listening on HOST:PORT``, and nothing after. ``--port`` given again
after a kill takes the same port (``SO_REUSEADDR``: the dead process's connections in
TIME_WAIT do not hold it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from http import HTTPStatus
from urllib.parse import parse_qsl, urlsplit

HEAD_END = b"\r\n\r\n"
MAX_HEAD = 64 * 1024


class Upstream:
    """The settings and counts of one upstream process."""

    def __init__(
        self, name: str, delay: float, fail_rate: float, fail_status: int, sick: bool
    ) -> None:
        self.name = name
        self.delay = delay
        self.fail_rate = fail_rate
        self.fail_status = fail_status
        self.sick = sick
        self.received = 0
        self.served = 0
        self.failed = 0
        self.checks = 0
        self.listening_at = 0.0
        self.first_served_at: float | None = None
        self._decided = 0

    def view(self) -> dict[str, object]:
        return {
            "name": self.name,
            "received": self.received,
            "served": self.served,
            "failed": self.failed,
            "checks": self.checks,
            "listening_at": self.listening_at,
            "first_served_at": self.first_served_at,
            "delay": self.delay,
            "fail_rate": self.fail_rate,
            "fail_status": self.fail_status,
            "sick": self.sick,
        }

    def change(self, query: str) -> None:
        for key, value in parse_qsl(query):
            if key == "delay":
                self.delay = float(value)
            elif key == "fail_rate":
                self.fail_rate = float(value)
            elif key == "fail_status":
                self.fail_status = int(value)
            elif key == "sick":
                self.sick = value == "1"

    def next_status(self) -> int:
        """200, or ``fail_status`` for the evenly spread ``fail_rate`` share."""
        n = self._decided
        self._decided += 1
        if math.floor((n + 1) * self.fail_rate) > math.floor(n * self.fail_rate):
            return self.fail_status
        return 200

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one connection until the peer closes it or sends something unreadable."""
        try:
            while True:
                try:
                    head = await reader.readuntil(HEAD_END)
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                keep_alive = await self._answer(head, reader, writer)
                await writer.drain()
                if not keep_alive:
                    return
        except ConnectionError:
            return
        finally:
            writer.close()

    async def _answer(
        self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request whose head is ``head``; whether the connection stays open."""
        request_line, *lines = head[: -len(HEAD_END)].decode("latin-1").split("\r\n")
        _method, target, version = request_line.split(" ", 2)
        headers = {}
        for line in lines:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip().lower()
        length = int(headers.get("content-length", "0"))
        if length:
            await reader.readexactly(length)
        connection = headers.get("connection", "")
        keep_alive = "close" not in connection and (
            version == "HTTP/1.1" or "keep-alive" in connection
        )
        path = urlsplit(target)
        extra: list[tuple[str, str]] = []
        if path.path == "/_upstream":
            self.change(path.query)
            status, body = 200, json.dumps(self.view()).encode()
            extra.append(("content-type", "application/json"))
        elif path.path == "/healthz":
            self.checks += 1
            status, body = (503 if self.sick else 200), b"ok\n"
        else:
            self.received += 1
            status = self.next_status()
            if self.delay:
                await asyncio.sleep(self.delay)
            body = f"{self.name}\n".encode()
            extra.append(("x-upstream", self.name))
            self.served += 1
            if status >= 500:
                self.failed += 1
            if self.first_served_at is None:
                self.first_served_at = time.time()
        lines_out = [
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
            f"content-length: {len(body)}",
        ]
        lines_out += [f"{k}: {v}" for k, v in extra]
        if not keep_alive:
            lines_out.append("connection: close")
        writer.write(("\r\n".join(lines_out) + "\r\n\r\n").encode() + body)
        return keep_alive


async def run(args: argparse.Namespace) -> None:
    upstream = Upstream(args.name, args.delay, args.fail_rate, args.fail_status, args.sick)
    server = await asyncio.start_server(
        upstream.serve, args.host, args.port, reuse_address=True, backlog=1024, limit=MAX_HEAD
    )
    host, port = server.sockets[0].getsockname()[:2]
    upstream.listening_at = time.time()
    print(f"upstream {args.name} listening on {host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--fail-rate", type=float, default=0.0, help="share answered 5xx")
    parser.add_argument("--fail-status", type=int, default=500)
    parser.add_argument("--sick", action="store_true", help="/healthz answers 503")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
