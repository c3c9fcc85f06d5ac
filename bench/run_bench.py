"""Foundation benchmark: triogate against the bare upstream and against haproxy, with wrk.

One run, all on loopback:

1. starts an upstream that answers ``GET /`` with 13 bytes (``hello, world\\n``) over
   keep-alive: Debian's nginx with a generated config, or ``bench/upstream.py`` when
   nginx is not installed;
2. starts the proxies under test in front of it: triogate (``triogate run CONFIG``) and
   haproxy as the reference (one thread, keep-alive both sides, ``http-reuse always``);
3. pins the proxy under test to one core and wrk plus the upstream to another, where the
   machine has two cores or more, so each proxy gets the same single core;
4. for each target (direct, haproxy, triogate) warms up, then runs wrk at 50 connections
   and at 1 connection and reads requests/s, p50 and p99 from a Lua ``done()`` hook;
5. prints a table, triogate's throughput as a fraction of haproxy's at 50 connections and
   the latency each proxy adds at 1 connection (its p50 minus the direct p50); ``--json``
   writes the same figures to a file.

A target whose tool is missing, or that does not start, is reported as not available and
the run goes on. Every server this script starts is killed by PID when it ends, however it
ends; every step has a deadline, so a default run takes about a minute and a half.

Run: ``.venv/bin/python bench/run_bench.py [--duration 10] [--quick] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from string import Template
from types import FrameType

import attrs

INSTALL_HINT = "apt-get install -y wrk haproxy nginx-light"
BODY = b"hello, world\n"
BENCH_DIR = Path(__file__).resolve().parent
CONFIG_DIR = BENCH_DIR / "configs"
REPO_ROOT = BENCH_DIR.parent

TARGETS = ("direct", "haproxy", "triogate")
PROXIES = ("haproxy", "triogate")
CONNECTIONS = (50, 1)
STARTUP_DEADLINE = 20.0  # seconds for a server to accept connections
STOP_GRACE = 3.0  # seconds between SIGTERM and SIGKILL
WRK_SLACK = 15.0  # seconds wrk may run past its --duration before it is killed
BUSY_LOAD = 0.5  # 1-minute load average above which the machine is not idle

# wrk calls done() once at the end; latency percentiles are in microseconds.
WRK_DONE_LUA = """\
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("TRIOGATE_BENCH %d %d %d %d %d %d %d %d %d\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""
_WRK_RESULT = re.compile(r"^TRIOGATE_BENCH ((?:\d+ ){8}\d+)$", re.MULTILINE)
# In the order done() writes them; "status" counts responses that are not 2xx or 3xx.
WRK_ERROR_KINDS = ("connect", "read", "write", "status", "timeout")


class TargetUnavailable(Exception):
    """A target could not be started or checked; the message says why."""


@attrs.frozen
class Measurement:
    """What one wrk run measured against one target."""

    target: str
    connections: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: dict[str, int]  # by kind, for the kinds wrk counted at least once

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


@attrs.frozen
class CorePlan:
    """Which cores the proxy under test, and wrk plus the upstream, are pinned to."""

    proxy: frozenset[int] | None
    load: frozenset[int] | None

    @classmethod
    def for_machine(cls) -> CorePlan:
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < 2:
            return cls(proxy=None, load=None)
        return cls(proxy=frozenset({cores[0]}), load=frozenset({cores[1]}))

    def describe(self) -> str:
        if self.proxy is None or self.load is None:
            return "off (fewer than 2 cores available); all processes share the CPU"
        return (
            f"proxy under test on core {min(self.proxy)}, wrk and upstream on core {min(self.load)}"
        )


@attrs.frozen
class Report:
    """All figures of one run, as printed and as written by ``--json``."""

    upstream: str
    duration_s: int
    pinning: str
    measurements: tuple[Measurement, ...]
    unavailable: dict[str, str]

    def find(self, target: str, connections: int) -> Measurement | None:
        for m in self.measurements:
            if m.target == target and m.connections == connections:
                return m
        return None

    def throughput_ratio(self, proxy: str, reference: str = "haproxy") -> float | None:
        """proxy's requests/s over reference's, at 50 connections."""
        ours, theirs = self.find(proxy, 50), self.find(reference, 50)
        if ours is None or theirs is None or theirs.requests_per_s == 0:
            return None
        return ours.requests_per_s / theirs.requests_per_s

    def added_latency_ms(self, proxy: str) -> float | None:
        """proxy's p50 minus the upstream's own p50, at 1 connection."""
        ours, direct = self.find(proxy, 1), self.find("direct", 1)
        if ours is None or direct is None:
            return None
        return ours.p50_ms - direct.p50_ms

    def to_json(self) -> dict[str, object]:
        return {
            **attrs.asdict(self, recurse=True),
            "triogate_vs_haproxy_throughput_c50": self.throughput_ratio("triogate"),
            "added_latency_p50_ms_c1": {p: self.added_latency_ms(p) for p in PROXIES},
        }


# -- processes ---------------------------------------------------------------------------


def _pin_to(cpus: frozenset[int] | None) -> Callable[[], None] | None:
    """A preexec hook that pins the child (and so every process it forks) to cpus."""
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


class Servers:
    """The servers this run started; on exit each is stopped by its PID, newest first."""

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def __enter__(self) -> Servers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        while self._procs:
            _, proc = self._procs.pop()
            _stop(proc)

    def log_path(self, name: str) -> Path:
        return self._log_dir / f"{name}.log"

    def start(self, name: str, argv: Sequence[str], port: int, cpus: frozenset[int] | None) -> None:
        """Start argv in its own process group and wait until it accepts on port."""
        with self.log_path(name).open("wb") as log:
            try:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=REPO_ROOT,
                    process_group=0,
                    preexec_fn=_pin_to(cpus),
                )
            except OSError as exc:
                raise TargetUnavailable(f"{name} could not be started: {exc}") from exc
        self._procs.append((name, proc))
        deadline = time.monotonic() + STARTUP_DEADLINE
        while not _accepts(port):
            if proc.poll() is not None:
                raise TargetUnavailable(
                    f"{name} exited with status {proc.returncode}: {self.log_tail(name)}"
                )
            if time.monotonic() > deadline:
                raise TargetUnavailable(
                    f"{name} did not accept on port {port} within {STARTUP_DEADLINE:.0f}s: "
                    f"{self.log_tail(name)}"
                )
            time.sleep(0.05)

    def log_tail(self, name: str, lines: int = 5) -> str:
        text = self.log_path(name).read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:]) or "(no output)"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group that proc leads (made at start), then SIGKILL what is left."""
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=STOP_GRACE)
        # Also ends workers whose leader exited first (nginx's worker, say).
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_listening(port: int, within: float = 10.0) -> None:
    """Return once something accepts on loopback ``port``; RuntimeError after ``within`` s."""
    deadline = time.monotonic() + within
    while not _accepts(port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on {port}")
        time.sleep(0.05)


def render_config(name: str, out_dir: Path, **values: object) -> Path:
    """Fill bench/configs/NAME's ${placeholders} and write the result into out_dir."""
    path = out_dir / name
    template = Template((CONFIG_DIR / name).read_text())
    path.write_text(template.substitute({key: str(value) for key, value in values.items()}))
    return path


