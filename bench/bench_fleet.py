"""A fleet of three ``triogate run`` nodes sharing one config through a real etcd.

Prints three figures (issue 14), on loopback:

- propagation: from the acknowledgement of a write on node A (``PUT /config`` moving
  the route between two upstreams) to the first request that nodes B and C serve
  under the new version (each polls its listener in a tight keep-alive loop), p50 and
  p99 over ``--writes`` writes (target: p99 under 50 ms);
- admin write latency: the same write's median time with the etcd store (A) and on a
  fourth node with the file store (its state file), and their ratio;
- catch-up: node C frozen (SIGSTOP) while etcd is killed and started again, a write
  made on A, then C woken: the time from its wake to serving that write (its watch
  finds the stream broken, reconnects from its revision, applies the change).

etcd is Debian's ``etcd`` (3.4), started here with a temporary data dir. It is not a
test and never runs in CI; the machine has 2 cores, so nodes, etcd and this client
share them (the figures are upper bounds of what a node alone would take).

Run: ``.venv/bin/python bench/bench_fleet.py [--writes 1000]``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run_bench import free_port, triogate_command
from gateway.config import Address
from triogate.demo import serve_demo_upstream

LINE = re.compile(r"(listener web: http://|admin API: http://)(\S+?)/?$")


class Node:
    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.web: Address | None = None
        self.admin: Address | None = None
        self.lines: list[str] = []


@asynccontextmanager
async def node(config: Path, state: Path) -> AsyncIterator[Node]:
    argv = [*triogate_command(), "run", "--state-file", str(state), str(config)]
    process = await trio.lowlevel.open_process(
        argv, stdout=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    running = Node(process)
    assert process.stdout is not None
    buffer = b""
    with trio.fail_after(30):
        while running.admin is None:
            piece = await process.stdout.receive_some()
            if not piece:
                raise RuntimeError(f"a node exited: {running.lines}")
            buffer += piece
            *done, buffer = buffer.split(b"\n")
            for raw in done:
                line = raw.decode()
                running.lines.append(line)
                if m := LINE.match(line):
                    if m[1].startswith("listener"):
                        running.web = Address.parse(m[2])
                    else:
                        running.admin = Address.parse(m[2])
    try:
        yield running
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()


class Etcd:
    def __init__(self, data: Path) -> None:
        self.data = data
        self.port = free_port()
        self.process: trio.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        etcd = shutil.which("etcd")
        if etcd is None:
            raise SystemExit("etcd is not installed (apt-get install etcd-server)")
        self.process = await trio.lowlevel.open_process(
            [
                etcd,
                f"--data-dir={self.data}",
                f"--listen-client-urls={self.url}",
                f"--advertise-client-urls={self.url}",
                "--listen-peer-urls=http://127.0.0.1:0",
                "--initial-advertise-peer-urls=http://127.0.0.1:2380",
                "--initial-cluster=default=http://127.0.0.1:2380",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        async with httpx.AsyncClient(timeout=1) as client:
            with trio.fail_after(30):
                while True:
                    try:
                        r = await client.post(f"{self.url}/v3/kv/range", json={"key": "eA=="})
                        if r.status_code == 200:
                            return
                    except httpx.HTTPError:
                        pass
                    await trio.sleep(0.05)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


def config_text(store: str, a: Address, b: Address) -> str:
    return f"""\
admin: {{address: "127.0.0.1:0"}}
{store}
listeners:
  - name: web
    address: "127.0.0.1:0"
    routes: [{{name: main, match: {{prefix: /}}, cluster: a}}]
clusters:
  - {{name: a, endpoints: [{{address: "{a}"}}]}}
  - {{name: b, endpoints: [{{address: "{b}"}}]}}
