"""What a proxy-wasm filter costs, without the proxy: load, one callback, one request's
context, and a trap.

* load: compile + instantiate + ``proxy_on_vm_start`` + ``proxy_on_configure``, cold
  (compiled here) and warm (the compiled module cached, as for a config change that keeps
  the ``path``), for the AssemblyScript SDK's add-header example (``tests/wasm/build``,
  ``npm ci && npm run build`` there) and a WAT no-op;
* one ``on_request_headers`` (CPU microseconds per call, ``time.process_time``, so the
  epoch ticker thread counts too): a no-op module, a module adding one header, the
  AssemblyScript example's ``on_response_headers`` (its header add), and a plain Python
  function making the same edit, in the same run;
* one request's context: ``new_http_context`` + the callback + ``delete`` (``on_done``,
  ``on_log``, ``on_delete``);
* a trap: the failing call, and the fresh instance the next request waits for;
* a callback that never returns: how long it held the thread before ``max_ms_per_call``
  interrupted it (epoch interruption, the ticker advancing every ``EPOCH_TICK_S``).

``--gateway``: the same through the gateway's config and filter chain
(``gateway.filters.wasm_adapter``): a ``wasm:`` entry's load as the config's validation
makes it (against the same config without the entry) and its publication after
(``build_chains``: the host validation loaded, found again); and each request's wall time
through a listener's chain (the request-headers hook and the request's end) with
``faults.wat`` trapping every 100th request: the requests right after a trap against the
others, and the trapping ones.

    .venv/bin/python bench/bench_wasm.py [--calls 20000] [--gateway]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import trio

from gateway.errors import FilterError, WasmTimeout, WasmTrap
from gateway.filters.api import HeaderMap
from gateway.filters.wasm import WasmFilterHost, WasmLimits, host

ROOT = Path(__file__).resolve().parent.parent
FILTERS = ROOT / "tests" / "wasm" / "filters"
AS_EXAMPLE = ROOT / "tests" / "wasm" / "build" / "add_header.wasm"
REQUEST = [(b"host", b"example.com"), (b"user-agent", b"wrk"), (b"accept", b"*/*")]


def timed(action: Callable[[], object], repeat: int) -> list[float]:
    """Wall seconds of each of ``repeat`` runs."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return times


def cpu_per_call(action: Callable[[], object], calls: int) -> float:
    """CPU microseconds per call (best of three rounds)."""
    rounds = []
    for _ in range(3):
        started = time.process_time()
        for _ in range(calls):
            action()
        rounds.append((time.process_time() - started) / calls * 1e6)
    return min(rounds)


def load(path: Path, config: bytes = b"", root_id: str = "") -> WasmFilterHost:
    return WasmFilterHost.load(path, config, root_id=root_id, limits=WasmLimits())


