"""``triogate ctl`` against a real admin API: tables for answers, reasons for refusals."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import trio
import yaml
from click.testing import CliRunner, Result

from gateway.app import Gateway
from tests.admin.admin_support import AdminSetup
from tests.conftest import StartCheckedUpstream, StartGateway, simple_config, wait_until
from triogate.cli import main


async def ctl(setup: AdminSetup | Gateway, *args: str, key: str | None = None) -> Result:
    """Run ``triogate ctl ARGS`` in a thread (it blocks on HTTP; the gateway runs here)."""
    gateway = setup.gateway if isinstance(setup, AdminSetup) else setup
    env = {"TRIOGATE_API_KEY": key} if key else {}
    argv = ["ctl", "--admin", f"http://{gateway.admin_address}", *args]
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


# -- triogate ctl rollout ------------------------------------------------------------------

#: a UTC timestamp as ``ctl rollout get`` prints it
UTC_SECONDS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def rows_of(output: str, header: str) -> list[list[str]]:
    """The rows of the table whose first header cell is ``header``, split on spaces."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 1 :]:
        if not line or line.startswith("config version"):
            break
        rows.append(line.split())
    return rows


def rollout_state(gateway: Gateway, name: str) -> tuple[str, int, int]:
    rollout = gateway.control.config.rollout(name)
    assert rollout is not None
    return rollout.status.state, rollout.status.step, rollout.status.weight


async def test_rollout_commands_move_it_as_its_state_allows(setup: AdminSetup) -> None:
    result = await ctl(
        setup,
        *("rollout", "start", "shop", "--listener", "web", "--route", "main"),
        *("--stable", "a", "--canary", "b", "--steps", "10,50,100", "--dwell", "60"),
        *("--max-error-rate", "0.05", "--max-p99-ms", "500", "--min-requests", "20"),
    )
    assert result.exit_code == 0, result.output
    assert result.output == "started shop: running at step 1/3, canary b at 10% (version 2)\n"
    route = setup.gateway.control.config.listeners[0].routes[0]
    assert [(wc.cluster, wc.weight) for wc in route.split] == [("a", 90), ("b", 10)]
    rollout = setup.gateway.control.config.rollout("shop")
    assert rollout is not None and rollout.gates.max_p99_ms == 500 and rollout.interval == 5

    result = await ctl(setup, "rollout", "list")
    assert result.exit_code == 0, result.output
    header, *rows = result.output.splitlines()
    assert header.split() == [
        *("NAME", "ROUTE", "STABLE", "->", "CANARY", "STATE", "STEP", "WEIGHT", "LAST", "BREACH")
    ]
    assert rows[0].split() == ["shop", "web/main", "a", "->", "b", "running", "1/3", "10%", "-"]

    result = await ctl(setup, "rollout", "get", "shop")
    assert result.exit_code == 0, result.output
    current = re.search(r"^current: +(.*)$", result.output, re.MULTILINE)
    assert current is not None, result.output
    # the step in progress: since when, and its figures once judged
    assert re.match(r"step since \S+Z, (not judged yet|judged \S+Z: 0 requests)", current[1])

    result = await ctl(setup, "rollout", "pause", "shop")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("rollout shop: paused at step 1/3, canary b at 10%")
    # a command the state refuses: the API's reason, and a non-zero exit
    result = await ctl(setup, "rollout", "pause", "shop")
    assert result.exit_code == 1
    first, hint = result.output.splitlines()
    assert first == "error: 409 Conflict: rollout 'shop' is paused: it cannot pause"
    # and what it takes instead, from the API's hint
    assert hint.startswith("hint: ") and "resume" in hint, hint
    assert rollout_state(setup.gateway, "shop") == ("paused", 0, 10)
    result = await ctl(setup, "rollout", "resume", "shop")
    assert result.exit_code == 0 and "shop: running at step 1/3" in result.output
    result = await ctl(setup, "rollout", "promote", "shop")
    assert (
        result.exit_code == 0 and "shop: succeeded at step 1/3, canary b at 100%" in result.output
    )
    result = await ctl(setup, "rollout", "abort", "shop")
    assert result.exit_code == 1 and "409" in result.output and "succeeded" in result.output
    assert rollout_state(setup.gateway, "shop") == ("succeeded", 0, 100)

    result = await ctl(setup, "rollout", "get", "shop")
    assert result.exit_code == 0, result.output
    fields = dict(line.split(":", 1) for line in result.output.split("\n\n")[0].splitlines())
    assert fields["state"].strip() == "succeeded"
    assert fields["step"].strip() == "1/3 of 10%, 50%, 100%"  # promoted from its first
    assert fields["weight"].strip() == "100% to b"
    assert fields["gates"].strip() == ("error rate <= 0.05, p99 <= 500 ms, judged from 20 requests")
    assert fields["current"].strip() == "-"  # a finished rollout has no step in progress
    history = rows_of(result.output, "AT (UTC)")
    assert [row[1:5] for row in history] == [
        ["started", "running", "1", "10%"],
        ["pause", "paused", "1", "10%"],
        ["resume", "running", "1", "10%"],
        ["promote", "succeeded", "1", "100%"],
    ]
    assert all(UTC_SECONDS.match(row[0]) for row in history), history

    result = await ctl(setup, "--json", "rollout", "get", "shop")
    assert result.exit_code == 0, result.output
    view = json.loads(result.output)
    assert (view["state"], view["weight"], view["breach"]) == ("succeeded", 100, None)
    result = await ctl(setup, "--json", "rollout", "list")
    assert [v["name"] for v in json.loads(result.output)] == ["shop"]

    result = await ctl(setup, "rollout", "delete", "shop")
    assert result.exit_code == 0 and "deleted rollout shop" in result.output
    assert setup.gateway.control.config.rollouts == ()
    route = setup.gateway.control.config.listeners[0].routes[0]
    assert [(wc.cluster, wc.weight) for wc in route.split] == [("a", 0), ("b", 100)]
    for command in ("get", "delete", "resume"):
        result = await ctl(setup, "rollout", command, "shop")
        assert result.exit_code == 1, (command, result.output)
        assert "404" in result.output and "no rollout named 'shop'" in result.output


