"""HTTP/2 requests per second on one core, with h2load (Debian ``nghttp2-client``).

In one run, each server pinned to core 0 (``taskset``-style affinity) and h2load to the
other cores: nginx serving HTTP/2 itself (the reference), triogate terminating HTTP/2
(prior knowledge, the client preface) in front of an nginx HTTP/1.1 upstream (pinned
apart), and hypercorn serving HTTP/2 from a minimal ASGI app (its asyncio worker: hypercorn
0.18's trio worker fails every h2c prior-knowledge connection with ClosedResourceError). Every
target answers ``GET /`` with ``hello, world``; the ratios are against hypercorn (the
issue's target: triogate at least 4,000 requests/s and over four times hypercorn)::

    .venv/bin/python bench/bench_http2.py [--requests 40000] [--clients 10] [--streams 10]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run_bench import (
    Servers,
    free_port,
    render_config,
    triogate_command,
)

HYPERCORN_APP = """\
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello, world\\n"})
"""

NGINX_H2 = """\
daemon off;
master_process on;
worker_processes 1;
pid {tmp}/nginx-h2.pid;
error_log {tmp}/nginx-h2-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    http2_max_requests 100000000;
    client_body_temp_path {tmp}/h2-body;
    proxy_temp_path {tmp}/h2-proxy;
    fastcgi_temp_path {tmp}/h2-fastcgi;
    uwsgi_temp_path {tmp}/h2-uwsgi;
    scgi_temp_path {tmp}/h2-scgi;
    server {{
        listen 127.0.0.1:{port} http2;
        location / {{ default_type text/plain; return 200 "hello, world\\n"; }}
    }}
}}
"""


def h2load(port: int, requests: int, clients: int, streams: int, cpus: set[int]) -> float:
    """Requests per second h2load measured (prior knowledge), after a short warm-up."""
    argv = ["h2load", "-c", str(clients), "-m", str(streams), f"http://127.0.0.1:{port}/"]
    pin = lambda: os.sched_setaffinity(0, cpus)  # noqa: E731
    subprocess.run(
        [*argv[:1], "-n", "2000", *argv[1:]], capture_output=True, preexec_fn=pin, check=True
    )
    out = subprocess.run(
        [*argv[:1], "-n", str(requests), *argv[1:]],
        capture_output=True,
        text=True,
        preexec_fn=pin,
        check=True,
    ).stdout
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    if done is None or int(done.group(2)) != requests:
        raise RuntimeError(f"h2load on port {port} did not succeed:\n{out}")
    rate = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    assert rate is not None, out
    return float(rate.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40000)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--streams", type=int, default=10, help="h2load -m: streams per client")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("h2load") is None or shutil.which("nginx") is None:
        sys.exit("needs h2load and nginx: apt-get install -y nghttp2-client nginx")
    cores = sorted(os.sched_getaffinity(0))
    server_core = frozenset({cores[0]})
    others = set(cores[1:]) or set(cores)
    nginx = shutil.which("nginx")
    assert nginx is not None
    with tempfile.TemporaryDirectory() as tmp_name, Servers(Path(tmp_name)) as servers:
        tmp = Path(tmp_name)
        up_port = free_port()
        conf = render_config("nginx.conf", tmp, tmp=tmp, port=up_port)
        argv = [nginx, "-e", str(tmp / "nginx-error.log"), "-p", str(tmp), "-c", str(conf)]
        servers.start("nginx-upstream", argv, up_port, frozenset(others))
        h2_port = free_port()
        (tmp / "nginx-h2.conf").write_text(NGINX_H2.format(tmp=tmp, port=h2_port))
        argv = [
            nginx,
            "-e",
            str(tmp / "nginx-h2-error.log"),
            "-p",
            str(tmp),
            "-c",
            str(tmp / "nginx-h2.conf"),
        ]
        servers.start("nginx-h2", argv, h2_port, server_core)
        gw_port = free_port()
        path = render_config("triogate.yaml", tmp, port=gw_port, upstream_port=up_port)
        servers.start("triogate", [*triogate_command(), "run", str(path)], gw_port, server_core)
        hc_port = free_port()
        (tmp / "h2app.py").write_text(HYPERCORN_APP)
        run_hypercorn = (
            f"import sys; sys.path.insert(0, {tmp_name!r}); "
            "from hypercorn.__main__ import main; main()"
        )
        hypercorn = [
            sys.executable, "-c", run_hypercorn,
            "-b", f"127.0.0.1:{hc_port}", "h2app:app",
        ]  # fmt: skip
        servers.start("hypercorn", hypercorn, hc_port, server_core)
        targets = {"nginx (HTTP/2)": h2_port, "triogate": gw_port, "hypercorn": hc_port}
        best: dict[str, float] = {}
        for _ in range(args.rounds):
            for name, port in targets.items():
                # hypercorn closes a connection after 1,000 requests (its default)
                requests = (
                    min(args.requests, args.clients * 900) if port == hc_port else args.requests
                )
                rate = h2load(port, requests, args.clients, args.streams, others)
                best[name] = max(best.get(name, 0.0), rate)
        print(
            f"h2load -n {args.requests} -c {args.clients} -m {args.streams}, "
            f"servers on core {cores[0]}, best of {args.rounds} rounds"
        )
        for name, rate in best.items():
            against_hypercorn = rate / best["hypercorn"]
            against_nginx = rate / best["nginx (HTTP/2)"]
            print(
                f"  {name:18} {rate:10,.0f} req/s   {against_hypercorn:5.2f}x hypercorn"
                f"   {against_nginx:5.3f}x nginx"
            )


if __name__ == "__main__":
    main()
