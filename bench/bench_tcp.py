"""The TCP listener: throughput on loopback against haproxy in TCP mode, and how close the
``latency`` and ``bandwidth`` toxics come to their configured figures.

One run, everything on 127.0.0.1 (ports from binding port 0):

- an upstream in a thread of this process: each connection gets ``--megabytes`` MB
  (sent from one 1 MiB buffer with ``sendall``), or, on a connection whose first byte is
  ``e``, an echo of each piece;
- ``triogate run`` (a subprocess, ``--no-state``) with one listener per measurement: a
  plain one, one per latency (downstream) and one per bandwidth (downstream);
- ``haproxy`` (``nbthread 1``, ``mode tcp``) in front of the same upstream.

Throughput: one client (blocking socket, ``recv_into`` a 1 MiB buffer) reads the whole
download, through each proxy in turn and straight from the upstream; ``--parallel N``
also runs N such clients at once. MB = 10^6 bytes. Latency: round trips of one byte on
a connection through the latency listener, minus the same through the plain listener
(median of ``--samples``). Bandwidth: a download of 1.5 s of the rate, its bytes over
the time from connect to its last byte.

    .venv/bin/python bench/bench_tcp.py                   # about 30 s
    .venv/bin/python bench/bench_tcp.py --megabytes 2000 --parallel 4

Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from run_bench import free_port, wait_listening  # bench/ is the script's directory

LATENCIES = (50, 200, 500)
RATES = (100, 1000, 10000)
MIB = 1 << 20


class Upstream:
    """Sends ``size`` bytes to each connection, or echoes one whose first byte is ``e``."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = int(self.sock.getsockname()[1])
        self.payload = b"x" * MIB
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                first = conn.recv(1)
                if first == b"e":  # echo, piece by piece
                    while data := conn.recv(65536):
                        conn.sendall(data)
                    return
                size = int((first == b"s" and conn.recv(20).decode().strip()) or self.size)
                left = size
                view = memoryview(self.payload)
                while left > 0:
                    n = min(left, MIB)
                    conn.sendall(view[:n])
                    left -= n
            except OSError:
                pass


def download(port: int, size: int | None = None) -> tuple[int, float]:
    """Bytes read and seconds from connect to the last byte (``size``: ask for that many)."""
    buffer = bytearray(MIB)
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"g" if size is None else b"s" + str(size).ljust(20).encode())
        total = 0
        while n := sock.recv_into(buffer):
            total += n
            if size is not None and total >= size:
                break
    return total, time.perf_counter() - start


def throughput(port: int, parallel: int) -> float:
    """MB/s of ``parallel`` downloads at once."""
    results: list[tuple[int, float]] = []

    def one() -> None:
        results.append(download(port))

    threads = [threading.Thread(target=one) for _ in range(parallel)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    return sum(total for total, _ in results) / elapsed / 1e6


def round_trip(port: int, samples: int) -> float:
    """Median seconds of a one-byte round trip on one connection."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(b"e")
        times = []
        for _ in range(samples):
            start = time.perf_counter()
            sock.sendall(b"p")
            assert sock.recv(1) == b"p"
            times.append(time.perf_counter() - start)
            time.sleep(0.01)
    return statistics.median(times)


def triogate_config(upstream: int, ports: dict[str, int]) -> str:
    lines = [
        "admin: {address: 127.0.0.1:0}",
        "clusters:",
        f"  - {{name: up, endpoints: [{{address: 127.0.0.1:{upstream}}}]}}",
        "listeners:",
    ]
    for name, port in ports.items():
        lines.append(f"  - {{name: {name}, address: 127.0.0.1:{port}, protocol: tcp, cluster: up")
        if name.startswith("lat"):
            lines[-1] += (
                f", toxics: [{{name: t, type: latency, attributes: {{latency: {name[3:]}}}}}]"
            )
        elif name.startswith("bw"):
            lines[-1] += (
                f", toxics: [{{name: t, type: bandwidth, attributes: {{rate: {name[2:]}}}}}]"
            )
        lines[-1] += "}"
    return "\n".join(lines) + "\n"


@contextmanager
def running(command: list[str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port)
        yield process
    finally:
        process.terminate()
        process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=int, default=1000, help="MiB per download")
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--samples", type=int, default=9)
    args = parser.parse_args()
    upstream = Upstream(args.megabytes * MIB)
    ports = {"plain": free_port()}
    ports.update({f"lat{ms}": free_port() for ms in LATENCIES})
    ports.update({f"bw{rate}": free_port() for rate in RATES})
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "triogate.yaml"
        config.write_text(triogate_config(upstream.port, ports))
        haproxy_port = free_port()
        haproxy_cfg = Path(tmp) / "haproxy.cfg"
        haproxy_cfg.write_text(
            "global\n  nbthread 1\n  maxconn 1000\n"
            "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n"
            "  timeout server 60s\n"
            f"frontend f\n  bind 127.0.0.1:{haproxy_port}\n  default_backend b\n"
            f"backend b\n  server s1 127.0.0.1:{upstream.port}\n"
        )
        triogate = [str(Path(sys.executable).parent / "triogate"), "run", "--no-state", str(config)]
        figures: dict[str, float] = {}
        print(f"download {args.megabytes} MiB per connection; MB = 10^6 bytes")
        for parallel in (1, args.parallel):
            figures[f"direct/{parallel}"] = throughput(upstream.port, parallel)
        haproxy = shutil.which("haproxy")
        if haproxy is not None:
            with running([haproxy, "-db", "-f", str(haproxy_cfg)], haproxy_port):
                for parallel in (1, args.parallel):
                    figures[f"haproxy/{parallel}"] = throughput(haproxy_port, parallel)
        with running(triogate, ports["plain"]):
            for parallel in (1, args.parallel):
                figures[f"triogate/{parallel}"] = throughput(ports["plain"], parallel)
            for parallel in (1, args.parallel):
                row = (
                    f"  {parallel} connection(s): direct {figures[f'direct/{parallel}']:8.0f} MB/s"
                )
                if f"haproxy/{parallel}" in figures:
                    row += f"   haproxy {figures[f'haproxy/{parallel}']:7.0f} MB/s"
                row += f"   triogate {figures[f'triogate/{parallel}']:7.0f} MB/s"
                if f"haproxy/{parallel}" in figures:
                    ratio = figures[f"triogate/{parallel}"] / figures[f"haproxy/{parallel}"]
                    row += f"   triogate/haproxy {ratio:.2f}"
                print(row)
            base = round_trip(ports["plain"], args.samples)
            print(f"latency toxic (downstream), round trip minus {base * 1000:.2f} ms without:")
            for ms in LATENCIES:
                measured = (round_trip(ports[f"lat{ms}"], args.samples) - base) * 1000
                print(
                    f"  configured {ms:4d} ms   measured {measured:7.1f} ms   "
                    f"error {measured - ms:+6.1f} ms ({(measured - ms) / ms * 100:+.1f}%)"
                )
            print("bandwidth toxic (downstream), 1.5 s of the rate:")
            for rate in RATES:
                size = int(rate * 1000 * 1.5)
                total, elapsed = download(ports[f"bw{rate}"], size)
                measured = total / elapsed / 1000
                print(
                    f"  configured {rate:6d} KB/s   measured {measured:8.1f} KB/s   "
                    f"({(measured - rate) / rate * 100:+.1f}%, {total} B in {elapsed:.2f} s)"
                )
    os._exit(0)  # the upstream's threads


if __name__ == "__main__":
    main()