async def test_rollout_start_refusals_name_the_fields(setup: AdminSetup, tmp_path: Path) -> None:
    # the spec's own fields first (each by its path), then what it names in the config
    result = await ctl(
        setup,
        *("rollout", "start", "bad", "--listener", "web", "--route", "main"),
        *("--stable", "a", "--canary", "b", "--max-error-rate", "2"),
    )
    assert result.exit_code == 1
    assert result.output.startswith(
        "error: 422: the change was refused:\n"
        "  rollouts[0].gates.max_error_rate: must be a number in [0, 1], not 2.0\n"
        "hint: fix each field"
    )
    result = await ctl(
        setup,
        *("rollout", "start", "bad", "--listener", "web", "--route", "main"),
        *("--stable", "a", "--canary", "b", "--steps", "50,20"),
    )
    assert result.exit_code == 1
    assert "rollouts[0].steps: must be increasing percents 1-100" in result.output
    result = await ctl(
        setup,
        *("rollout", "start", "bad", "--listener", "web", "--route", "main"),
        *("--stable", "a", "--canary", "ghost"),
    )
    assert result.exit_code == 1
    assert "rollouts[0].canary: unknown cluster 'ghost'" in result.output
    result = await ctl(
        setup, "rollout", "start", "bad", "--listener", "web", "--route", "main", "--stable", "a"
    )
    assert result.exit_code == 2 and "missing --canary (or give --file)" in result.output
    result = await ctl(setup, "rollout", "start", "bad", *("--steps", "5,x"))
    assert result.exit_code == 2 and "'5,x' is not percents" in result.output
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: shop\nlistener: web\nroute: main\nstable: a\ncanary: c\n"
        "steps: [20, 100]\ngates: {min_requests: 7}\n"
    )
    result = await ctl(setup, "rollout", "start", "other", "--file", str(spec))
    assert result.exit_code == 2 and "either --file or NAME" in result.output
    assert setup.gateway.control.version == 1  # nothing was sent

    result = await ctl(setup, "rollout", "start", "--file", str(spec))
    assert result.exit_code == 0, result.output
    assert "started shop: running at step 1/2, canary c at 20%" in result.output
    rollout = setup.gateway.control.config.rollout("shop")
    assert rollout is not None and rollout.gates.min_requests == 7
    as_json = tmp_path / "spec.json"
    as_json.write_text(json.dumps({**yaml.safe_load(spec.read_text()), "canary": "b"}))
    result = await ctl(setup, "rollout", "start", "--file", str(as_json))
    assert result.exit_code == 1 and "409" in result.output, result.output
    assert setup.gateway.control.config.rollout("shop") == rollout


