"""Admin API benchmark: how soon a write is in force, and what flipping a split costs traffic.

One run, all on loopback:

1. starts two demo upstreams (``a`` and ``b``) in this process, and ``triogate run`` as a
   child process in front of them, with a state file (so every write is fsynced, as in
   production; ``--no-state`` to leave that out);
2. **propagation**: ``--writes`` times (default 1,000), sets the route's split all on the
   other upstream with ``PUT /listeners/web/routes/main/split``, and from the moment the
   write is acknowledged sends requests on each of ``--connections`` warm keep-alive
   connections (spread over the workers by the kernel) until one is served by the new
   upstream. Reported: the write latency itself, which is write-to-applied (a write is
   acknowledged once every worker has applied it), the time from the acknowledgement
   to the first request served under the new version (p50/p99; it includes that
   request's own round trip), and how many requests after an acknowledgement still saw
   the old version (this should be 0);
3. **flipping**: for ``--flip-seconds``, flips the split as fast as writes go while
   ``--clients`` clients send a steady stream of requests; reports failed requests.

It asserts nothing and is not part of the test suite; the figures are printed.

Each of ``--workers`` (default ``1 2``) is one gateway, measured in turn in the same run.

Run: ``.venv/bin/python bench/bench_admin.py [--writes 1000] [--flip-seconds 5] [--no-state]
[--workers 1 2]``.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import trio

from triogate.demo import serve_demo_upstream

SPLIT = "/listeners/web/routes/main/split"

CONFIG = """\
admin: {{address: "127.0.0.1:0"}}
listeners:
  - name: web
    address: "127.0.0.1:0"
    routes: [{{name: main, match: {{prefix: /}}, cluster: a}}]
clusters:
  - {{name: a, endpoints: [{{address: "{a}"}}]}}
  - {{name: b, endpoints: [{{address: "{b}"}}]}}
