"""``triogate demo``: every command its banner prints works as printed, and the tour
reports what it changed.

Both run the demo as a user does, a process of its own on free ports (``--port 0``...),
and read what it prints.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from triogate.demo import DemoPorts, taken_ports

ANY_PORTS = [
    "--port",
    "0",
    "--tls-port",
    "0",
    "--tcp-port",
    "0",
    "--admin-port",
    "0",
    "--toxiproxy-port",
    "0",
]

#: what each banner command prints, in the banner's order (a command's output must
#: match its pattern): the answers show each command did what its comment says
EXPECTED = [
    ("curl -s http://", r'"upstream": "v[12]"'),
    ("split web shop v1=50 v2=50", r"v2\s+50\s+50.0%"),
    ("rollout start --file", r"started canary: running at step 1/3, canary v2 at 25%"),
    ("rollout get canary", r"route:\s+web/shop"),
    ("faults/v2-errors", r'"percent":50.0'),
    ("--cacert", r'"upstream": "api-[12]"'),
    ("time_total", r"^0\.[2-9]\d* s$"),
    ("/proxies/db/toxics/latency_downstream", r"^$"),
    ("clusters", r"db-upstream\s+127\.0\.0\.1:\d+\s+active"),
]


def _triogate() -> list[str]:
    """The ``triogate`` script beside this Python (as a user runs it), else ``-m``."""
    script = Path(sys.executable).parent / "triogate"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "triogate.cli"]


@pytest.fixture
def demo() -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """A running ``triogate demo`` and its banner's lines."""
    process = subprocess.Popen(
        [*_triogate(), "demo", *ANY_PORTS],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if line.startswith("Ctrl-C stops it"):
            break
    try:
        yield process, lines
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()


def banner_commands(lines: list[str]) -> list[str]:
    """The commands under ``try:`` (comment lines left out)."""
    start = lines.index("try:") + 1
    end = lines.index("", start)
    return [line.strip() for line in lines[start:end] if not line.strip().startswith("#")]


@pytest.mark.skipif(shutil.which("curl") is None, reason="the banner's commands use curl")
def test_every_banner_command_works_as_printed(
    demo: tuple[subprocess.Popen[str], list[str]],
) -> None:
    process, lines = demo
    assert lines[0].startswith("triogate demo: 5 built-in upstreams"), lines
    assert re.fullmatch(r"  dashboard  http://127\.0\.0\.1:\d+/dashboard", lines[1]), lines
    commands = banner_commands(lines)
    assert len(commands) == len(EXPECTED), commands
    for command, (marker, pattern) in zip(commands, EXPECTED, strict=True):
        assert marker in command, (marker, command)
        done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, (command, done.stdout, done.stderr)
        assert re.search(pattern, done.stdout.strip(), re.MULTILINE), (command, done.stdout)
    # the dashboard the banner leads with answers
    dashboard = lines[1].split()[-1]
    page = subprocess.run(["curl", "-sf", dashboard], capture_output=True, text=True, timeout=30)
    assert page.returncode == 0 and "<html" in page.stdout.lower()
    # Ctrl-C stops it cleanly, and its files (the CA, the config) go with it
    directory = Path(lines[2].split()[-1]).parent
    assert (directory / "ca.pem").exists()
    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 0
    assert not directory.exists()


def test_the_tour_reports_what_changed() -> None:
    done = subprocess.run(
        [*_triogate(), "demo", "--tour", *ANY_PORTS],
        capture_output=True,
        text=True,
        timeout=60,  # the tour's promise: under a minute
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    # the split moved by hand, and by the rollout step by step
    assert re.search(r'split moved: now \{"v1": 50, "v2": 50\}', out), out
    assert re.search(r"split moved: v2 at 50% \(step 2, running\)", out), out
    assert "rollout canary succeeded: v2 at 100%" in out, out
    # the fault answered and counted, and the gate that saw it rolled the canary back
    aborts = re.search(r"fault counted: listener\.web\.fault\.aborts_injected (\d+) -> (\d+)", out)
    assert aborts is not None and int(aborts[2]) > int(aborts[1]), out
    assert "rollout canary rolled_back: gate max_error_rate breached" in out, out
    # the killed upstream's endpoint ejected, its requests retried elsewhere
    assert "answered: api-1 10 (connect failures on api-2 retried on api-1)" in out, out
    assert "api-2 ejected by outlier detection (consecutive_gateway_failure)" in out, out
    # the toxic's latency, then gone
    slow = re.search(r"(\d+) ms through the tcp proxy db", out)
    fast = re.search(r"toxic removed through Toxiproxy's API: (\d+) ms now", out)
    assert slow is not None and fast is not None, out
    assert int(slow[1]) >= 200 > int(fast[1]), out
    assert "TLS from the demo's CA: 200 from api-1" in out, out


def test_a_taken_port_is_refused_naming_its_option() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert taken_ports(DemoPorts(web=0, edge=port, db=0, admin=0, toxiproxy=0)) == [
            f"{port} (--tls-port)"
        ]
        done = subprocess.run(
            [*_triogate(), "demo", *ANY_PORTS, "--tls-port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 1
    assert f"port {port} (--tls-port) taken: pass another port, or 0" in done.stderr
    assert done.stdout == ""
