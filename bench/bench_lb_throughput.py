"""Data-path throughput with ``least_request`` against round robin and the foundation's figure.

One run, all on loopback, with ``bench/run_bench.py``'s servers, pinning and wrk:

1. starts two upstreams (Debian's nginx, or ``bench/upstream.py`` without it) pinned,
   with wrk, to the load core;
2. for each configuration, starts triogate pinned to the proxy core and measures it
   with wrk at 50 connections and at 1 (after a warm-up):

   - ``foundation``: run_bench's own config, one endpoint, the default ``round_robin``
     (the figure the foundation reported);
   - ``round_robin``: the two endpoints, ``round_robin``;
   - ``least_request``: the two endpoints, ``least_request`` (power of two choices);

3. prints requests/s (best and median over the rounds) and p50, and each
   configuration's throughput over the foundation's at 50 connections, measured in the
   same run. ``--rounds N`` repeats the three in turn, so drift of the machine shows as
   spread, not as a difference; on a machine shared with other work, read the best.

Run: ``.venv/bin/python bench/bench_lb_throughput.py [--duration 10] [--quick] [--rounds 1]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from run_bench import (
    CorePlan,
    Measurement,
    Servers,
    TargetUnavailable,
    bench_workspace,
    find_wrk,  # bench/ is the script's directory, so on sys.path
    free_port,
    measure,
    render_config,
    start_upstream,
    triogate_command,
)

CONFIGS = ("foundation", "round_robin", "least_request")

TWO_ENDPOINTS = """\
admin: {{address: 127.0.0.1:0}}
listeners:
  - name: bench
    address: 127.0.0.1:{port}
    routes:
      - match: {{prefix: /}}
        cluster: upstream
clusters:
  - name: upstream
    lb_policy: {policy}
    endpoints:
      - {{address: 127.0.0.1:{up1}}}
      - {{address: 127.0.0.1:{up2}}}
"""


def start_triogate(
    servers: Servers,
    tmp: Path,
    name: str,
    upstream_ports: tuple[int, int],
    cpus: frozenset[int] | None,
) -> int:
    port = free_port()
    if name == "foundation":
        path = render_config("triogate.yaml", tmp, port=port, upstream_port=upstream_ports[0])
    else:
        path = tmp / f"triogate-{name}.yaml"
        up1, up2 = upstream_ports
        path.write_text(TWO_ENDPOINTS.format(port=port, policy=name, up1=up1, up2=up2))
    argv = [*triogate_command(), "run", "--no-state", str(path)]
    servers.start(f"triogate-{name}", argv, port, cpus)
    return port


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--quick", action="store_true", help="3 seconds per run")
    parser.add_argument("--rounds", type=int, default=1, help="times to measure each config")
    parser.add_argument(
        "--builtin-upstream", action="store_true", help="use bench/upstream.py even with nginx"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration = 3
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = find_wrk()
    if wrk is None:
        return 1
    cores = CorePlan.for_machine()
    warmup_s = 1 if args.duration <= 3 else 2
    print(f"pinning: {cores.describe()}; load average {os.getloadavg()[0]:.2f}", flush=True)
    results: dict[str, list[Measurement]] = {name: [] for name in CONFIGS}
    with bench_workspace("triogate-lb-bench-") as (tmp, servers, script):
        ports = []
        for i in (1, 2):
            up_tmp = tmp / f"upstream{i}"
            up_tmp.mkdir()
            kind, port = start_upstream(
                servers, up_tmp, cores.load, use_nginx=not args.builtin_upstream
            )
            ports.append(port)
        print(f"upstreams: two {kind} on ports {ports[0]} and {ports[1]}", flush=True)
        for _ in range(args.rounds):
            for name in CONFIGS:
                try:
                    with Servers(tmp) as proxy:
                        port = start_triogate(proxy, tmp, name, (ports[0], ports[1]), cores.proxy)
                        results[name] += measure(
                            name,
                            port,
                            wrk=wrk,
                            script=script,
                            duration_s=args.duration,
                            warmup_s=warmup_s,
                            cpus=cores.load,
                        )
                except TargetUnavailable as exc:
                    print(f"  {name}: not available: {exc}", flush=True)
    print()
    print(format_table(results, args.duration, args.rounds))
    return 0


Pick = Callable[[list[float]], float]


def _figure(ms: list[Measurement], connections: int, attr: str, pick: Pick) -> float | None:
    values = [getattr(m, attr) for m in ms if m.connections == connections]
    return pick(values) if values else None


def format_table(results: dict[str, list[Measurement]], duration: int, rounds: int) -> str:
    """Best and median requests/s at 50 connections (best: on a shared machine other work
    only ever takes throughput away), and at 1 connection."""
    header = (
        f"{'config':<14} {'c=50 best':>10} {'vs found.':>10} {'c=50 median':>12} "
        f"{'vs found.':>10} {'c=1 median':>11} {'c=1 p50 ms':>11}"
    )
    lines = [f"{duration}s per run, {rounds} round(s)", header, "-" * len(header)]
    base_best = _figure(results["foundation"], 50, "requests_per_s", max)
    base_median = _figure(results["foundation"], 50, "requests_per_s", statistics.median)
    for name in CONFIGS:
        best = _figure(results[name], 50, "requests_per_s", max)
        median = _figure(results[name], 50, "requests_per_s", statistics.median)
        rps1 = _figure(results[name], 1, "requests_per_s", statistics.median)
        p50 = _figure(results[name], 1, "p50_ms", statistics.median)
        if best is None or median is None or rps1 is None or p50 is None:
            lines.append(f"{name:<14} not measured")
            continue
        vs_best = f"{best / base_best:.3f}x" if base_best else "n/a"
        vs_median = f"{median / base_median:.3f}x" if base_median else "n/a"
        lines.append(
            f"{name:<14} {best:>10,.0f} {vs_best:>10} {median:>12,.0f} {vs_median:>10} "
            f"{rps1:>11,.0f} {p50:>11.3f}"
        )
    lr, rr = (
        _figure(results[n], 50, "requests_per_s", max) for n in ("least_request", "round_robin")
    )
    if lr and rr:
        lines.append(f"least_request / round_robin at 50 connections (best): {lr / rr:.3f}x")
    errors = [m for ms in results.values() for m in ms if m.errors]
    for m in errors:
        lines.append(f"WARNING: {m.target} c={m.connections} had errors {m.errors}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
