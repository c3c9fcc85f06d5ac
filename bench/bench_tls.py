"""TLS: handshakes per second on one core, full and resumed, and the CPU that TLS adds to
a proxied request, through triogate and through nginx in the same run.

One run, everything on 127.0.0.1 (ports from binding port 0), certificates from trustme
(ECDSA P-256, the chain one CA deep):

- an upstream (nginx ``return 200``, else ``bench/upstream.py``) on the client core;
- ``triogate run --no-state`` pinned with ``taskset`` to ``--core`` (default 0), with a
  TLS listener and a cleartext one to the same cluster; then ``nginx`` (one worker,
  tickets on) pinned to the same core with the same two listeners. Never both at once.
- clients on the other core (``--client-core``): ``--clients`` ``openssl s_time``
  processes in parallel for the handshakes, ``wrk`` (``-t1 -c50``) for requests.

Handshakes: TLS 1.3 full (``-new``), TLS 1.2 full, TLS 1.2 resumed (``-reuse``: a
ticket), and TLS 1.3 resumed (``-reuse -www /``: a TLS 1.3 ticket arrives after the
handshake, so the client must read; each connection then also carries one request,
as does the ``-new -www /`` row it is compared with). On a two-core machine the clients
(as dear per handshake as the server) saturate their core before the server does, so
the figure that counts is the server's CPU per handshake (``/proc/PID/stat``, user +
system, over the run): ``per core/s`` = handshakes / server CPU seconds, the rate one
saturated core would give. ``achieved/s`` is what the clients got.

Requests: wrk over 50 keep-alive connections, HTTPS then HTTP, for ``--seconds``; the
server's CPU microseconds per request, and HTTPS over HTTP.

    .venv/bin/python bench/bench_tls.py                  # about 90 s
    .venv/bin/python bench/bench_tls.py --seconds 10 --clients 8

Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from run_bench import (
    free_port,
    wait_listening,
    write_certificate,
)  # bench/ is the script's directory

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")

#: (label, s_time arguments)
HANDSHAKES = (
    ("TLS 1.3 full", ["-new"]),
    ("TLS 1.2 full", ["-new", "-tls1_2"]),
    ("TLS 1.2 resumed (ticket)", ["-reuse", "-tls1_2"]),
    ("TLS 1.3 full + 1 request", ["-new", "-www", "/"]),
    ("TLS 1.3 resumed + 1 request", ["-reuse", "-www", "/"]),
)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children so far (nginx: its worker's too)."""
    total = 0.0
    for p in [pid, *children(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


@contextmanager
def running(command: list[str], *ports: int) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for port in ports:
            wait_listening(port)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def handshakes(
    port: int, server: int, args: list[str], clients: int, seconds: int, core: str
) -> tuple[float, float]:
    """(achieved handshakes/s, server CPU seconds per handshake) over ``clients`` s_time."""
    before = cpu_seconds(server)
    start = time.monotonic()
    command = ["taskset", "-c", core, "openssl", "s_time", "-connect", f"127.0.0.1:{port}"]
    procs = [
        subprocess.Popen(
            [*command, *args, "-time", str(seconds)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(clients)
    ]
    count = 0
    for proc in procs:
        out = proc.communicate()[0].decode()
        found = re.search(r"(\d+) connections in [\d.]+ real seconds", out)
        count += int(found.group(1)) if found else 0
    elapsed = time.monotonic() - start
    cpu = cpu_seconds(server) - before
    return count / elapsed, cpu / max(count, 1)


def requests(url: str, server: int, seconds: int, core: str) -> tuple[float, float]:
    """(requests/s, server CPU microseconds per request) with wrk -t1 -c50."""
    before = cpu_seconds(server)
    out = subprocess.run(
        ["taskset", "-c", core, "wrk", "-t1", "-c50", f"-d{seconds}s", url],
        capture_output=True,
        check=True,
    ).stdout.decode()
    cpu = cpu_seconds(server) - before
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return rate, cpu / total * 1e6


def triogate_config(tmp: Path, upstream: int, tls_port: int, plain_port: int) -> Path:
    path = tmp / "triogate.yaml"
    path.write_text(
        f"admin: {{address: 127.0.0.1:{free_port()}}}\n"
        "listeners:\n"
        f"  - name: tls\n    address: 127.0.0.1:{tls_port}\n"
        "    routes: [{match: {prefix: /}, cluster: up}]\n"
        f"    tls: {{certificates: [{{cert: {tmp}/cert.pem, key: {tmp}/key.pem}}]}}\n"
        f"  - name: plain\n    address: 127.0.0.1:{plain_port}\n"
        "    routes: [{match: {prefix: /}, cluster: up}]\n"
        "clusters:\n"
        f"  - name: up\n    endpoints: [{{address: 127.0.0.1:{upstream}}}]\n"
    )
    return path


def nginx_config(tmp: Path, upstream: int, tls_port: int, plain_port: int) -> Path:
    path = tmp / "nginx-proxy.conf"
    temp = "".join(
        f"  {kind}_temp_path {tmp}/ng-{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    path.write_text(
        f"daemon off;\nworker_processes 1;\npid {tmp}/nginx-proxy.pid;\n"
        f"error_log {tmp}/nginx-proxy.err;\nevents {{ worker_connections 4096; }}\n"
        f"http {{\n  access_log off;\n{temp}  keepalive_requests 100000000;\n"
        f"  upstream up {{ server 127.0.0.1:{upstream}; keepalive 64; }}\n"
        "  ssl_session_tickets on;\n  ssl_protocols TLSv1.2 TLSv1.3;\n"
        f"  ssl_certificate {tmp}/cert.pem;\n  ssl_certificate_key {tmp}/key.pem;\n"
        f"  server {{\n    listen 127.0.0.1:{tls_port} ssl;\n    listen 127.0.0.1:{plain_port};\n"
        "    location / { proxy_pass http://up; proxy_http_version 1.1; "
        'proxy_set_header Connection ""; }\n  }\n}\n'
    )
    return path


def upstream_command(tmp: Path, port: int, core: str) -> list[str]:
    nginx = shutil.which("nginx")
    if nginx is None:
        return [
            "taskset", "-c", core, sys.executable, str(ROOT / "bench" / "upstream.py"),
            "--port", str(port),
        ]  # fmt: skip
    conf = tmp / "nginx-upstream.conf"
    temp = "".join(
        f"  {kind}_temp_path {tmp}/up-{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf.write_text(
        f"daemon off;\nworker_processes 1;\npid {tmp}/nginx-up.pid;\n"
        f"error_log {tmp}/nginx-up.err;\nevents {{ worker_connections 4096; }}\n"
        f"http {{\n  access_log off;\n{temp}  keepalive_requests 100000000;\n"
        f"  server {{ listen 127.0.0.1:{port};\n"
        '    location / { default_type text/plain; return 200 "hello, world\\n"; } }\n}\n'
    )
    return ["taskset", "-c", core, nginx, "-c", str(conf), "-p", str(tmp)]


def measure(
    name: str, command: list[str], tls_port: int, plain_port: int, args: argparse.Namespace
) -> dict[str, tuple[float, float]]:
    figures: dict[str, tuple[float, float]] = {}
    with running(command, tls_port, plain_port) as server:
        time.sleep(1)
        for label, s_time in HANDSHAKES:
            rate, cpu = handshakes(
                tls_port, server.pid, s_time, args.clients, args.seconds, args.client_core
            )
            figures[label] = (rate, cpu)
            print(
                f"  {name:8} {label:30} achieved {rate:7.0f}/s   "
                f"server {cpu * 1e6:6.0f} us CPU each = {1 / cpu:6.0f}/s per core",
                flush=True,
            )
        for label, url in (
            ("HTTPS", f"https://127.0.0.1:{tls_port}/"),
            ("HTTP", f"http://127.0.0.1:{plain_port}/"),
        ):
            rate, us = requests(url, server.pid, args.seconds, args.client_core)
            figures[label] = (rate, us)
            print(f"  {name:8} {label:30} {rate:7.0f} rq/s   server {us:6.1f} us CPU/request")
        https, http = figures["HTTPS"][1], figures["HTTP"][1]
        print(f"  {name:8} HTTPS/HTTP CPU per request {https / http:.2f} (+{https - http:.1f} us)")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=8, help="s_time processes at once")
    parser.add_argument("--core", default="0", help="the core the servers are pinned to")
    parser.add_argument("--client-core", default="1")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        write_certificate(tmp)  # cert.pem and key.pem, which the configs name
        upstream = free_port()
        tls_port, plain_port = free_port(), free_port()
        print(f"openssl s_time x{args.clients} and wrk on core {args.client_core}, "
              f"servers on core {args.core}, {args.seconds} s each")  # fmt: skip
        with running(upstream_command(tmp, upstream, args.client_core), upstream):
            gateway = [
                "taskset", "-c", args.core, sys.executable, "-m", "triogate.cli", "run",
                "--no-state", str(triogate_config(tmp, upstream, tls_port, plain_port)),
            ]  # fmt: skip
            ours = measure("triogate", gateway, tls_port, plain_port, args)
            nginx = shutil.which("nginx")
            if nginx is None:
                return
            config = nginx_config(tmp, upstream, tls_port, plain_port)
            theirs = measure(
                "nginx",
                ["taskset", "-c", args.core, nginx, "-c", str(config), "-p", str(tmp)],
                tls_port,
                plain_port,
                args,
            )
        print("triogate / nginx, server CPU per handshake or request (lower is better for us):")
        for label in ours:
            print(f"  {label:30} {ours[label][1] / theirs[label][1]:5.2f}x")


if __name__ == "__main__":
    main()
