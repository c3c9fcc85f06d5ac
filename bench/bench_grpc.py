"""gRPC unary calls per second through triogate against the same calls made directly.

In one run: a grpcio server (the generated-free echo service of
``tests/gateway/grpc_support.py``, bytes in and out) pinned apart from the gateway,
triogate on one core in front of it (a ``protocol: http2`` cluster), and grpcio clients
on the other cores: several processes, each with a few threads making blocking unary
calls of a 16-byte message for ``--seconds``. The same clients call the server directly
and through the gateway, alternately, ``--rounds`` times; the best of each is kept and
their ratio printed::

    .venv/bin/python bench/bench_grpc.py [--seconds 5] [--processes 4] [--threads 8]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from run_bench import Servers, free_port, triogate_command

CONFIG = """\
listeners:
  - name: web
    address: 127.0.0.1:{port}
    routes:
      - match: {{prefix: /}}
        cluster: echo
        timeout: 30
clusters:
  - name: echo
    protocol: http2
    endpoints:
      - address: 127.0.0.1:{upstream_port}
"""

SERVE = """\
import sys, time
sys.path.insert(0, {root!r})
from tests.gateway.grpc_support import start_server
server, port = start_server(workers={workers})
print(port, flush=True)
server.wait_for_termination()
"""


def _client(address: str, threads: int, seconds: float, out: multiprocessing.Queue) -> None:
    import threading

    from tests.gateway.grpc_support import channel, unary

    chan = channel(address)
    call = unary(chan)
    call(b"warm-up", timeout=10)
    counts = [0] * threads
    stop = time.monotonic() + seconds

    def loop(i: int) -> None:
        message = b"x" * 16
        while time.monotonic() < stop:
            call(message, timeout=10)
            counts[i] += 1

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    chan.close()
    out.put(sum(counts))


def calls_per_second(
    address: str, processes: int, threads: int, seconds: float, cpus: set[int]
) -> float:
    """Unary calls per second from ``processes`` x ``threads`` blocking callers."""
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue = ctx.Queue()
    procs = [
        ctx.Process(target=_pinned_client, args=(address, threads, seconds, out, cpus))
        for _ in range(processes)
    ]
    start = time.monotonic()
    for proc in procs:
        proc.start()
    total = sum(out.get(timeout=seconds + 60) for _ in procs)
    for proc in procs:
        proc.join()
    elapsed = time.monotonic() - start
    return total / max(seconds, elapsed - 2.0)  # (process start-up is not call time)


def _pinned_client(
    address: str, threads: int, seconds: float, out: multiprocessing.Queue, cpus: set[int]
) -> None:
    os.sched_setaffinity(0, cpus)
    _client(address, threads, seconds, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    gateway_core = frozenset({cores[0]})
    server_cores = frozenset(cores[1:2] or cores)
    client_cores = set(cores[2:] or cores[1:] or cores)
    root = str(Path(__file__).resolve().parent.parent)
    import subprocess

    with tempfile.TemporaryDirectory() as tmp_name, Servers(Path(tmp_name)) as servers:
        tmp = Path(tmp_name)
        server = subprocess.Popen(
            [sys.executable, "-c", SERVE.format(root=root, workers=args.processes * args.threads)],
            stdout=subprocess.PIPE,
            preexec_fn=lambda: os.sched_setaffinity(0, server_cores),
        )
        try:
            assert server.stdout is not None
            upstream_port = int(server.stdout.readline())
            gw_port = free_port()
            path = tmp / "triogate.yaml"
            path.write_text(CONFIG.format(port=gw_port, upstream_port=upstream_port))
            triogate = [*triogate_command(), "run", str(path)]
            servers.start("triogate", triogate, gw_port, gateway_core)
            targets = {
                "direct": f"127.0.0.1:{upstream_port}",
                "triogate": f"127.0.0.1:{gw_port}",
            }
            best: dict[str, float] = {}
            for _ in range(args.rounds):
                for name, address in targets.items():
                    rate = calls_per_second(
                        address, args.processes, args.threads, args.seconds, client_cores
                    )
                    best[name] = max(best.get(name, 0.0), rate)
        finally:
            server.kill()
            server.wait()
    print(
        f"grpcio unary calls, {args.processes} processes x {args.threads} threads, "
        f"{args.seconds:g} s each, best of {args.rounds}; triogate on core {cores[0]}, "
        f"the server on {sorted(server_cores)}, clients on {sorted(client_cores)}"
    )
    for name, rate in best.items():
        print(f"  {name:10} {rate:10,.0f} calls/s   {rate / best['direct']:5.3f}x direct")


if __name__ == "__main__":
    main()
