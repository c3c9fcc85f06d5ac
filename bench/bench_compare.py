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
  started for every request (wrk sends none);
- ``fault0``: one HTTP fault on the listener at 0 percent (every request is decided and
  none is faulted). A tree before faults cannot run it, so it runs on this tree only and
  is compared with ``this plain`` (which then runs too).

With ``--haproxy``, haproxy (one thread, ``bench/configs/haproxy.cfg``) takes its turns
too, measured the same way, and the report ends with each variant's CPU per request as
a multiple of haproxy's.

The noise floor: ``--baseline-ref HEAD`` on a clean tree compares this tree with itself
(an A/A run); a difference smaller than what that shows, or than the ``spread`` column,
is not a measured change. On a shared machine use more rounds (``--rounds 9``).

It asserts nothing and never runs in CI; run it on an otherwise idle machine.

Run: ``.venv/bin/python bench/bench_compare.py --baseline-ref REF [--duration 4] [--rounds 3]
[--haproxy]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_observability import (
    REFERENCE,
    Variant,
    add_round_options,
    describe_ref,
    run_and_report,
    unpack,
)
from run_bench import REPO_ROOT

#: config name -> listener YAML (``{log}`` is the variant's access log file)
CONFIGS = {
    "plain": "",
    "log+trace": '    access_log: {{enabled: true, path: "{log}"}}\n'
    + "    tracing: {{start_traceparent: true}}",
    # (unindented: a top-level key of the config, after the listener)
    "fault0": "faults: [{{name: f, listener: bench, percent: 0, abort: {{status: 503}}}}]",
}
#: configs only this tree runs -> the config of this tree they are compared with
THIS_ONLY = {"fault0": "plain"}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-ref", required=True, help="git ref of the tree to compare with")
    add_round_options(parser)
    parser.add_argument(
        "--config",
        action="append",
        choices=sorted(CONFIGS),
        help="the configs to run (repeatable; default: all)",
    )
    parser.add_argument(
        "--haproxy", action="store_true", help="haproxy takes turns too: the ratio to it"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def variants(tmp: Path) -> tuple[list[Variant], dict[str, str]]:
        print(f"base: {args.baseline_ref} ({describe_ref(args.baseline_ref)})")
        base_tree = unpack(args.baseline_ref, tmp)
        found: list[Variant] = []
        against: dict[str, str] = {}
        configs = args.config or list(CONFIGS)
        configs += [c for only, c in THIS_ONLY.items() if only in configs and c not in configs]
        for config in configs:
            for side, tree in (("base", base_tree), ("this", REPO_ROOT)):
                if side == "base" and config in THIS_ONLY:
                    continue
                name = f"{side} {config}"
                yaml = CONFIGS[config].format(log=tmp / f"{name}.access.jsonl")
                found.append(Variant(name, tree, yaml))
            against[f"this {config}"] = (
                f"this {THIS_ONLY[config]}" if config in THIS_ONLY else f"base {config}"
            )
        if args.haproxy:
            found.append(Variant(REFERENCE, REPO_ROOT, "", program="haproxy"))
        return found, against

    return run_and_report(args, "triogate-compare-bench-", variants)


if __name__ == "__main__":
    t0 = time.monotonic()
    status = main()
    print(f"took {time.monotonic() - t0:.0f} s")
    sys.exit(status)
