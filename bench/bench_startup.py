"""How long triogate takes from the command to accepting: what a test run pays to start it.

For each command, ``--runs`` times: start it as a subprocess with a config (or flags)
that binds port 0, read its output until it says where it accepts, and connect there
(the first successful connect ends the figure). Beside it, in the same run, the
interpreter alone (``python -c pass``) and the interpreter importing the packages
every command imports (trio, httpx): the floor no Python gateway gets under.

Commands timed: ``triogate run`` with an empty config (an admin API only: what the
``triogate`` pytest fixture starts), and ``triogate toxiproxy --port 0`` when the tree has
it. Prints the median and max per command, and the ratio of the median to the bare
interpreter's. It is not a test and never runs in CI.

Run: ``.venv/bin/python bench/bench_startup.py [--runs 10]``.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ACCEPTING = re.compile(r"(?:admin API|Toxiproxy API|API): http://(\S+?)/?\s*$")


def interpreter(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def until_accepting(argv: list[str]) -> float:
    """Seconds from starting ``argv`` to a connect to the address it prints."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            found = ACCEPTING.search(line)
            if found:
                host, _, port = found[1].rpartition(":")
                with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
                    return time.perf_counter() - start
        raise RuntimeError(f"{argv} exited without saying where it accepts")
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def commands(config: Path) -> dict[str, list[str]]:
    python = sys.executable
    out = {
        "triogate run (empty config)": [
            python,
            "-m",
            "triogate.cli",
            "run",
            "--no-state",
            str(config),
        ]
    }
    help_text = subprocess.run(
        [python, "-m", "triogate.cli", "--help"], capture_output=True, text=True
    ).stdout
    if "toxiproxy" in help_text:
        out["triogate toxiproxy"] = [python, "-m", "triogate.cli", "toxiproxy", "--port", "0"]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "empty.json"
        config.write_text(json.dumps({"admin": {"address": "127.0.0.1:0"}}))
        timed: dict[str, list[float]] = {"python -c pass": [], "python -c 'import trio, httpx'": []}
        runs = commands(config)
        timed |= {name: [] for name in runs}
        for _ in range(args.runs):  # interleaved: a busy moment hits every command alike
            timed["python -c pass"].append(interpreter("pass"))
            timed["python -c 'import trio, httpx'"].append(interpreter("import trio, httpx"))
            for name, command in runs.items():
                timed[name].append(until_accepting(command))
    floor = statistics.median(timed["python -c pass"])
    print(f"{'command':40} {'median':>9} {'max':>9} {'x python':>9}")
    for name, seconds in timed.items():
        median = statistics.median(seconds)
        print(
            f"{name:40} {median * 1000:7.0f}ms {max(seconds) * 1000:7.0f}ms {median / floor:9.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
