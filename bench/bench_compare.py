"""What a change to the data path costs: this tree against an older commit, same config.

The method of ``bench_observability.py`` (whose functions this reuses): one upstream
(nginx, else ``bench/upstream.py``), every gateway ``triogate run --no-state`` pinned to
core 0 and loaded in turn by ``wrk -t1 -c50`` on core 1, its CPU time read from
``/proc/PID/stat`` around each run, variants taking turns for ``--rounds`` rounds. Here
the variants are pairs: for each config, ``base`` (the source tree of ``--baseline-ref``,
unpacked with ``git archive``) and ``this`` (this tree), so each row of ``this`` is
compared with the ``base`` row of the same config:

- ``plain``: the listener's defaults (access log off, no traceparent started);
- ``log+trace``: a JSON access-log line per request to a file, and a ``traceparent``
  started for every request (wrk sends none).

It asserts nothing and never runs in CI; run it on an otherwise idle machine.

Run: ``.venv/bin/python bench/bench_compare.py --baseline-ref REF [--duration 4] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_observability import (
    Variant,
    count_logged,
    describe_ref,
    report,
    run_rounds,
    unpack,
)
from run_bench import REPO_ROOT, bench_workspace, find_wrk

#: config name -> listener YAML (``{log}`` is the variant's access log file)
CONFIGS = {
    "plain": "",
    "log+trace": '    access_log: {{enabled: true, path: "{log}"}}\n'
    + "    tracing: {{start_traceparent: true}}",
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-ref", required=True, help="git ref of the tree to compare with")
    parser.add_argument("--duration", type=int, default=4, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="turns per variant")
    parser.add_argument(
        "--config",
        action="append",
        choices=sorted(CONFIGS),
        help="the configs to run (repeatable; default: all)",
    )
    parser.add_argument(
        "--builtin-upstream", action="store_true", help="bench/upstream.py even if nginx is there"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = find_wrk()
    if wrk is None:
        return 1
    with bench_workspace("triogate-compare-bench-") as (tmp, servers, script):
        print(f"base: {args.baseline_ref} ({describe_ref(args.baseline_ref)})")
        base_tree = unpack(args.baseline_ref, tmp)
        variants: list[Variant] = []
        against: dict[str, str] = {}
        for config in args.config or list(CONFIGS):
            for side, tree in (("base", base_tree), ("this", REPO_ROOT)):
                name = f"{side} {config}"
                yaml = CONFIGS[config].format(log=tmp / f"{name}.access.jsonl")
                variants.append(Variant(name, tree, yaml))
            against[f"this {config}"] = f"base {config}"
        rounds, running = run_rounds(
            variants,
            servers=servers,
            tmp=tmp,
            script=script,
            wrk=wrk,
            duration=args.duration,
            rounds=args.rounds,
            builtin_upstream=args.builtin_upstream,
        )
        logged = count_logged(tmp, variants)
    print(report(rounds, running, logged, against))
    if any(r.errors for r in rounds):
        print("WARNING: some runs had errors; their figures are not comparable")
    return 0


if __name__ == "__main__":
    t0 = time.monotonic()
    status = main()
    print(f"took {time.monotonic() - t0:.0f} s")
    sys.exit(status)
