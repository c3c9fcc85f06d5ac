"""What stats, access logging and traceparent cost: triogate with them on against off.

One run, all on loopback, the same upstream for every variant (nginx, else
``bench/upstream.py``):

- ``baseline``: the gateway as it was before observability (the source tree of
  ``--baseline-ref``, unpacked with ``git archive`` into a temp dir): no stats, no log;
- ``stats``: this tree, access log off, ``tracing.start_traceparent`` off (the counters
  and histograms cannot be switched off: they are what the admin API reads);
- ``stats+log``: this tree, one JSON access-log line per request to a file;
- ``stats+log+trace``: the same, and a ``traceparent`` started for every request (wrk
  sends none), which is the default config.

Each variant runs as ``triogate run --no-state CONFIG`` pinned to core 0, loaded by
``wrk -t1 -c50`` pinned to core 1 (with the upstream). For every wrk run the gateway's
CPU time (utime + stime from ``/proc/PID/stat``) is read before and after, so a row shows
requests/s and microseconds of gateway CPU per request. Variants take turns for
``--rounds`` rounds (A B C D D C B A ...) so drift on the machine spreads over all of
them; the table shows each variant's median round. It asserts nothing and never runs in
CI. Other load on the machine (a test suite, another benchmark) shows as spread between
rounds: run it on an idle machine.

Run: ``.venv/bin/python bench/bench_observability.py [--duration 4] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_bench import (
    REPO_ROOT,
    CorePlan,
    Servers,
    TargetUnavailable,
    bench_workspace,
    check_answers_hello,
    find_wrk,
    free_port,
    run_wrk,
    start_haproxy,
    start_upstream,
)

CONFIG = """\
admin: {{address: "127.0.0.1:0"}}
listeners:
  - name: bench
    address: "127.0.0.1:{port}"
    routes:
      - match: {{prefix: /}}
        cluster: upstream
{extra}
clusters:
  - name: upstream
    endpoints: [{{address: "127.0.0.1:{upstream_port}"}}]
"""

TICKS_PER_S = os.sysconf("SC_CLK_TCK")

#: the name of the haproxy variant, which the report's ratio line divides by
REFERENCE = "haproxy"


@attrs.frozen
class Variant:
    name: str
    #: the source tree to run (this repository, or an unpacked older commit)
    tree: Path
    #: extra YAML lines under the listener
    listener_yaml: str
    #: extra arguments of ``triogate run`` (``--workers 2``)
    run_args: tuple[str, ...] = ()
    #: what runs: triogate from ``tree``, or haproxy (the reference; ``tree`` unused)
    program: str = "triogate"


@attrs.frozen
class Round:
    variant: str
    requests_per_s: float
    cpu_us_per_request: float
    errors: int


def _processes() -> dict[int, tuple[int, float]]:
    """Every process: pid -> (parent pid, utime + stime in seconds)."""
    found: dict[int, tuple[int, float]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # after the command name: state is field 3, ppid 4, utime 14, stime 15
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # exited meanwhile
        cpu = (int(fields[11]) + int(fields[12])) / TICKS_PER_S
        found[int(stat.parent.name)] = (int(fields[1]), cpu)
    return found


def descendants(pid: int, processes: dict[int, tuple[int, float]] | None = None) -> set[int]:
    """The live descendants of ``pid`` (a gateway's worker processes)."""
    processes = _processes() if processes is None else processes
    tree: set[int] = set()
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, _) in processes.items():
            if ppid == parent and child not in tree:
                tree.add(child)
                frontier.append(child)
    return tree


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and of its live descendants (worker processes), in seconds."""
    processes = _processes()
    return sum(processes[p][1] for p in {pid} | descendants(pid, processes) if p in processes)


def baseline_ref() -> str:
    """The commit before ``gateway/stats/`` appeared (so before observability)."""
    added = subprocess.run(
        ["git", "log", "--format=%H", "--diff-filter=A", "--", "gateway/stats/__init__.py"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if not added:
        return "HEAD"  # not committed yet: HEAD is the tree without it
    return f"{added[-1]}^"


def unpack(ref: str, into: Path) -> Path:
    """The source tree of ``ref``, unpacked with ``git archive`` (no worktree is made)."""
    archive = into / "baseline.tar"
    subprocess.run(
        ["git", "archive", "--format=tar", "-o", str(archive), ref],
        cwd=REPO_ROOT,
        check=True,
    )
    tree = into / "baseline"
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    return tree


def start_gateway(
    servers: Servers, tmp: Path, variant: Variant, upstream_port: int, cpus: frozenset[int] | None
) -> tuple[int, int]:
    """Start the variant's gateway; returns (port, pid)."""
    if variant.program == "haproxy":
        port = start_haproxy(servers, tmp, upstream_port, cpus)
        return port, servers._procs[-1][1].pid
    port = free_port()
    config = tmp / f"{variant.name}.yaml"
    config.write_text(
        CONFIG.format(port=port, upstream_port=upstream_port, extra=variant.listener_yaml)
    )
    # the tree's packages go first on sys.path (before an editable install); the CLI
    # moved from gateway/cli.py to triogate/cli.py
    cli = "triogate.cli" if (variant.tree / "triogate" / "cli.py").exists() else "gateway.cli"
    boot = f"import sys; sys.path.insert(0, {str(variant.tree)!r}); from {cli} import main; main()"
    argv = [sys.executable, "-c", boot, "run", "--no-state", *variant.run_args, str(config)]
    servers.start(variant.name, argv, port, cpus)
    proc = servers._procs[-1][1]
    return port, proc.pid


