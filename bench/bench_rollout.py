"""A staged rollout's time from a gate breach to 0%, with the canary failing under load.

One process runs a gateway (with a state file, so every move is persisted as in
production), two upstreams (``v1`` stable, ``v2`` canary) and ``--clients`` keep-alive
clients, all in one Trio loop. Each round starts a rollout of the route (``steps: [20,
100]``, a dwell longer than the round, the gates ``max_error_rate: 0.01`` and
``min_requests: 10``), lets the canary serve well through a few judgements, then makes
it answer 503 (the *onset*) and measures:

- onset -> breach: the judgement that found the breach (its history line's time); at
  most one ``interval`` plus the time its failures take to cross the gate;
- breach -> 0%: from that judgement to the data plane whose split gives the canary 0
  (the write: status, history and split as one config version, persisted);
- onset -> last canary request: when the canary saw its last request (requests already
  in flight at the swap finish there);
- canary 5xx served: the failed answers clients got, all from the canary's share.

Beside them, the same run times a plain config write (one weight changed through the
control plane, persisted): the reference breach -> 0% is measured against, since the
rollback is one such write. Figures are per round, then the median and max; ratios are
to the interval (onset -> breach) and to the plain write (breach -> 0%). It is not a
test and never runs in CI.

Run: ``.venv/bin/python bench/bench_rollout.py [--intervals 1 0.5 0.2] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.app import Gateway, run_gateway
from gateway.config import Config, Rollout, config_from_data
from policies.rollout import RolloutGates

REQUEST = b"GET /checkout HTTP/1.1\r\nHost: shop\r\n\r\n"


@attrs.define
class Upstream:
    """A keep-alive upstream answering 200 (or 503 while ``failing``), ``x-upstream: name``."""

    name: str
    failing: bool = False
    port: int = 0
    #: ``time.time()`` of each request's arrival
    arrivals: list[float] = attrs.Factory(list)

    def answer(self) -> bytes:
        status = b"503 Service Unavailable" if self.failing else b"200 OK"
        return (
            b"HTTP/1.1 " + status + b"\r\nx-upstream: " + self.name.encode() + b"\r\n"
            b"Content-Length: 3\r\n\r\nok\n"
        )

    async def serve(self, stream: trio.SocketStream) -> None:
        buffer = b""
        try:
            async with stream:
                while True:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buffer += data
                    while b"\r\n\r\n" in buffer:
                        _, buffer = buffer.split(b"\r\n\r\n", 1)
                        self.arrivals.append(time.time())
                        await stream.send_all(self.answer())
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self.serve, listeners)


@attrs.define
class Load:
    """Clients' answers: (time, upstream, status)."""

    answers: list[tuple[float, str, int]] = attrs.Factory(list)

    async def client(self, port: int) -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        buffer = b""
        async with stream:
            while True:
                await stream.send_all(REQUEST)
                while b"\r\n\r\n" not in buffer:
                    buffer += await stream.receive_some(65536)
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                length = 0
                upstream = "gateway"
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                    elif name.lower() == b"x-upstream":
                        upstream = value.strip().decode()
                while len(buffer) < length:
                    buffer += await stream.receive_some(65536)
                buffer = buffer[length:]
                self.answers.append((time.time(), upstream, int(head[9:12])))


@attrs.frozen
class Round:
    interval: float
    onset_to_breach: float
    breach_to_zero: float
    onset_to_last_canary: float
    canary_5xx: int
    stable_5xx: int
    plain_write: float


def config_for(stable: int, canary: int) -> Config:
    return config_from_data(
        {
            "admin": {"address": "127.0.0.1:0"},
            "listeners": [
                {
                    "name": "web",
                    "address": "127.0.0.1:0",
                    "routes": [{"name": "main", "match": {"prefix": "/"}, "cluster": "v1"}],
                }
            ],
            "clusters": [
                {"name": "v1", "endpoints": [{"address": f"127.0.0.1:{stable}"}]},
                {"name": "v2", "endpoints": [{"address": f"127.0.0.1:{canary}"}]},
            ],
        }
    )


def canary_weight(gateway: Gateway) -> int:
    [route] = gateway.control.dataplane.current.config.listeners[0].routes
    return next((wc.weight for wc in route.split if wc.cluster == "v2"), 0)


async def plain_write(gateway: Gateway) -> float:
    """One config write through the control plane (a weight), persisted; seconds."""

    def touch(config: Config) -> Config:
        cluster = config.clusters[0]
        endpoint = attrs.evolve(cluster.endpoints[0], weight=cluster.endpoints[0].weight % 9 + 1)
        return attrs.evolve(
            config, clusters=(attrs.evolve(cluster, endpoints=(endpoint,)), *config.clusters[1:])
        )

    start = time.perf_counter()
    await gateway.control.apply(touch)
    return time.perf_counter() - start