def free_port() -> int:
    """A port that was free a moment ago: bind port 0 and read it back."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_certificate(out_dir: Path) -> tuple[Path, Path]:
    """A trustme certificate for localhost and 127.0.0.1 written into out_dir: the chain
    (``cert.pem``) and its key (``key.pem``), for the TLS benchmarks."""
    import trustme  # a dev dependency; only the TLS benchmarks need it

    cert_file, key_file = out_dir / "cert.pem", out_dir / "key.pem"
    cert = trustme.CA().issue_cert("localhost", "127.0.0.1")
    cert.private_key_pem.write_to_path(str(key_file))
    cert_file.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    return cert_file, key_file


def check_answers_hello(name: str, port: int) -> None:
    """One plain GET through the target, so a broken proxy is not benchmarked as fast."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise TargetUnavailable(f"{name}: GET / failed: {exc!r}") from exc
    finally:
        conn.close()
    if response.status != 200 or body != BODY:
        raise TargetUnavailable(f"{name}: GET / answered {response.status} {body[:80]!r}")


# -- the three kinds of server -----------------------------------------------------------


def start_upstream(
    servers: Servers, tmp: Path, cpus: frozenset[int] | None, *, use_nginx: bool
) -> tuple[str, int]:
    """Start nginx, or the built-in upstream without it; return its name and port."""
    port = free_port()
    nginx = shutil.which("nginx") if use_nginx else None
    if nginx is not None:
        conf = render_config("nginx.conf", tmp, tmp=tmp, port=port)
        argv = [nginx, "-e", str(tmp / "nginx-error.log"), "-p", str(tmp), "-c", str(conf)]
        servers.start("nginx", argv, port, cpus)
        return "nginx", port
    if use_nginx:
        print(f"nginx not found, using bench/upstream.py (install: {INSTALL_HINT})")
    argv = [sys.executable, str(BENCH_DIR / "upstream.py"), "--port", str(port)]
    servers.start("upstream", argv, port, cpus)
    return "bench/upstream.py", port


