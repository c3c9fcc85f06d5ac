"""Upstream HTTP/2: what a ``protocol: http2`` cluster costs a proxied request against
``protocol: http1``, in one run, with the upstream's own figure beside them.

One nginx (``return 200``, pinned to ``--client-core``) listens twice: HTTP/1.1 on one
port and HTTP/2 by prior knowledge on another. One ``triogate run --no-state``, pinned
to ``--core``, has two listeners: ``h1`` to a cluster of the first port, ``h2`` to a
``protocol: http2`` cluster of the second. wrk (``-t1 -c50``, on the client core, HTTP/1.1)
drives each listener for ``--seconds``, then nginx directly: requests per second, and
the server's CPU microseconds per request (``/proc/PID/stat``).

Through ``h2`` the 50 client connections' requests go upstream as streams of one
connection (``http2.max_concurrent_streams`` 100); through ``h1`` over up to 50 pooled
connections::

    .venv/bin/python bench/bench_h2_upstream.py [--seconds 5] [--rounds 3]

Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench_tls import requests, running  # bench/ is the script's directory
from run_bench import free_port, triogate_command

NGINX = """\
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    http2_max_requests 100000000;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{h1};
        location / {{ default_type text/plain; return 200 "hello, world\\n"; }}
    }}
    server {{
        listen 127.0.0.1:{h2} http2;
        location / {{ default_type text/plain; return 200 "hello, world\\n"; }}
    }}
}}
"""

TRIOGATE = """\
admin: {{address: 127.0.0.1:{admin}}}
listeners:
  - {{name: h1, address: 127.0.0.1:{gw1}, routes: [{{match: {{prefix: /}}, cluster: up1}}]}}
  - {{name: h2, address: 127.0.0.1:{gw2}, routes: [{{match: {{prefix: /}}, cluster: up2}}]}}
clusters:
  - {{name: up1, endpoints: [{{address: 127.0.0.1:{h1}}}]}}
  - {{name: up2, protocol: http2, endpoints: [{{address: 127.0.0.1:{h2}}}]}}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="best of N per target")
    parser.add_argument("--core", default="0", help="the gateway's core")
    parser.add_argument("--client-core", default="1", help="wrk's and nginx's core")
    args = parser.parse_args()
    nginx = shutil.which("nginx")
    if nginx is None or shutil.which("wrk") is None:
        sys.exit("needs nginx and wrk (apt-get install nginx wrk)")
    with tempfile.TemporaryDirectory(prefix="bench-h2up-") as tmp_name:
        tmp = Path(tmp_name)
        ports = {name: free_port() for name in ("h1", "h2", "gw1", "gw2", "admin")}
        (tmp / "nginx.conf").write_text(NGINX.format(tmp=tmp, **ports))
        (tmp / "triogate.yaml").write_text(TRIOGATE.format(**ports))
        upstream = ["taskset", "-c", args.client_core, nginx, "-c", f"{tmp}/nginx.conf"]
        gateway = [
            "taskset", "-c", args.core, *triogate_command(),
            "run", str(tmp / "triogate.yaml"), "--no-state",
        ]  # fmt: skip
        with (
            running(upstream, ports["h1"], ports["h2"]) as nginx_proc,
            running(gateway, ports["gw1"], ports["gw2"]) as gateway_proc,
        ):
            time.sleep(1)
            targets = {
                "triogate, http1 cluster": (ports["gw1"], gateway_proc.pid),
                "triogate, http2 cluster": (ports["gw2"], gateway_proc.pid),
                "nginx direct (HTTP/1.1)": (ports["h1"], nginx_proc.pid),
            }
            best: dict[str, tuple[float, float]] = {}
            for _ in range(args.rounds):
                for name, (port, pid) in targets.items():
                    rate, cpu = requests(
                        f"http://127.0.0.1:{port}/", pid, args.seconds, args.client_core
                    )
                    if name not in best or cpu < best[name][1]:
                        best[name] = (rate, cpu)
    h1_cpu = best["triogate, http1 cluster"][1]
    print(f"wrk -t1 -c50 -d{args.seconds}s, gateway on core {args.core}, best of {args.rounds}")
    for name, (rate, cpu) in best.items():
        print(f"  {name:26} {rate:9,.0f} req/s  {cpu:7.1f} us CPU/request  {cpu / h1_cpu:5.2f}x")


if __name__ == "__main__":
    main()