async def one_round(
    gateway: Gateway, canary: Upstream, load: Load, interval: float, k: int
) -> Round:
    assert gateway.rollouts is not None
    canary.failing = False
    name = f"r{k}"
    rollout = Rollout(
        name,
        "web",
        "main",
        "v1",
        "v2",
        steps=(20, 100),
        dwell=3600,
        interval=interval,
        gates=RolloutGates(max_error_rate=0.01, min_requests=10),
    )
    await gateway.rollouts.start(rollout)
    await trio.sleep(3 * interval)  # a few healthy judgements
    writes = [await plain_write(gateway) for _ in range(3)]
    onset = time.time()
    canary.failing = True
    zero_at = None
    with trio.fail_after(30):
        while zero_at is None:
            if canary_weight(gateway) == 0:
                zero_at = time.time()
            await trio.sleep(0.0005)
    await trio.sleep(0.5)  # requests in flight at the swap finish
    written = gateway.control.config.rollout(name)
    assert written is not None and written.status.state == "rolled_back", written
    breach_at = written.status.history[-1].at
    after = [a for a in load.answers if a[0] >= onset]
    return Round(
        interval,
        breach_at - onset,
        zero_at - breach_at,
        max(canary.arrivals) - onset,
        sum(1 for _, who, status in after if who == "v2" and status >= 500),
        sum(1 for _, who, status in after if who == "v1" and status >= 500),
        statistics.median(writes),
    )


async def bench(args: argparse.Namespace) -> list[Round]:
    rounds: list[Round] = []
    stable, canary = Upstream("v1"), Upstream("v2")
    with tempfile.TemporaryDirectory() as tmp:
        async with trio.open_nursery() as nursery:
            await nursery.start(stable.run)
            await nursery.start(canary.run)
            gateway: Gateway = await nursery.start(
                lambda task_status: run_gateway(
                    config_for(stable.port, canary.port),
                    state_path=Path(tmp) / "state.json",
                    task_status=task_status,
                )
            )
            port = gateway.listener_address("web").port
            load = Load()
            for _ in range(args.clients):
                nursery.start_soon(load.client, port)
            k = 0
            for interval in args.intervals:
                for _ in range(args.rounds):
                    k += 1
                    rounds.append(await one_round(gateway, canary, load, interval, k))
                    print(describe(rounds[-1]), flush=True)
            nursery.cancel_scope.cancel()
    return rounds


def describe(r: Round) -> str:
    return (
        f"interval {r.interval:g} s: onset->breach {r.onset_to_breach * 1000:.0f} ms, "
        f"breach->0% {r.breach_to_zero * 1000:.1f} ms (plain write {r.plain_write * 1000:.1f}"
        f" ms), onset->last canary request {r.onset_to_last_canary * 1000:.0f} ms, "
        f"canary 5xx {r.canary_5xx}, stable 5xx {r.stable_5xx}"
    )


def report(rounds: list[Round]) -> str:
    lines = [
        "interval | onset->breach median/max (x interval) | breach->0% median/max "
        "| plain write median (ratio) | onset->last canary rq max | canary 5xx median "
        "| stable 5xx"
    ]
    for interval in sorted({r.interval for r in rounds}, reverse=True):
        rs = [r for r in rounds if r.interval == interval]
        detect = [r.onset_to_breach for r in rs]
        zero = [r.breach_to_zero for r in rs]
        write = statistics.median(r.plain_write for r in rs)
        lines.append(
            f"{interval:g} s | {statistics.median(detect) * 1000:.0f}/{max(detect) * 1000:.0f}"
            f" ms ({statistics.median(detect) / interval:.2f}/{max(detect) / interval:.2f})"
            f" | {statistics.median(zero) * 1000:.1f}/{max(zero) * 1000:.1f} ms"
            f" | {write * 1000:.1f} ms ({statistics.median(zero) / write:.2f})"
            f" | {max(r.onset_to_last_canary for r in rs) * 1000:.0f} ms"
            f" | {statistics.median(r.canary_5xx for r in rs):.0f}"
            f" | {sum(r.stable_5xx for r in rs)}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--intervals", type=float, nargs="+", default=[1.0, 0.5, 0.2])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args(argv)
    rounds: list[Any] = trio.run(bench, args)
    print()
    print(report(rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