def cold_load(path: Path, root_id: str = "") -> WasmFilterHost:
    host._runtime().modules.clear()
    return load(path, b"bench", root_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--gateway", action="store_true", help="through config and chain only")
    parser.add_argument("--requests", type=int, default=10000, help="--gateway: requests")
    args = parser.parse_args()
    if args.gateway:
        gateway_figures(args.requests)
        return
    calls = args.calls
    have_as = AS_EXAMPLE.exists()
    if not have_as:
        print(f"({AS_EXAMPLE.relative_to(ROOT)} missing: npm ci && npm run build in tests/wasm)")

    print("\nload (ms, median of 20)            cold (compile)   warm (cached module)")
    modules = [("WAT no-op", FILTERS / "noop.wat", "")]
    if have_as:
        modules.append(("AssemblyScript add-header", AS_EXAMPLE, "add_header"))
    for name, path, root_id in modules:
        cold = statistics.median(timed(lambda p=path, r=root_id: cold_load(p, r), 20))
        warm = statistics.median(timed(lambda p=path, r=root_id: load(p, b"bench", r), 20))
        print(f"  {name:<32} {cold * 1e3:>10.2f}   {warm * 1e3:>16.2f}")

    print(f"\none callback (CPU us per call, {calls} calls, best of 3)")
    noop = load(FILTERS / "noop.wat").new_http_context()
    add = load(FILTERS / "add_header.wat").new_http_context()

    def python_filter(headers: HeaderMap, end_of_stream: bool) -> None:
        headers.add_bytes(b"x-wasm", b"1")

    rows: list[tuple[str, Callable[[], object]]] = [
        ("Python function, same header add", lambda: python_filter(HeaderMap(list(REQUEST)), True)),
        (
            "WAT no-op on_request_headers",
            lambda: noop.on_request_headers(HeaderMap(list(REQUEST)), True),
        ),
        (
            "WAT add-header on_request_headers",
            lambda: add.on_request_headers(HeaderMap(list(REQUEST)), True),
        ),
    ]
    if have_as:
        example = load(AS_EXAMPLE, b"bench", "add_header").new_http_context()
        rows.append(
            (
                "AssemblyScript example on_response_headers",
                lambda: example.on_response_headers(HeaderMap(list(REQUEST)), False),
            )
        )
    for name, action in rows:
        print(f"  {name:<44} {cpu_per_call(action, calls):>8.2f}")

    print(
        f"\none request's context (CPU us: new context + callback + delete, {calls // 4} requests)"
    )
    contexts = [("WAT no-op", load(FILTERS / "noop.wat"))]
    if have_as:
        contexts.append(("AssemblyScript add-header", load(AS_EXAMPLE, b"bench", "add_header")))
    for name, filter_host in contexts:

        def request(filter_host: WasmFilterHost = filter_host) -> None:
            context = filter_host.new_http_context()
            context.on_request_headers(HeaderMap(list(REQUEST)), True)
            context.on_response_headers(HeaderMap(list(REQUEST)), False)
            context.delete()

        print(f"  {name:<44} {cpu_per_call(request, calls // 4):>8.2f}")

    print("\na trap (ms, median of 50): the failing call, then the fresh instance")
    faults = WasmFilterHost.load(FILTERS / "faults.wat", log=lambda level, message: None)
    failing, fresh = [], []
    for _ in range(50):
        context = faults.new_http_context()
        started = time.perf_counter()
        try:
            context.on_request_headers(HeaderMap([(b"x-trap", b"1")]), True)
        except WasmTrap:
            pass
        failing.append(time.perf_counter() - started)
        context.delete()
        started = time.perf_counter()
        faults.new_http_context().delete()
        fresh.append(time.perf_counter() - started)
    print(
        f"  WAT faults.wat: trapping call {statistics.median(failing) * 1e3:.3f}, "
        f"next context (re-instantiation) {statistics.median(fresh) * 1e3:.3f}"
    )
    if have_as:
        warm = statistics.median(timed(lambda: load(AS_EXAMPLE, b"bench", "add_header"), 20))
        print(f"  AssemblyScript add-header: a fresh instance (warm load) {warm * 1e3:.3f}")

    print("\nan endless callback (ms it ran, median of 10) against max_ms_per_call")
    for limit in (5, 20, 100):
        looping = WasmFilterHost.load(
            FILTERS / "faults.wat", limits=WasmLimits(max_ms_per_call=limit)
        )
        ran = []
        for _ in range(10):
            context = looping.new_http_context()
            started = time.perf_counter()
            try:
                context.on_request_headers(HeaderMap([(b"x-loop", b"1")]), True)
            except WasmTimeout:
                ran.append(time.perf_counter() - started)
            context.delete()
        print(f"  max_ms_per_call {limit:>3}: interrupted after {statistics.median(ran) * 1e3:.1f}")


def gateway_config(filters: list[dict[str, object]]) -> dict[str, object]:
    listener = {"name": "web", "address": "127.0.0.1:0", "http_filters": filters}
    listener["routes"] = [{"name": "main", "match": {"prefix": "/"}, "cluster": "c"}]
    clusters = [{"name": "c", "endpoints": [{"address": "127.0.0.1:9"}]}]
    return {"admin": {"address": "127.0.0.1:0"}, "listeners": [listener], "clusters": clusters}


def gateway_figures(requests: int) -> None:
    from gateway.config import config_from_data
    from gateway.filters.factories import build_chains
    from gateway.http1.events import RequestReceived
    from gateway.observe.stats import StatsRegistry

    modules = [("WAT no-op", FILTERS / "noop.wat", "")]
    if AS_EXAMPLE.exists():
        modules.append(("AssemblyScript add-header", AS_EXAMPLE, "add_header"))
    plain = statistics.median(timed(lambda: config_from_data(gateway_config([])), 20))
    print("\nthrough the gateway: a config's validation with a wasm entry (ms, median of 20,")
    print(f"  less {plain * 1e3:.3f} ms for the same config without), then its publication")
    for label, path, root_id in modules:
        host._runtime().modules.clear()
        loads, publications = [], []
        for i in range(20):  # a new config string each time: a new host
            entry = {"name": "m", "wasm": {"path": str(path), "config": f"v{i}"}}
            if root_id:
                entry["wasm"]["root_id"] = root_id  # type: ignore[index]
            data = gateway_config([entry])
            started = time.perf_counter()
            config = config_from_data(data)
            loads.append(time.perf_counter() - started - plain)
            started = time.perf_counter()
            build_chains(config, StatsRegistry())
            publications.append(time.perf_counter() - started)
        print(
            f"  {label}: validation +{statistics.median(loads) * 1e3:.3f}"
            f" (the first, compiling: +{loads[0] * 1e3:.3f}),"
            f" publication {statistics.median(publications) * 1e3:.3f}"
        )

    entry = {"name": "trapper", "wasm": {"path": str(FILTERS / "faults.wat"), "config": "t"}}
    config = config_from_data(gateway_config([entry]))
    (chain,) = build_chains(config, StatsRegistry())[0].values()

    def head(trap: bool) -> RequestReceived:
        headers = list(REQUEST) + ([(b"x-trap", b"1")] if trap else [])
        return RequestReceived(b"GET", b"/", b"1.1", headers, True, 0, 0, b"example.com", 0)

    async def run() -> tuple[list[float], list[float], list[float]]:
        ordinary, after_trap, trapping = [], [], []
        for i in range(requests):
            trap = i % 100 == 99
            request = head(trap)
            started = time.perf_counter()
            filters = chain.begin(None, request, b"127.0.0.1")
            assert filters is not None
            try:
                await filters.request_headers(request, b"http")
            except FilterError:
                assert trap
            filters.done()
            took = time.perf_counter() - started
            (trapping if trap else after_trap if i % 100 == 0 and i else ordinary).append(took)
        return ordinary, after_trap, trapping

    logging.disable(logging.CRITICAL)  # the module's and the chain's line per trap
    ordinary, after_trap, trapping = trio.run(run)
    logging.disable(logging.NOTSET)
    print(f"\nrequests through a chain with faults.wat, every 100th trapping ({requests}; us)")
    for label, times in (
        ("ordinary requests", ordinary),
        ("the request right after a trap", after_trap),
        ("the trapping request (its 500 and the fresh instance)", trapping),
    ):
        print(f"  {label}: median {statistics.median(times) * 1e6:.1f}, n={len(times)}")


if __name__ == "__main__":
    main()
