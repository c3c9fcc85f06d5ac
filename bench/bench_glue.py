"""The data path's Python per proxied request, without sockets: the figure a profiler or
callgrind can pin down on a shared, noisy machine.

``--connections`` ``HttpConnection``s of one listener (default 50, as wrk's) serve
``--requests`` requests between them from fake streams that answer at once: each client
stream hands over wrk's ``GET /`` whenever read, each upstream stream nginx's 13-byte
answer; both take one checkpoint per read, as ``netio.SocketIO`` does when data is there.
So what is measured is everything of a request but its four syscalls and the waits:
parsing, routing, balancing, head rewriting, stats, the pool, Trio's two task steps.

It prints CPU microseconds per request (noisy where other work runs). For a figure that
does not move with the machine, count instructions with callgrind at two sizes and take
the difference (startup cancels out)::

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python bench/bench_glue.py --requests 1000    # then 3000: (b - a) / 2000

``--tree DIR`` runs another source tree (``git archive REF | tar -x -C DIR``).
``--resilience`` gives the cluster a classic ``breaker`` and ``outlier_detection``, wired
to the data path as the cluster actor wires them (the breaker and the outcome buffer on
the cluster's stats): what they cost a request, against a run without.
``--fault-percent P`` configures one HTTP fault (an abort) on the listener at ``P``
percent, so that ``0`` measures a fault that is decided on every request and never
applied (only for a tree with faults).
``--filters`` prints, side by side from the same run, the CPU per request with no filter
and with each filter of ``FILTERS`` (a header-adding Python filter: ``sample_filters``;
proxy-wasm modules: a no-op, a header-adding one, one that traps when asked), each
variant on the same tree (only for a tree with filters). ``--filter NAME`` measures one
variant alone (for callgrind). ``--trap-every N``: every Nth request of each connection
asks the ``wasm-faults`` module to trap (a 500; the next request gets a fresh instance).
``--rollout`` has the route watched as a running staged rollout watches it (each request
also counted in the route's stats for its cluster): what a rollout costs a request on
its route, against a run without (only for a tree with rollouts).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import trio

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Wed, 02 Dec 2026 03:53:43 GMT\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Length: 13\r\n"
    b"Connection: keep-alive\r\n\r\nhello, world\n"
)


#: the WAT modules of the proxy-wasm tests (``tests/wasm/filters``)
WAT = Path(__file__).resolve().parent.parent / "tests" / "wasm" / "filters"

#: the variants ``--filters`` compares: a name and the listener's ``http_filters``
FILTERS: dict[str, list[dict[str, Any]]] = {
    "none": [],
    "python-add-header": [
        {"name": "tag", "python": {"factory": "sample_filters:AddHeader", "config": {}}}
    ],
    # proxy-wasm: a module that continues, one that adds ``x-wasm: 1`` (as the Python one
    # adds ``x-hello: world``), and one that traps on ``x-trap`` (``--trap-every``)
    "wasm-noop": [{"name": "noop", "wasm": {"path": str(WAT / "noop.wat")}}],
    "wasm-add-header": [{"name": "tag", "wasm": {"path": str(WAT / "add_header.wat")}}],
    "wasm-faults": [{"name": "faults-wat", "wasm": {"path": str(WAT / "faults.wat")}}],
}

#: ``--trap-every N``: every Nth request of a client asks ``faults.wat`` to trap
TRAP_REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nx-trap: 1\r\n\r\n"


class FakeStream:
    """A stream whose every read returns ``answer`` (``count`` times, then EOF); every
    ``every``th read returns ``other`` instead, when given."""

    def __init__(
        self, answer: bytes, count: int, other: bytes | None = None, every: int = 0
    ) -> None:
        self.answer = answer
        self.count = count
        self.other = other
        self.every = every
        self.reads = 0
        self.sent = 0

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        if not self.count:
            return b""
        self.count -= 1
        self.reads += 1
        if self.other is not None and self.reads % self.every == 0:
            return self.other
        return self.answer

    async def send_all(self, data: bytes) -> None:
        self.sent += 1

    async def send_eof(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    def close(self) -> None:
        pass


async def serve_all(
    requests: int,
    connections: int,
    resilience: bool,
    fault_percent: float | None,
    rollout: bool = False,
    http_filters: list[dict[str, Any]] | None = None,
    trap_every: int = 0,
) -> float:
    """Serve ``requests`` over ``connections``; the CPU seconds it took."""
    from gateway.cluster.actor import ClusterHandle
    from gateway.config import config_from_data
    from gateway.dataplane import DataPlane, DataPlaneRef
    from gateway.listener.context import ListenerContext
    from gateway.observe.stats import StatsRegistry
    from gateway.proxy.http import HttpConnection
    from gateway.routing import RouteTable

    data: dict[str, Any] = {
        "admin": {"address": "127.0.0.1:0"},
        "listeners": [
            {
                "name": "web",
                "address": "127.0.0.1:0",
                "routes": [{"name": "main", "match": {"prefix": "/"}, "cluster": "c"}],
            }
        ],
        "clusters": [{"name": "c", "endpoints": [{"address": "127.0.0.1:9"}]}],
    }
    if http_filters:
        data["listeners"][0]["http_filters"] = http_filters
    if resilience:
        data["clusters"][0]["breaker"] = {}
        data["clusters"][0]["outlier_detection"] = {}
    if fault_percent is not None:
        data["faults"] = [
            {"name": "f", "listener": "web", "percent": fault_percent, "abort": {"status": 503}}
        ]
    config = config_from_data(data)
    listener = config.listeners[0]
    cluster = config.cluster("c")
    assert cluster is not None
    handle = ClusterHandle(cluster)
    plane = DataPlane(config, {"web": RouteTable(listener)}, {"c": handle})
    if fault_percent is not None:
        from gateway.faults.table import FaultTable

        plane = DataPlane(
            config, plane.routes, plane.clusters, faults=FaultTable.compile(config, None)
        )
    registry = StatsRegistry()
    try:  # (a tree with filters: the chains as published)
        from gateway.filters.factories import build_chains
    except ImportError:
        pass
    else:
        chains, _network = build_chains(config, registry)
        plane = DataPlane(config, plane.routes, plane.clusters, plane.faults, chains)
    ctx = ListenerContext(listener, DataPlaneRef(plane), rng=random.Random(7), registry=registry)
    if rollout:  # (imported here: a tree from before rollouts runs without)
        from gateway.routing import watch_routes

        watch = watch_routes("web", frozenset({"main"}), ctx.registry)
        ctx.dataplane.current = attrs.evolve(plane, routes={"web": RouteTable(listener, watch)})
    if resilience:  # (imported here: a tree from before them runs without)
        from gateway.cluster.breaker import ClusterBreaker
        from gateway.cluster.outcomes import OutcomeBuffer

        assert cluster.breaker is not None
        ctx.registry.cluster("c").breaker = ClusterBreaker("c", cluster.breaker, None)
        ctx.registry.cluster("c").outcomes = OutcomeBuffer(capacity=requests)

    async def connect(address: object) -> FakeStream:
        return FakeStream(RESPONSE, -1)  # never ends

    for endpoint in handle.snapshot.all_endpoints:
        endpoint.pool.connector = connect
    trap = TRAP_REQUEST if trap_every else None
    clients = [
        FakeStream(REQUEST, requests // connections, trap, trap_every) for _ in range(connections)
    ]
    start = time.process_time()
    async with trio.open_nursery() as nursery:
        for client in clients:
            nursery.start_soon(HttpConnection(client, ctx, b"127.0.0.1").serve)  # type: ignore[arg-type]
    took = time.process_time() - start
    answered = sum(c.sent for c in clients)
    assert answered == requests // connections * connections, answered
    if trap_every:  # every asked-for trap was one (a 500), and only those
        traps = sum(fs.wasm_trap for fs in ctx.registry.filters.values())
        assert traps == requests // connections // trap_every * connections, traps
    if rollout:  # every request was counted for the rollout's judge
        assert ctx.registry.routes["web", "main", "c"].upstream_rq_xx[2] == answered
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--resilience", action="store_true", help="breaker and outlier detection")
    parser.add_argument("--fault-percent", type=float, default=None)
    parser.add_argument("--rollout", action="store_true", help="the route watched by a rollout")
    parser.add_argument("--filters", action="store_true", help="each of FILTERS, side by side")
    parser.add_argument("--filter", choices=sorted(FILTERS), help="one of FILTERS alone")
    parser.add_argument(
        "--trap-every", type=int, default=0, help="wasm-faults: every Nth request traps"
    )
    args = parser.parse_args()
    sys.path.insert(0, str(args.tree))
    if args.filters or args.filter:
        names = list(FILTERS) if args.filters else [args.filter]
        figures = {}
        for name in names:
            took = trio.run(
                serve_all,
                args.requests,
                args.connections,
                args.resilience,
                args.fault_percent,
                args.rollout,
                FILTERS[name],
                args.trap_every if name == "wasm-faults" else 0,
            )
            figures[name] = took / args.requests * 1e6
        for name, us in figures.items():
            extra = (
                f" (+{us - figures['none']:.2f})" if "none" in figures and name != "none" else ""
            )
            print(f"{name:24} {us:8.2f} us CPU per request{extra}")
        return
    took = trio.run(
        serve_all,
        args.requests,
        args.connections,
        args.resilience,
        args.fault_percent,
        args.rollout,
    )
    print(f"{took / args.requests * 1e6:.2f} us CPU per request (no sockets)")


if __name__ == "__main__":
    main()