async def test_rollout_walks_its_steps_and_get_shows_each(setup: AdminSetup) -> None:
    result = await ctl(
        setup,
        *("rollout", "start", "walk", "--listener", "web", "--route", "main"),
        *("--stable", "a", "--canary", "b", "--steps", "50,100"),
        *("--dwell", "0.3", "--interval", "0.1", "--min-requests", "5"),
    )
    assert result.exit_code == 0, result.output

    async def succeeded() -> bool:
        for _ in range(5):
            assert (await setup.web.get("/")).status_code == 200
        return rollout_state(setup.gateway, "walk")[0] == "succeeded"

    await wait_until(succeeded, within=20)
    result = await ctl(setup, "rollout", "get", "walk")
    assert result.exit_code == 0, result.output
    assert [row[1:5] for row in rows_of(result.output, "AT (UTC)")] == [
        ["started", "running", "1", "50%"],
        ["step_passed", "running", "2", "100%"],
        ["last_step_passed", "succeeded", "2", "100%"],
    ]


async def test_a_breached_gate_shows_in_list_and_get(
    start_gateway: StartGateway, start_checked_upstream: StartCheckedUpstream
) -> None:
    stable, canary = await start_checked_upstream("v1"), await start_checked_upstream("v2")
    canary.failing = True
    gateway = await start_gateway(
        simple_config(
            {"v1": [stable.address], "v2": [canary.address]},
            routes=[{"name": "main", "match": {"prefix": "/"}, "cluster": "v1"}],
        ),
        admin=True,
    )
    result = await ctl(
        gateway,
        *("rollout", "start", "bad-canary", "--listener", "web", "--route", "main"),
        *("--stable", "v1", "--canary", "v2", "--steps", "50,100"),
        *("--dwell", "60", "--interval", "0.1", "--min-requests", "5"),
    )
    assert result.exit_code == 0, result.output
    async with httpx.AsyncClient(base_url=f"http://{gateway.listener_address('web')}") as web:

        async def rolled_back() -> bool:
            for _ in range(5):
                await web.get("/")
            return rollout_state(gateway, "bad-canary")[0] == "rolled_back"

        await wait_until(rolled_back, within=20)
    result = await ctl(gateway, "rollout", "list")
    assert result.exit_code == 0, result.output
    [row] = rows_of(result.output, "NAME")
    # every request to the canary failed: an error rate of 1 against a limit of 0.01
    assert row == [
        *("bad-canary", "web/main", "v1", "->", "v2", "rolled_back", "1/2", "0%"),
        *("max_error_rate", "1", ">", "0.01"),
    ]
    result = await ctl(gateway, "rollout", "get", "bad-canary")
    assert result.exit_code == 0, result.output
    assert "breach:   max_error_rate 1 > 0.01" in result.output
    history = rows_of(result.output, "AT (UTC)")
    assert history[-1][1:] == [
        "gate_breached",
        "rolled_back",
        "1",
        "0%",
        "max_error_rate",
        "1",
        "0.01",
    ]