"""


async def write(client: httpx.AsyncClient, admin: Address, cluster: str) -> float:
    """Route to ``cluster`` on ``admin``; returns the monotonic time of the answer."""
    r = await client.get(f"http://{admin}/config")
    config: dict[str, Any] = r.json()
    version = config.pop("version")
    del config["admin"], config["config_store"]
    config["listeners"][0]["routes"][0]["cluster"] = cluster
    r = await client.put(
        f"http://{admin}/config", json=config, headers={"If-Match": f'"{version}"'}
    )
    if r.status_code != 200:
        raise RuntimeError(f"write refused: {r.status_code} {r.text}")
    return time.perf_counter()


async def timed_write(client: httpx.AsyncClient, admin: Address, cluster: str) -> float:
    """The PUT alone (the GET before it is not counted), in seconds."""
    r = await client.get(f"http://{admin}/config")
    config: dict[str, Any] = r.json()
    version = config.pop("version")
    del config["admin"], config["config_store"]
    config["listeners"][0]["routes"][0]["cluster"] = cluster
    start = time.perf_counter()
    r = await client.put(
        f"http://{admin}/config", json=config, headers={"If-Match": f'"{version}"'}
    )
    took = time.perf_counter() - start
    if r.status_code != 200:
        raise RuntimeError(f"write refused: {r.status_code} {r.text}")
    return took


async def first_served(client: httpx.AsyncClient, web: Address, cluster: str) -> float:
    with trio.fail_after(10):
        while True:
            r = await client.get(f"http://{web}/")
            if r.headers["x-upstream"] == cluster:
                return time.perf_counter()


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(writes: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench_fleet.") as tmp_name:
        tmp = Path(tmp_name)
        etcd = Etcd(tmp / "etcd")
        await etcd.start()
        async with AsyncExitStack() as stack, trio.open_nursery() as nursery:
            stack.push_async_callback(etcd.stop)
            a = await nursery.start(serve_demo_upstream, "a")
            b = await nursery.start(serve_demo_upstream, "b")
            store = (
                "config_store:\n  type: etcd\n"
                f'  endpoints: ["{etcd.url}"]\n  prefix: /bench/fleet\n'
            )
            fleet = tmp / "fleet.yaml"
            fleet.write_text(config_text(store, a, b))
            single = tmp / "single.yaml"
            single.write_text(config_text("", a, b))
            nodes = [
                await stack.enter_async_context(node(fleet, tmp / f"n{i}.json")) for i in range(3)
            ]
            alone = await stack.enter_async_context(node(single, tmp / "single.json"))
            first, *others = nodes
            clients = [await stack.enter_async_context(httpx.AsyncClient()) for _ in range(3)]

            # propagation
            samples: list[float] = []
            for i in range(writes):
                target = "b" if i % 2 == 0 else "a"
                acked = await write(clients[0], first.admin, target)  # type: ignore[arg-type]
                seen: list[float] = []

                async def watch(
                    n: Node, client: httpx.AsyncClient, t: str = target, into: list[float] = seen
                ) -> None:
                    into.append(await first_served(client, n.web, t))  # type: ignore[arg-type]

                async with trio.open_nursery() as inner:
                    for other, client in zip(others, clients[1:], strict=True):
                        inner.start_soon(watch, other, client)
                samples += [(s - acked) * 1000 for s in seen]
            print(
                f"propagation, ack on A -> first request under the new version on B and C "
                f"({writes} writes, {len(samples)} samples): p50 {quantile(samples, 0.5):.2f} ms, "
                f"p99 {quantile(samples, 0.99):.2f} ms, max {max(samples):.2f} ms"
            )

            # admin write latency, etcd against the file store
            rounds = min(writes, 300)
            fleet_times = [
                await timed_write(clients[0], first.admin, "ab"[i % 2])  # type: ignore[arg-type]
                for i in range(rounds)
            ]
            file_times = [
                await timed_write(clients[0], alone.admin, "ab"[i % 2])  # type: ignore[arg-type]
                for i in range(rounds)
            ]
            fleet_ms = statistics.median(fleet_times) * 1000
            file_ms = statistics.median(file_times) * 1000
            print(
                f"admin write (PUT /config), median of {rounds}: etcd store {fleet_ms:.2f} ms, "
                f"file store {file_ms:.2f} ms, ratio {fleet_ms / file_ms:.2f}"
            )

            # catch-up after an outage
            late = others[1]
            catch_up: list[float] = []
            for i in range(5):
                target = "b" if i % 2 == 0 else "a"
                os.kill(late.process.pid, signal.SIGSTOP)
                try:
                    await etcd.stop()
                    await etcd.start()
                    with trio.fail_after(20):
                        while True:
                            try:
                                await write(clients[0], first.admin, target)  # type: ignore[arg-type]
                                break
                            except RuntimeError:
                                await trio.sleep(0.05)
                finally:
                    woke = time.perf_counter()
                    os.kill(late.process.pid, signal.SIGCONT)
                served = await first_served(clients[2], late.web, target)  # type: ignore[arg-type]
                catch_up.append((served - woke) * 1000)
            print(
                f"catch-up after an etcd outage (node woken -> serving the write it missed), "
                f"5 outages: median {statistics.median(catch_up):.1f} ms, "
                f"max {max(catch_up):.1f} ms"
            )
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=1000)
    trio.run(main, parser.parse_args().writes)