"""


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


async def read_until(stdout: trio.abc.ReceiveStream, pattern: str, seen: list[str]) -> str:
    buffer = b""
    with trio.fail_after(30):
        while True:
            for line in seen:
                if found := re.search(pattern, line):
                    return found[1]
            piece = await stdout.receive_some()
            if not piece:
                raise RuntimeError(f"triogate exited: {seen}")
            buffer += piece
            *lines, buffer = buffer.split(b"\n")
            seen += [line.decode() for line in lines]


async def propagation(
    admin: httpx.AsyncClient, webs: list[httpx.AsyncClient], writes: int
) -> dict[str, float]:
    """``writes`` split flips; each acknowledged one is checked on every warm connection."""
    to_first: list[float] = []
    to_all: list[float] = []
    write_time: list[float] = []
    stale = 0
    for n in range(writes):
        target = "b" if n % 2 == 0 else "a"
        weights = {"a": 0, "b": 1} if target == "b" else {"a": 1, "b": 0}
        sent = trio.current_time()
        r = await admin.put(SPLIT, json=weights)
        acked = trio.current_time()
        r.raise_for_status()
        write_time.append(acked - sent)
        for i, web in enumerate(webs):
            while True:
                served = await web.get("/")
                if served.headers["x-upstream"] == target:
                    if i == 0:
                        to_first.append(trio.current_time() - acked)
                    break
                stale += 1
        to_all.append(trio.current_time() - acked)
    print(f"propagation over {writes} writes, checked on {len(webs)} warm connections:")
    print(
        f"  write -> applied on every worker, acknowledged (PUT split, validated, applied, "
        f"persisted): p50 {ms(statistics.median(write_time))}, "
        f"p99 {ms(percentile(write_time, 99))}"
    )
    print(
        f"  acknowledged write -> first request served under the new version: "
        f"p50 {ms(statistics.median(to_first))}, p99 {ms(percentile(to_first, 99))}, "
        f"max {ms(max(to_first))}"
    )
    print(
        f"  acknowledged write -> one request on each connection served under it: "
        f"p50 {ms(statistics.median(to_all))}, p99 {ms(percentile(to_all, 99))}"
    )
    print(f"  requests after an acknowledgement that saw the old version: {stale}")
    return {
        "write_p50": statistics.median(write_time),
        "write_p99": percentile(write_time, 99),
        "first_p99": percentile(to_first, 99),
        "stale": stale,
    }


async def flipping(admin: httpx.AsyncClient, web_url: str, seconds: float, clients: int) -> None:
    counts = {"ok": 0, "failed": 0}
    flips = 0
    stop = trio.Event()

    async def client() -> None:
        async with httpx.AsyncClient(base_url=web_url) as web:
            while not stop.is_set():
                try:
                    r = await web.get("/")
                    counts["ok" if r.status_code == 200 else "failed"] += 1
                except httpx.HTTPError:
                    counts["failed"] += 1

    async with trio.open_nursery() as nursery:
        for _ in range(clients):
            nursery.start_soon(client)
        deadline = trio.current_time() + seconds
        while trio.current_time() < deadline:
            flips += 1
            r = await admin.put(SPLIT, json={"a": flips % 2, "b": 1 - flips % 2})
            r.raise_for_status()
        stop.set()
    total = counts["ok"] + counts["failed"]
    print(
        f"flipping for {seconds:g} s: {flips} flips ({flips / seconds:.0f}/s), {total} requests "
        f"from {clients} clients, {counts['failed']} failed"
    )


async def run_one(args: argparse.Namespace, workers: int, a: object, b: object) -> dict[str, float]:
    """One gateway with ``workers`` worker processes: propagation, then flipping."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bench.yaml"
        config.write_text(CONFIG.format(a=a, b=b))
        state = ["--no-state"] if args.no_state else ["--state-file", f"{config}.state.json"]
        count = ["--workers", str(workers)]
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "triogate.cli", "run", str(config), *state, *count],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            assert process.stdout is not None
            seen: list[str] = []
            web_url = await read_until(process.stdout, r"listener web: http://(\S+)", seen)
            admin_url = await read_until(process.stdout, r"admin API: (http://\S+?)/?$", seen)
            print(f"\n== {workers} worker(s): triogate pid {process.pid}: {', '.join(seen)}")
            async with AsyncExitStack() as stack:
                admin = await stack.enter_async_context(httpx.AsyncClient(base_url=admin_url))
                webs = [
                    await stack.enter_async_context(
                        httpx.AsyncClient(
                            base_url=f"http://{web_url}", limits=httpx.Limits(max_connections=1)
                        )
                    )
                    for _ in range(args.connections)
                ]
                for web in webs:
                    await web.get("/")  # one warm keep-alive connection each
                if workers > 1:
                    spread = (await admin.get("/stats/workers")).json()
                    print(
                        "  connections per worker: "
                        + ", ".join(str(w["downstream_cx_active"]) for w in spread)
                    )
                figures = await propagation(admin, webs, args.writes)
                if args.flip_seconds > 0:
                    await flipping(admin, f"http://{web_url}", args.flip_seconds, args.clients)
                return figures
        finally:
            process.kill()
            await process.wait()


async def main(args: argparse.Namespace) -> None:
    async with trio.open_nursery() as nursery:
        a = await nursery.start(serve_demo_upstream, "a")
        b = await nursery.start(serve_demo_upstream, "b")
        results = {n: await run_one(args, n, a, b) for n in args.workers}
        nursery.cancel_scope.cancel()
    print("\nworkers  write->applied p50   p99     ack->first request p99   stale")
    for n, f in results.items():
        print(
            f"{n:>7}  {ms(f['write_p50']):>12} {ms(f['write_p99']):>10}"
            f" {ms(f['first_p99']):>20}   {f['stale']:>5.0f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=1000)
    parser.add_argument("--flip-seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument(
        "--connections", type=int, default=8, help="warm connections each write is checked on"
    )
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1, 2],
        help="worker counts to measure in turn (default: 1 2)",
    )
    parser.add_argument("--no-state", action="store_true", help="do not persist writes")
    trio.run(main, parser.parse_args())
