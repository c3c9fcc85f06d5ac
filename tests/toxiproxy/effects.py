"""Real traffic through a proxy, showing each toxic's effect (shared by the clients' tests)."""

from __future__ import annotations

import socket
import time

from tests.toxiproxy.conftest import connect, round_trip

#: latency toxics are measured against this much one-way delay (ms)
LATENCY_MS = 300
#: bandwidth: KB/s, and the bytes sent through it (0.5 s at that rate)
RATE_KBPS = 100
BANDWIDTH_BYTES = 50_000
#: limit_data: bytes let through
LIMIT_BYTES = 10


def latency_seconds(listen: str) -> float:
    got, took = round_trip(listen)
    assert got == b"ping"
    return took


def assert_latency(listen: str) -> float:
    took = latency_seconds(listen)
    assert LATENCY_MS / 1000 <= took < LATENCY_MS / 1000 + 1.0, took
    return took


def assert_no_latency(listen: str) -> None:
    assert latency_seconds(listen) < LATENCY_MS / 1000 / 2


def assert_bandwidth(listen: str) -> float:
    """Seconds ``BANDWIDTH_BYTES`` took to come back at ``RATE_KBPS``: about 0.5."""
    payload = bytes(range(256)) * (BANDWIDTH_BYTES // 256) + b"x" * (BANDWIDTH_BYTES % 256)
    got, took = round_trip(listen, payload)
    assert got == payload
    expected = BANDWIDTH_BYTES / (RATE_KBPS * 1000)
    assert expected * 0.7 <= took < expected * 3, took
    return took


def assert_reset(listen: str) -> None:
    """A reset_peer toxic downstream: the reply is dropped and the connection reset."""
    with connect(listen) as sock:
        sock.sendall(b"ping")
        try:
            data = sock.recv(100)
        except ConnectionResetError:
            return
        raise AssertionError(f"expected a RST, got {data!r}")


def assert_limited(listen: str) -> None:
    """A limit_data toxic downstream: ``LIMIT_BYTES`` come back, then EOF."""
    with connect(listen) as sock:
        sock.sendall(b"y" * 100)
        got = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                piece = sock.recv(1000)
            except ConnectionResetError:
                break
            if not piece:
                break
            got += piece
        assert got == b"y" * LIMIT_BYTES


def assert_refused(listen: str) -> None:
    host, _, port = listen.rpartition(":")
    with socket.socket() as sock:
        sock.settimeout(2)
        try:
            sock.connect((host, int(port)))
        except ConnectionRefusedError:
            return
    raise AssertionError(f"{listen} accepted a connection while disabled")