def measure_round(
    variant: Variant,
    port: int,
    pid: int,
    *,
    wrk: str,
    script: Path,
    duration: int,
    cpus: frozenset[int] | None,
) -> Round:
    before = cpu_seconds(pid)
    m = run_wrk(wrk, script, variant.name, port, 50, duration, cpus)
    used = cpu_seconds(pid) - before
    requests = m.requests_per_s * duration
    return Round(
        variant.name,
        m.requests_per_s,
        used / requests * 1e6 if requests else float("nan"),
        m.error_count,
    )


def add_round_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``run_rounds``: --duration, --rounds, --builtin-upstream."""
    parser.add_argument("--duration", type=int, default=4, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="turns per variant")
    parser.add_argument(
        "--builtin-upstream", action="store_true", help="bench/upstream.py even if nginx is there"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_round_options(parser)
    parser.add_argument(
        "--baseline-ref",
        default=None,
        help="git ref of the tree without observability (default: the commit before "
        "gateway/stats/ was added)",
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the baseline variant")
    parser.add_argument(
        "--log-path",
        default=None,
        help="where the access logs go (default: a file per variant in the run's temp dir; "
        "/dev/null separates formatting from the file system's cost)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def variants(tmp: Path) -> tuple[list[Variant], dict[str, str]]:
        found = []
        if not args.no_baseline:
            ref = args.baseline_ref or baseline_ref()
            print(f"baseline: {ref} ({describe_ref(ref)})")
            found.append(Variant("baseline", unpack(ref, tmp), ""))

        def log(name: str) -> str:
            path = args.log_path or tmp / f"{name}.access.jsonl"
            return f'    access_log: {{enabled: true, path: "{path}"}}\n'

        no_log = "    access_log: {enabled: false}\n"
        no_trace = "    tracing: {start_traceparent: false}"
        found += [
            Variant("stats", REPO_ROOT, no_log + no_trace),
            Variant("stats+log", REPO_ROOT, log("stats+log") + no_trace),
            Variant("stats+log+trace", REPO_ROOT, log("stats+log+trace")),
        ]
        return found, {v.name: "baseline" for v in found}

    return run_and_report(args, "triogate-obs-bench-", variants)


def run_and_report(
    args: argparse.Namespace,
    prefix: str,
    make_variants: Callable[[Path], tuple[list[Variant], dict[str, str]]],
    cores: CorePlan | None = None,
) -> int:
    """Run the variants ``make_variants(tmp)`` returns (with, per variant, the variant it
    is compared with) under ``add_round_options``' options, and print the report."""
    wrk = find_wrk()
    if wrk is None:
        return 1
    with bench_workspace(prefix) as (tmp, servers, script):
        variants, against = make_variants(tmp)
        rounds, running = run_rounds(
            variants,
            servers=servers,
            tmp=tmp,
            script=script,
            wrk=wrk,
            duration=args.duration,
            rounds=args.rounds,
            builtin_upstream=args.builtin_upstream,
            cores=cores,
        )
        logged = count_logged(tmp, variants)
    print(report(rounds, running, logged, against))
    if any(r.errors for r in rounds):
        print("WARNING: some runs had errors; their figures are not comparable")
    return 0


