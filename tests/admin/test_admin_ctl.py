"""``triogate ctl`` against a real admin API: tables for answers, reasons for refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import trio
from click.testing import CliRunner, Result

from tests.admin.admin_support import AdminSetup
from triogate.cli import main


async def ctl(setup: AdminSetup, *args: str, key: str | None = None) -> Result:
    """Run ``triogate ctl ARGS`` in a thread (it blocks on HTTP; the gateway runs here)."""
    env = {"TRIOGATE_API_KEY": key} if key else {}
    argv = ["ctl", "--admin", f"http://{setup.gateway.admin_address}", *args]
    return await trio.to_thread.run_sync(lambda: CliRunner().invoke(main, argv, env=env))


async def test_split_and_clusters_table(setup: AdminSetup) -> None:
    result = await ctl(setup, "split", "web", "main", "a=90", "b=10")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["CLUSTER", "WEIGHT", "SHARE"]
    assert lines[1].split() == ["a", "90", "90.0%"] and lines[2].split() == ["b", "10", "10.0%"]
    assert "config version 2" in result.output
    assert setup.gateway.control.config.listeners[0].routes[0].split[1].weight == 10

    result = await ctl(setup, "clusters")
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines()]
    assert rows[0] == ["CLUSTER", "ENDPOINT", "STATE", "WEIGHT", "SERVING", "ACTIVE", "CONNS/IDLE"]
    assert rows[1][:5] == ["a", str(setup.upstreams["a"]), "active", "1", "yes"]

    result = await ctl(setup, "listeners")
    assert result.exit_code == 0 and "a=90, b=10" in result.output


async def test_endpoint_commands(setup: AdminSetup) -> None:
    b = str(setup.upstreams["b"])
    result = await ctl(setup, "add-endpoint", "a", b, "--weight", "3")
    assert result.exit_code == 0 and f"added {b} to a" in result.output
    result = await ctl(setup, "set-endpoint", "a", b, "--state", "draining")
    assert result.exit_code == 0 and "state draining, weight 3" in result.output
    result = await ctl(setup, "remove-endpoint", "a", b)
    assert result.exit_code == 0 and "(version 4)" in result.output
    assert [str(e.address) for e in setup.gateway.control.config.clusters[0].endpoints] == [
        str(setup.upstreams["a"])
    ]


async def test_refusals_are_readable(setup: AdminSetup) -> None:
    result = await ctl(setup, "split", "web", "main", "a=0", "ghost=1")
    assert result.exit_code == 1
    assert "422: the change was refused" in result.output
    assert "listeners[0].routes[0].split[1].cluster: unknown cluster 'ghost'" in result.output
    result = await ctl(setup, "split", "web", "main", "a=1", "--if-match", "7")
    assert (
        result.exit_code == 1 and "412" in result.output and "version is 1, not 7" in result.output
    )
    result = await ctl(setup, "remove-endpoint", "nope", "1.2.3.4:5")
    assert result.exit_code == 1 and "404" in result.output and "no cluster 'nope'" in result.output
    result = await ctl(setup, "split", "web", "main", "a:1")
    assert result.exit_code == 2 and "is not CLUSTER=WEIGHT" in result.output
    assert setup.gateway.control.version == 1


async def test_drain_and_config(setup: AdminSetup) -> None:
    result = await ctl(setup, "--json", "config")
    assert result.exit_code == 0 and '"version": 1' in result.output
    result = await ctl(setup, "drain", "--grace", "0.5")
    assert result.exit_code == 0 and "draining" in result.output
    assert setup.gateway.control.draining


async def test_unreachable_admin_is_a_clear_error() -> None:
    result = CliRunner().invoke(main, ["ctl", "--admin", "http://127.0.0.1:1", "clusters"])
    assert result.exit_code == 1
    assert "cannot reach the admin API at http://127.0.0.1:1" in result.output


def test_run_refuses_non_loopback_admin_without_key(tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text('admin: {address: "0.0.0.0:0"}\n')
    done = subprocess.run(
        [sys.executable, "-m", "triogate.cli", "run", str(config), "--no-state"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    assert "admin.address is not loopback" in done.stderr