def start_haproxy(
    servers: Servers, tmp: Path, upstream_port: int, cpus: frozenset[int] | None
) -> int:
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        raise TargetUnavailable(f"haproxy not installed ({INSTALL_HINT})")
    port = free_port()
    cfg = render_config("haproxy.cfg", tmp, port=port, upstream_port=upstream_port)
    servers.start("haproxy", [haproxy, "-db", "-f", str(cfg)], port, cpus)
    return port


def triogate_command() -> list[str]:
    """How to start triogate: the venv's console script, else ``python -m triogate.cli``."""
    if not (REPO_ROOT / "triogate" / "cli.py").exists():
        raise TargetUnavailable("triogate/cli.py does not exist")
    script = Path(sys.executable).with_name("triogate")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "triogate.cli"]


def start_triogate(
    servers: Servers,
    tmp: Path,
    upstream_port: int,
    cpus: frozenset[int] | None,
    extra_args: Sequence[str],
) -> int:
    port = free_port()
    path = render_config("triogate.yaml", tmp, port=port, upstream_port=upstream_port)
    argv = [*triogate_command(), "run", str(path), *extra_args]
    servers.start("triogate", argv, port, cpus)
    return port


# -- wrk ---------------------------------------------------------------------------------


def run_wrk(
    wrk: str,
    script: Path,
    target: str,
    port: int,
    connections: int,
    duration_s: int,
    cpus: frozenset[int] | None,
) -> Measurement:
    """One wrk run against target on port."""
    argv = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{duration_s}s",
        "--latency",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}/",
    ]
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=duration_s + WRK_SLACK,
            preexec_fn=_pin_to(cpus),
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise TargetUnavailable(f"wrk did not finish within {duration_s + WRK_SLACK:.0f}s") from exc
    found = _WRK_RESULT.search(done.stdout)
    if done.returncode != 0 or found is None:
        raise TargetUnavailable(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    requests, duration_us, p50_us, p99_us, *errors = (int(n) for n in found.group(1).split())
    return Measurement(
        target=target,
        connections=connections,
        requests_per_s=requests / (duration_us / 1e6),
        p50_ms=p50_us / 1000,
        p99_ms=p99_us / 1000,
        errors={kind: n for kind, n in zip(WRK_ERROR_KINDS, errors, strict=True) if n},
    )


def measure(
    name: str,
    port: int,
    *,
    wrk: str,
    script: Path,
    duration_s: int,
    warmup_s: int,
    cpus: frozenset[int] | None,
) -> list[Measurement]:
    """Warm the target up, then measure it at each connection count."""
    check_answers_hello(name, port)
    run_wrk(wrk, script, name, port, max(CONNECTIONS), warmup_s, cpus)
    results = []
    for connections in CONNECTIONS:
        m = run_wrk(wrk, script, name, port, connections, duration_s, cpus)
        results.append(m)
        print(
            f"  {name:<9} c={connections:<3} {m.requests_per_s:>10,.0f} req/s  "
            f"p50 {m.p50_ms:.3f} ms  errors {m.error_count}",
            flush=True,
        )
    return results


# -- report ------------------------------------------------------------------------------


def format_report(report: Report) -> str:
    header = (
        f"{'target':<10} {'conns':>5} {'requests/s':>12} {'p50 ms':>9} {'p99 ms':>9} {'errors':>7}"
    )
    lines = [
        f"upstream: {report.upstream}; {report.duration_s}s per run; pinning: {report.pinning}",
        "",
        header,
        "-" * len(header),
    ]
    for target in TARGETS:
        if target in report.unavailable:
            lines.append(f"{target:<10} {'':>5} not available: {report.unavailable[target]}")
            continue
        for m in report.measurements:
            if m.target == target:
                lines.append(
                    f"{m.target:<10} {m.connections:>5} {m.requests_per_s:>12,.0f} "
                    f"{m.p50_ms:>9.3f} {m.p99_ms:>9.3f} {m.error_count:>7}"
                )
    lines.append("")
    ratio = report.throughput_ratio("triogate")
    lines.append(
        "triogate / haproxy throughput at 50 connections: "
        + ("n/a" if ratio is None else f"{ratio:.2f}x ({ratio:.0%} of haproxy)")
    )
    for proxy in PROXIES:
        added = report.added_latency_ms(proxy)
        lines.append(
            f"{proxy} added latency at 1 connection (p50 - direct p50): "
            + ("n/a" if added is None else f"{added:+.3f} ms")
        )
    for m in report.measurements:
        if m.errors:
            kinds = ", ".join(f"{kind} {n:,}" for kind, n in m.errors.items())
            lines.append(
                f"WARNING: {m.target} at {m.connections} connections had errors ({kinds}); "
                "its figures are not comparable"
            )
    return "\n".join(lines)


# -- main --------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark triogate against the bare upstream and haproxy with wrk.",
        epilog=f"Needs Debian's wrk, haproxy and nginx: {INSTALL_HINT}",
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--quick", action="store_true", help="3 seconds per run")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write figures here")
    parser.add_argument(
        "--only",
        action="append",
        choices=TARGETS,
        metavar="TARGET",
        help=f"measure only these targets (repeatable; of {', '.join(TARGETS)})",
    )
    parser.add_argument(
        "--triogate-args",
        default=os.environ.get("TRIOGATE_BENCH_ARGS", ""),
        help="extra arguments after `triogate run CONFIG` (default: $TRIOGATE_BENCH_ARGS)",
    )
    parser.add_argument(
        "--builtin-upstream",
        action="store_true",
        help="use bench/upstream.py even when nginx is installed",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration = 3
    if args.duration < 1:
        parser.error("--duration must be at least 1 second")
    return args


@contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """Turn SIGTERM into SystemExit so the cleanup in ``finally`` blocks runs."""

    def unwind(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, unwind)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def find_wrk() -> str | None:
    """wrk's path; when it is missing, says how to install it and returns None."""
    wrk = shutil.which("wrk")
    if wrk is None:
        print(f"wrk is not installed, nothing can be measured. Install: {INSTALL_HINT}")
    return wrk


@contextmanager
def bench_workspace(prefix: str) -> Iterator[tuple[Path, Servers, Path]]:
    """A temp dir, the servers started in it (stopped on exit, SIGTERM included) and
    wrk's ``done()`` script: what every benchmark here runs inside."""
    with (
        _sigterm_unwinds(),
        tempfile.TemporaryDirectory(prefix=prefix) as tmp_name,
        Servers(Path(tmp_name)) as servers,
    ):
        tmp = Path(tmp_name)
        script = tmp / "done.lua"
        script.write_text(WRK_DONE_LUA)
        yield tmp, servers, script


def run(args: argparse.Namespace) -> Report | None:
    wrk = find_wrk()
    if wrk is None:
        return None
    wanted = tuple(args.only or TARGETS)
    cores = CorePlan.for_machine()
    warmup_s = 1 if args.duration <= 3 else 2
    budget = len(wanted) * (warmup_s + len(CONNECTIONS) * args.duration)
    print(f"pinning: {cores.describe()}")
    load_1min = os.getloadavg()[0]
    if load_1min > BUSY_LOAD:
        print(f"note: load average {load_1min:.2f}: other work is running, figures will be noisy")
    print(f"measuring {', '.join(wanted)}: about {budget}s of load", flush=True)

    measurements: list[Measurement] = []
    unavailable: dict[str, str] = {}
    with bench_workspace("triogate-bench-") as (tmp, servers, script):
        try:
            upstream, upstream_port = start_upstream(
                servers, tmp, cores.load, use_nginx=not args.builtin_upstream
            )
        except TargetUnavailable as exc:
            print(f"the upstream did not start: {exc}")
            return None
        starters: dict[str, Callable[[], int]] = {
            "direct": lambda: upstream_port,
            "haproxy": lambda: start_haproxy(servers, tmp, upstream_port, cores.proxy),
            "triogate": lambda: start_triogate(
                servers, tmp, upstream_port, cores.proxy, shlex.split(args.triogate_args)
            ),
        }
        for target in wanted:
            try:
                port = starters[target]()
                measurements += measure(
                    target,
                    port,
                    wrk=wrk,
                    script=script,
                    duration_s=args.duration,
                    warmup_s=warmup_s,
                    cpus=cores.load,
                )
            except TargetUnavailable as exc:
                unavailable[target] = str(exc)
                print(f"  {target}: not available: {exc}", flush=True)
    return Report(
        upstream=upstream,
        duration_s=args.duration,
        pinning=cores.describe(),
        measurements=tuple(measurements),
        unavailable=unavailable,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    if report is None:
        return 1
    print()
    print(format_report(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report.to_json(), indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
