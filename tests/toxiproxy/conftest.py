"""A real ``triogate toxiproxy`` process and a TCP echo upstream, for the clients' tests."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import attrs
import httpx
import pytest

HERE = Path(__file__).parent
#: seconds ``triogate toxiproxy`` may take to say where it accepts (it takes under one)
STARTUP_LIMIT = 20.0


@attrs.frozen
class ToxiproxyServer:
    """A running ``triogate toxiproxy``: its API's host and port."""

    host: str
    port: int
    process: subprocess.Popen[str]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def start_toxiproxy(*args: str) -> ToxiproxyServer:
    """``triogate toxiproxy --port 0 ARGS``, once it answers; its port read from its output."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "triogate.cli",
            "toxiproxy",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()

    def read(stdout: IO[str]) -> None:
        for line in stdout:  # read to the end, so that it never blocks on a full pipe
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, args=(process.stdout,), daemon=True).start()
    seen = []
    deadline = time.monotonic() + STARTUP_LIMIT
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        found = re.search(r"Toxiproxy API: http://127\.0\.0\.1:(\d+)/", line)
        if found:
            return ToxiproxyServer("127.0.0.1", int(found.group(1)), process)
    process.kill()
    process.wait()
    process.stdout.close()
    raise AssertionError("triogate toxiproxy did not start:\n" + "".join(seen))


def stop(server: ToxiproxyServer) -> None:
    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
    if server.process.stdout is not None:
        server.process.stdout.close()


@pytest.fixture(scope="module")
def toxiproxy() -> Iterator[ToxiproxyServer]:
    server = start_toxiproxy()
    yield server
    stop(server)


@pytest.fixture
def api(toxiproxy: ToxiproxyServer) -> Iterator[httpx.Client]:
    """A client of the API; every proxy is deleted after the test."""
    with httpx.Client(base_url=toxiproxy.url, timeout=10) as client:
        yield client
        for name in client.get("/proxies").json():
            client.delete(f"/proxies/{name}")


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        try:
            while data := sock.recv(65536):
                sock.sendall(data)
        except OSError:
            pass


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture(scope="module")
def echo() -> Iterator[str]:
    """A TCP echo upstream; its ``host:port``."""
    server = _Server(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def connect(listen: str, timeout: float = 5.0) -> socket.socket:
    host, _, port = listen.rpartition(":")
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def round_trip(listen: str, payload: bytes = b"ping") -> tuple[bytes, float]:
    """Send ``payload`` through the proxy at ``listen``; the echo and the seconds it took."""
    with connect(listen) as sock:
        started = time.perf_counter()
        sock.sendall(payload)
        got = b""
        while len(got) < len(payload):
            try:
                piece = sock.recv(65536)
            except ConnectionResetError:
                break  # closed while "ping" was unread: the kernel sends a RST for a FIN
            if not piece:
                break
            got += piece
        return got, time.perf_counter() - started


def wait_until(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")
