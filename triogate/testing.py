"""triogate as a fault-injecting test double: the ``triogate`` pytest fixture.

Installed with the package (a ``pytest11`` entry point), so a project that depends on
triogate has the fixture without a conftest::

    def test_checkout_survives_a_slow_database(triogate):
        db = triogate.tcp_proxy("db", upstream="127.0.0.1:5432")
        db.add_toxic("latency", latency=500)
        api = triogate.http_route("api", upstream="127.0.0.1:8000")
        api.add_fault(abort={"status": 503}, first_n=2)
        ...  # the code under test talks to db.address and api.url

How it works: the first test that asks for the fixture starts one gateway for the whole
session, ``triogate run`` in a subprocess with an empty config (an admin API on a free
loopback port, no state file), and waits until it accepts. Every proxy, route, fault and
toxic is then one call to the native admin API (``tcp_proxy`` makes a cluster and a
``protocol: tcp`` listener on a free port; ``http_route`` a cluster and an http listener
of its own whose one route sends everything there; ``add_toxic`` posts to
``/listeners/{name}/toxics``; ``add_fault`` to ``/faults``). After each test the config
goes back to the empty one in one write, so the next test starts clean (its listeners
close; the gateway keeps running). The fixture talks to the gateway over HTTP with a
blocking client and the gateway runs in its own process, so it works the same in a test
that uses trio, asyncio or no event loop at all.

When a test that used the fixture fails, its report gets a ``triogate`` section: what was
injected (each proxy's toxics, each route's faults) and what the gateway counted
(faults' delays and aborts, bytes through each proxy), read before the reset.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

__all__ = ["HttpRoute", "TcpProxy", "Triogate", "start_triogate"]

EMPTY_CONFIG = {"admin": {"address": "127.0.0.1:0"}}
_ADMIN_LINE = re.compile(r"admin API: http://(\S+)/")
#: seconds the gateway may take to start accepting
START_TIMEOUT = 30.0


class TriogateError(RuntimeError):
    """The gateway refused a change (the admin API's answer is in the message)."""


class Triogate:
    """The session's gateway, as a test drives it."""

    def __init__(self, process: subprocess.Popen[str], admin: str) -> None:
        self.process = process
        #: the admin API's base URL
        self.admin_url = f"http://{admin}"
        self.client = httpx.Client(base_url=self.admin_url, timeout=30)
        self._faults = 0

    # -- what a test makes -----------------------------------------------------------

    def tcp_proxy(self, name: str, upstream: str, listen: str = "127.0.0.1:0") -> TcpProxy:
        """A TCP listener ``name`` forwarding to ``upstream`` (``host:port``)."""
        self._post("/clusters", {"name": f"{name}-upstream", "endpoints": [{"address": upstream}]})
        self._post(
            "/listeners",
            {"name": name, "address": listen, "protocol": "tcp", "cluster": f"{name}-upstream"},
        )
        return TcpProxy(self, name, self._bound(name))

    def http_route(self, name: str, upstream: str, listen: str = "127.0.0.1:0") -> HttpRoute:
        """An HTTP listener ``name`` whose one route (also ``name``) sends every request
        to ``upstream``; faults attach to that route."""
        self._post("/clusters", {"name": f"{name}-upstream", "endpoints": [{"address": upstream}]})
        route = {"name": name, "match": {"prefix": "/"}, "cluster": f"{name}-upstream"}
        self._post("/listeners", {"name": name, "address": listen, "routes": [route]})
        return HttpRoute(self, name, self._bound(name))

    def reset(self) -> None:
        """Back to the empty config: every proxy, route, fault and toxic goes."""
        # (without "admin": the running admin section is kept)
        r = self.client.put("/config", json={})
        if r.status_code != 200:
            raise TriogateError(f"reset: {r.status_code} {r.text}")

    def injected(self) -> str:
        """What is injected now and what the gateway counted, for a failure report."""
        config = self.client.get("/config").json()
        counters = self.client.get("/stats").json().get("counters", {})
        lines = []
        for lst in config.get("listeners", []):
            name = lst["name"]
            kind = "tcp proxy" if lst["protocol"] == "tcp" else "http route"
            state = "" if lst.get("enabled", True) else " (disabled)"
            lines.append(f"{kind} {name}{state}")
            for toxic in lst.get("toxics", []):
                attributes = {k: v for k, v in toxic["attributes"].items() if v}
                lines.append(
                    f"  toxic {toxic['name']}: {toxic['type']} {toxic['stream']} "
                    f"toxicity {toxic['toxicity']} {json.dumps(attributes)}"
                )
            for stat in ("downstream_cx_total", "fault.delays_injected", "fault.aborts_injected"):
                value = counters.get(f"listener.{name}.{stat}")
                if value:
                    lines.append(f"  {stat}: {value}")
        for fault in config.get("faults", []):
            given = {
                k: _given(fault[k])
                for k in ("delay", "abort", "percent", "first_n")
                if fault.get(k)
            }
            lines.append(f"fault {fault['name']} on {fault.get('listener')}: {json.dumps(given)}")
        return "\n".join(lines) or "nothing injected"

    def close(self) -> None:
        self.client.close()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    # -- inside ----------------------------------------------------------------------

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        r = self.client.post(path, json=body)
        if r.status_code not in (200, 201):
            raise TriogateError(f"POST {path}: {r.status_code} {r.text}")
        answer: dict[str, Any] = r.json()
        return answer

    def _bound(self, listener: str) -> str:
        status = self.client.get("/status").json()
        address: str = status["listeners"][listener]["address"]
        return address

    def _next_fault(self, route: str) -> str:
        self._faults += 1
        return f"{route}-fault-{self._faults}"


def _given(value: Any) -> Any:
    """A config value without the settings left at nothing (None, false, 0, empty)."""
    if isinstance(value, dict):
        return {k: _given(v) for k, v in value.items() if v}
    return value


class TcpProxy:
    """A TCP listener of the session's gateway: point the code under test at ``address``."""

    def __init__(self, gateway: Triogate, name: str, address: str) -> None:
        self.gateway = gateway
        self.name = name
        #: ``host:port`` it listens on
        self.address = address
        host, _, port = address.rpartition(":")
        self.host, self.port = host, int(port)

    def add_toxic(
        self,
        type: str,
        *,
        stream: str = "downstream",
        toxicity: float = 1.0,
        name: str | None = None,
        **attributes: Any,
    ) -> dict[str, Any]:
        """Add a toxic (Toxiproxy's types and attributes); returns it as the gateway holds it."""
        body = {
            "name": name or f"{type}_{stream}",
            "type": type,
            "stream": stream,
            "toxicity": toxicity,
            "attributes": attributes,
        }
        return self.gateway._post(f"/listeners/{self.name}/toxics", body)

    def remove_toxic(self, name: str) -> None:
        r = self.gateway.client.delete(f"/listeners/{self.name}/toxics/{name}")
        if r.status_code != 204:
            raise TriogateError(f"removing toxic {name}: {r.status_code} {r.text}")

    def disable(self) -> None:
        """Down: new connections are refused and open ones closed."""
        self._set_enabled(False)

    def enable(self) -> None:
        self._set_enabled(True)

    def _set_enabled(self, enabled: bool) -> None:
        r = self.gateway.client.patch(f"/listeners/{self.name}", json={"enabled": enabled})
        if r.status_code != 200:
            raise TriogateError(f"enabled={enabled}: {r.status_code} {r.text}")


class HttpRoute:
    """An HTTP route of the session's gateway: point the code under test at ``url``."""

    def __init__(self, gateway: Triogate, name: str, address: str) -> None:
        self.gateway = gateway
        self.name = name
        self.address = address
        self.url = f"http://{address}"

    def add_fault(self, **fault: Any) -> dict[str, Any]:
        """Add an HTTP fault on this route (the ``faults`` syntax: delay, abort, percent,
        first_n, match...); returns it as the gateway holds it."""
        body = {"name": self.gateway._next_fault(self.name), **fault}
        body |= {"listener": self.name, "route": self.name}
        return self.gateway._post("/faults", body)


def start_triogate(*, timeout: float = START_TIMEOUT) -> Triogate:
    """Start ``triogate run`` with the empty config; returns once its admin API accepts."""
    directory = Path(tempfile.mkdtemp(prefix="triogate-"))
    config = directory / "triogate.json"
    config.write_text(json.dumps(EMPTY_CONFIG))
    process = subprocess.Popen(
        [sys.executable, "-m", "triogate.cli", "run", "--no-state", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line.rstrip())
        found = _ADMIN_LINE.search(line)
        if found:
            return Triogate(process, found[1])
    process.kill()
    process.wait()
    raise TriogateError("triogate did not start: " + " | ".join(seen[-5:]))


# -- the pytest plugin -------------------------------------------------------------------


@pytest.fixture(scope="session")
def triogate_session() -> Iterator[Triogate]:
    """The session's gateway (started on first use)."""
    gateway = start_triogate()
    try:
        yield gateway
    finally:
        gateway.close()


@pytest.fixture
def triogate(triogate_session: Triogate, request: pytest.FixtureRequest) -> Iterator[Triogate]:
    """The session's gateway, clean for this test and reset after it."""
    request.node._triogate = triogate_session
    try:
        yield triogate_session
    finally:
        triogate_session.reset()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    gateway = getattr(item, "_triogate", None)
    if gateway is None or report.when != "call" or not report.failed:
        return report
    try:
        text = gateway.injected()
    except Exception as e:  # the gateway is what failed: say so instead
        text = f"could not read the gateway's state: {e!r}"
    report.sections.append(("triogate", text))
    return report