def run_rounds(
    variants: Sequence[Variant],
    *,
    servers: Servers,
    tmp: Path,
    script: Path,
    wrk: str,
    duration: int,
    rounds: int,
    builtin_upstream: bool,
    cores: CorePlan | None = None,
) -> tuple[list[Round], list[str]]:
    """Start every variant's gateway, then load them in turns; returns (rounds, names run).

    Variants take turns (A B C C B A ...) so drift on the machine spreads over all of
    them; a variant that does not start is reported and left out. ``cores``: where the
    gateways and the load run (default: ``CorePlan.for_machine()``).
    """
    cores = cores or CorePlan.for_machine()
    print(f"pinning: {cores.describe()}")
    if os.getloadavg()[0] > 0.5:
        print(f"note: load average {os.getloadavg()[0]:.2f}: figures will be noisy")
    upstream, upstream_port = start_upstream(
        servers, tmp, cores.load, use_nginx=not builtin_upstream
    )
    print(f"upstream: {upstream}; {duration}s x {rounds} rounds per variant")
    running: dict[str, tuple[int, int]] = {}
    for variant in variants:
        try:
            port, pid = start_gateway(servers, tmp, variant, upstream_port, cores.proxy)
            check_answers_hello(variant.name, port)
            run_wrk(wrk, script, variant.name, port, 50, 2, cores.load)  # warm-up
        except TargetUnavailable as exc:
            print(f"  {variant.name}: not available: {exc}")
            continue
        running[variant.name] = (port, pid)
    measured: list[Round] = []
    for i in range(rounds):
        # every other round backwards, so no variant always runs right after another
        for variant in variants if i % 2 == 0 else variants[::-1]:
            if variant.name not in running:
                continue
            port, pid = running[variant.name]
            r = measure_round(
                variant, port, pid, wrk=wrk, script=script, duration=duration, cpus=cores.load
            )
            measured.append(r)
            print(
                f"  round {i + 1} {r.variant:<16} {r.requests_per_s:>9,.0f} req/s "
                f"{r.cpu_us_per_request:>6.1f} us CPU/request  errors {r.errors}",
                flush=True,
            )
    return measured, list(running)


def count_logged(tmp: Path, variants: Sequence[Variant]) -> dict[str, int]:
    """Access log lines each variant wrote to its file in ``tmp`` (variants without one: none)."""
    return {
        v.name: sum(1 for _ in (tmp / f"{v.name}.access.jsonl").open("rb"))
        for v in variants
        if (tmp / f"{v.name}.access.jsonl").exists()
    }


def report(
    rounds: list[Round], names: list[str], logged: dict[str, int], against: dict[str, str]
) -> str:
    """Each variant's median and best round, against those of the variant ``against`` names.

    The best round is the one least disturbed by whatever else ran on the machine; on an
    idle machine median and best agree within a few percent. ``spread`` is the middle
    half of a variant's rounds (the quartiles of CPU per request, as a fraction of its
    median): two variants whose medians differ by less than that are not told apart.
    """
    by_name = {n: sorted((r for r in rounds if r.variant == n), key=_cpu) for n in names}
    median = {n: rs[len(rs) // 2] for n, rs in by_name.items() if rs}
    best = {n: rs[0] for n, rs in by_name.items() if rs}
    header = (
        f"{'variant':<20} {'req/s':>8} {'CPU us/req':>10} {'spread':>7} {'vs base':>8}   "
        f"{'best req/s':>10} {'best CPU':>8} {'vs base':>8}"
    )
    lines = ["", header, "-" * len(header)]
    for name in median:
        m, b = median[name], best[name]
        base = against.get(name, "")
        lines.append(
            f"{name:<20} {m.requests_per_s:>8,.0f} {m.cpu_us_per_request:>10.1f} "
            f"{_spread(by_name[name]):>7} {_versus(m, median.get(base)):>8}   "
            f"{b.requests_per_s:>10,.0f} {b.cpu_us_per_request:>8.1f} "
            f"{_versus(b, best.get(base)):>8}"
        )
    lines.append("")
    lines.append(
        f"{len(rounds) // max(len(names), 1)} rounds per variant; 'vs base': CPU per request "
        "against its base variant's (median against median, best against best); 'spread': "
        "half the interquartile range of the rounds, against the median"
    )
    reference = median.get(REFERENCE)
    if reference is not None:
        lines.append(
            "CPU per request against haproxy's (medians): "
            + ", ".join(
                f"{name} {m.cpu_us_per_request / reference.cpu_us_per_request:.2f}x"
                for name, m in median.items()
                if m is not reference
            )
        )
    for name, count in logged.items():
        lines.append(f"access log lines written by {name}: {count:,}")
    return "\n".join(lines)


def _cpu(r: Round) -> float:
    return r.cpu_us_per_request


def _spread(ordered: list[Round]) -> str:
    """The interquartile range of CPU per request over rounds sorted by it, as ±% of the
    median (half the range each way)."""
    n = len(ordered)
    if n < 3:
        return ""
    low, high = ordered[n // 4], ordered[-(n // 4) - 1]
    median = ordered[n // 2].cpu_us_per_request
    return f"±{(high.cpu_us_per_request - low.cpu_us_per_request) / 2 / median:.0%}"


def _versus(r: Round, base: Round | None) -> str:
    if base is None or base is r:
        return ""
    return f"{r.cpu_us_per_request / base.cpu_us_per_request - 1:+.1%}"


def describe_ref(ref: str) -> str:
    return subprocess.run(
        ["git", "log", "-1", "--format=%h %s", ref],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()


if __name__ == "__main__":
    t0 = time.monotonic()
    status = main()
    print(f"took {time.monotonic() - t0:.0f} s")
    sys.exit(status)
