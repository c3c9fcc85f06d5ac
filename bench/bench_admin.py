"""Admin API benchmark: how soon a write is in force, and what flipping a split costs traffic.

One run, all on loopback:

1. starts two demo upstreams (``a`` and ``b``) in this process, and ``triogate run`` as a
   child process in front of them, with a state file (so every write is fsynced, as in
   production; ``--no-state`` to leave that out);
2. **propagation**: ``--writes`` times (default 1,000), sets the route's split all on the
   other upstream with ``PUT /listeners/web/routes/main/split``, and from the moment the
   write is acknowledged sends requests on a warm keep-alive connection until one is
   served by the new upstream. Reported: time from the acknowledgement to the first
   request served under the new version (p50/p99; it includes that request's own round
   trip), how many requests after an acknowledgement still saw the old version (the
   control plane swaps the data plane before it acknowledges, so this should be 0), and
   the write latency itself;
3. **flipping**: for ``--flip-seconds``, flips the split as fast as writes go while
   ``--clients`` clients send a steady stream of requests; reports failed requests.

It asserts nothing and is not part of the test suite; the figures are printed.

Run: ``.venv/bin/python bench/bench_admin.py [--writes 1000] [--flip-seconds 5] [--no-state]``.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
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


async def propagation(admin: httpx.AsyncClient, web: httpx.AsyncClient, writes: int) -> None:
    to_first: list[float] = []
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
        while True:
            served = await web.get("/")
            if served.headers["x-upstream"] == target:
                to_first.append(trio.current_time() - acked)
                break
            stale += 1
    print(f"propagation over {writes} writes:")
    print(
        f"  acknowledged write -> first request served under the new version: "
        f"p50 {ms(statistics.median(to_first))}, p99 {ms(percentile(to_first, 99))}, "
        f"max {ms(max(to_first))}"
    )
    print(f"  requests after an acknowledgement that saw the old version: {stale}")
    print(
        f"  write latency (PUT split, validated, applied, persisted): "
        f"p50 {ms(statistics.median(write_time))}, p99 {ms(percentile(write_time, 99))}"
    )


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


async def main(args: argparse.Namespace) -> None:
    async with trio.open_nursery() as nursery:
        a = await nursery.start(serve_demo_upstream, "a")
        b = await nursery.start(serve_demo_upstream, "b")
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "bench.yaml"
            config.write_text(CONFIG.format(a=a, b=b))
            state = ["--no-state"] if args.no_state else ["--state-file", f"{config}.state.json"]
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "gateway.cli", "run", str(config), *state],
                stdout=subprocess.PIPE,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            try:
                assert process.stdout is not None
                seen: list[str] = []
                web_url = await read_until(process.stdout, r"listener web: http://(\S+)", seen)
                admin_url = await read_until(process.stdout, r"admin API: (http://\S+?)/?$", seen)
                print(f"triogate pid {process.pid}: {', '.join(seen)}")
                async with (
                    httpx.AsyncClient(base_url=admin_url) as admin,
                    httpx.AsyncClient(base_url=f"http://{web_url}") as web,
                ):
                    await web.get("/")  # warm the keep-alive connections
                    await propagation(admin, web, args.writes)
                    if args.flip_seconds > 0:
                        await flipping(admin, f"http://{web_url}", args.flip_seconds, args.clients)
            finally:
                process.kill()
                await process.wait()
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=1000)
    parser.add_argument("--flip-seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--no-state", action="store_true", help="do not persist writes")
    trio.run(main, parser.parse_args())
