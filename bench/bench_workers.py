"""What worker processes cost and give: requests/s and CPU per request per worker count.

The method of ``bench_observability.py`` (whose functions this reuses): one upstream
(nginx, else ``bench/upstream.py``), one gateway per worker count (``triogate run
--workers N``, this tree, default listener config), each loaded in turn by ``wrk -t1
-c50`` for ``--rounds`` interleaved rounds. CPU per request is the utime + stime of the
whole process tree (the primary and its workers) over each wrk run, divided by the
requests served.

Two questions, two ways to run it:

- **Does a worker add cost per request?** Pin every gateway to the same cores as one
  worker count's (default on this 2-core machine: the proxy's core 0, wrk and the
  upstream on core 1). With N workers sharing one core, CPU per request should stay
  within a few percent of one worker: nothing crosses a process per request, and
  only the primary's once-a-second stats pull is added. Requests/s are then the same
  core's, so they say nothing about scaling. A few percent is below what one run can
  tell on a shared machine: ``--aa`` adds a second gateway with the first worker count,
  compared with the first like the others (an A/A pair: its difference is the noise
  floor), and the report's ``spread`` column shows how far the rounds scatter. Take
  many longer rounds: ``--rounds 9 --duration 5 --aa``.
- **How far does it scale?** On a machine with more cores, ``--proxy-cores K`` gives
  the gateways K cores (wrk and the upstream get the rest): requests/s per worker count
  then show the scaling, with CPU per request beside it.

It asserts nothing and never runs in CI; run it on an otherwise idle machine.

``--kill`` measures something else: two workers under ``wrk -c50``, one SIGKILLed
halfway through; it prints the requests served and wrk's errors (the connections the
dead worker held) and the workers' pids before and after (the primary starts a new one).

Run: ``.venv/bin/python bench/bench_workers.py [--workers 1 2] [--proxy-cores 1]
[--duration 4] [--rounds 3] [--aa]``, or ``... --kill [--duration 6]``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_observability import (
    Variant,
    add_round_options,
    descendants,
    run_and_report,
    start_gateway,
)
from run_bench import (
    REPO_ROOT,
    CorePlan,
    Measurement,
    bench_workspace,
    check_answers_hello,
    find_wrk,
    run_wrk,
    start_upstream,
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_round_options(parser)
    parser.add_argument(
        "--workers",
        nargs="+",
        default=["1", "2"],
        help="worker counts, one gateway each (default: 1 2; 'auto' is one per core)",
    )
    parser.add_argument(
        "--proxy-cores",
        type=int,
        default=1,
        help="cores the gateways are pinned to; wrk and the upstream get the others",
    )
    parser.add_argument(
        "--aa",
        action="store_true",
        help="a second gateway with the first worker count: the noise floor (A/A)",
    )
    parser.add_argument(
        "--kill",
        action="store_true",
        help="instead: SIGKILL one of two workers halfway through a wrk run, report the cost",
    )
    return parser.parse_args(argv)


def core_plan(proxy_cores: int) -> CorePlan:
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) <= proxy_cores:
        return CorePlan(proxy=None, load=None)
    return CorePlan(proxy=frozenset(cores[:proxy_cores]), load=frozenset(cores[proxy_cores:]))


def kill_one_under_load(args: argparse.Namespace, cores: CorePlan) -> int:
    """Two workers under wrk; worker 0 is SIGKILLed halfway: what did that cost?"""
    wrk = find_wrk()
    if wrk is None:
        return 1
    with bench_workspace("triogate-workers-kill-") as (tmp, servers, script):
        _, upstream_port = start_upstream(
            servers, tmp, cores.load, use_nginx=not args.builtin_upstream
        )
        variant = Variant("workers=2", REPO_ROOT, "", ("--workers", "2"))
        port, pid = start_gateway(servers, tmp, variant, upstream_port, cores.proxy)
        check_answers_hello(variant.name, port)
        before = descendants(pid)
        result: list[Measurement] = []
        load = threading.Thread(
            target=lambda: result.append(
                run_wrk(wrk, script, "kill", port, 50, args.duration, cores.load)
            )
        )
        load.start()
        time.sleep(args.duration / 2)
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        load.join()
        after = descendants(pid)
    [m] = result
    requests = m.requests_per_s * args.duration
    print(
        f"\nworker pid {victim} SIGKILLed halfway through {args.duration} s of wrk -c50 on "
        f"2 workers: {requests:,.0f} requests, {m.error_count} errors {m.errors or ''}; "
        f"workers after: {sorted(after)} (started again: {sorted(after - before)})"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.kill:
        return kill_one_under_load(args, core_plan(args.proxy_cores))

    def variants(tmp: Path) -> tuple[list[Variant], dict[str, str]]:
        found = [Variant(f"workers={n}", REPO_ROOT, "", ("--workers", n)) for n in args.workers]
        if args.aa:
            n = args.workers[0]
            found.insert(1, Variant(f"workers={n} again", REPO_ROOT, "", ("--workers", n)))
        first = found[0].name
        return found, {v.name: first for v in found if v.name != first}

    return run_and_report(
        args, "triogate-workers-bench-", variants, cores=core_plan(args.proxy_cores)
    )


if __name__ == "__main__":
    sys.exit(main())
