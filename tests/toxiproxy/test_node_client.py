"""toxiproxy-node-client (npm, pinned in package.json) against ``triogate toxiproxy``.

``node_client.js`` drives every call of the client (Toxiproxy: getVersion, createProxy,
get, getAll, populate, reset; Proxy: addToxic, getToxic, update, remove; Toxic: update,
remove) with real traffic through the proxy, and reports each call's result and each
measurement as JSON; this test checks them. ``.ci/run`` installs the client (``npm ci``
here); without node or the installed client the test is skipped, except in CI (``CI``
set), where it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.toxiproxy.conftest import ToxiproxyServer

HERE = Path(__file__).parent
NODE = shutil.which("node")

# skipped on a developer's machine without them; never in CI (.ci/run installs them)
pytestmark = pytest.mark.skipif(
    not os.environ.get("CI")
    and (NODE is None or not (HERE / "node_modules" / "toxiproxy-node-client").is_dir()),
    reason="node and toxiproxy-node-client (npm ci in tests/toxiproxy) are needed",
)


@pytest.fixture(scope="module")
def report(toxiproxy: ToxiproxyServer, echo: str) -> dict[str, Any]:
    assert NODE is not None
    done = subprocess.run(
        [NODE, str(HERE / "node_client.js"), toxiproxy.url, echo],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr
    result: dict[str, Any] = json.loads(lines[-1])
    assert "crashed" not in result, result
    return result


def test_every_call_passes(report: dict[str, Any]) -> None:
    failed = {name: result for name, result in report["calls"].items() if result != "ok"}
    assert not failed
    assert set(report["calls"]) >= {
        "getVersion",
        "createProxy",
        "get",
        "getAll",
        "populate",
        "addToxic",
        "getToxic",
        "Toxic.update",
        "Toxic.remove",
        "Proxy.update(disable)",
        "Proxy.update(enable)",
        "reset",
        "Proxy.remove",
    }


def test_shapes(report: dict[str, Any]) -> None:
    assert json.loads(report["version"])["version"].startswith("2.12.0")
    assert report["got"]["name"] == "node_db" and report["got"]["enabled"] is True
    assert report["populated"] == ["node_cache", "node_db"]
    assert report["lag"] == {
        "attributes": {"latency": 300, "jitter": 0},
        "name": "lag",
        "stream": "downstream",
        "toxicity": 1,
        "type": "latency",
    }
    assert report["updated"]["attributes"] == {"latency": 600, "jitter": 0}
    assert report["disabled"]["enabled"] is False
    assert report["disabled"]["listen"] == report["listen"]
    assert report["enabled"]["enabled"] is True
    assert report["afterReset"]["enabled"] is True
    assert report["duplicate"] == "Request failed with status code 409"
    assert report["missing"] == "Request failed with status code 404"
    assert "node_db" not in report["left"]


def test_effects(report: dict[str, Any]) -> None:
    measured = report["measured"]
    assert measured["plain"]["outcome"] == "echoed"
    assert measured["plain"]["seconds"] < 0.15
    assert measured["latency300"]["echoed"] and 0.3 <= measured["latency300"]["seconds"] < 1.3
    assert measured["latency600"]["echoed"] and 0.6 <= measured["latency600"]["seconds"] < 1.6
    assert measured["unlagged"]["seconds"] < 0.15
    # 50 000 bytes at 100 KB/s: 0.5 s
    assert measured["bandwidth"]["echoed"] and 0.35 <= measured["bandwidth"]["seconds"] < 1.5
    assert measured["reset"]["outcome"] == "ECONNRESET"
    assert (measured["limit"]["bytes"], measured["limit"]["outcome"]) == (10, "eof")
    assert measured["disabled"]["outcome"] == "ECONNREFUSED"
    assert measured["enabled"]["outcome"] == "echoed"
    assert measured["afterReset"]["outcome"] == "echoed"
    assert measured["afterReset"]["seconds"] < 0.15
