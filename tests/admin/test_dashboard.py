"""The dashboard in a real headless Chromium: it loads clean, shows the config, charts move.

The gateway runs in the test's trio loop; the browser (Debian's chromium, driven by the
``playwright`` package over the DevTools protocol, never a downloaded browser) runs in a
worker thread. Traffic starts only once the page showed the clusters with empty charts,
so the test sees the charts move because of it: the stats ticker is off (as in every
test), and the traffic ticks the registry itself, one chart point per ten requests. The
last screenshot is kept as ``artifacts/dashboard.png`` for CI.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio

from tests.admin.test_dashboard_data import start_resilient, start_rollouts
from tests.conftest import (
    ClosedAddress,
    StartCheckedUpstream,
    StartGateway,
    StartUpstream,
    simple_config,
)

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="Debian's chromium is not installed (apt-get install -y chromium; .ci/run does)",
)


#: the largest value of one series of one chart (0 when it has none yet)
CHART_MAX = """([key, series]) => {
    const chart = charts.get(key);
    if (!chart) return -1;
    const values = chart.data[series].filter((v) => v !== null);
    return values.length ? Math.max(...values) : 0;
}"""


@contextmanager
def dashboard_page(admin: str, seen: dict[str, Any]) -> Iterator[Page]:
    """The dashboard open in a headless Chromium; console and page errors go to ``seen``."""
    from playwright.sync_api import sync_playwright

    seen.update(console_errors=[], page_errors=[])
    with (
        tempfile.TemporaryDirectory(prefix="triogate-chromium-") as profile,
        sync_playwright() as p,
    ):
        browser = p.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            viewport={"width": 1400, "height": 1100},
        )
        try:
            page = browser.new_page()
            page.on(
                "console",
                lambda m: seen["console_errors"].append(m.text) if m.type == "error" else None,
            )
            page.on("pageerror", lambda e: seen["page_errors"].append(str(e)))
            page.goto(f"{admin}/dashboard")
            yield page
        finally:
            browser.close()


def browse(admin: str, start_traffic: Callable[[], None]) -> dict[str, Any]:
    """Open the dashboard, check it, start traffic, wait for the charts to move."""
    seen: dict[str, Any] = {}
    with dashboard_page(admin, seen) as page:
        for name in ("v1", "v2", "broken"):
            page.wait_for_selector(f"#cluster-{name} .chart canvas", timeout=10_000)
        page.wait_for_function("Number(document.body.dataset.polls) >= 2", timeout=10_000)
        seen["title"] = page.title()
        seen["status"] = page.inner_text("#status")
        seen["routes"] = page.inner_text("#routes tbody")
        seen["listeners"] = page.inner_text("#listeners tbody")
        seen["before"] = page.evaluate(CHART_MAX, ["v1/rps", 1])
        start_traffic()
        for key, series in (("v1/rps", 1), ("v2/rps", 1), ("broken/errors", 1)):
            page.wait_for_function(f"({CHART_MAX})({[key, series]!r}) > 0", timeout=15_000)
        page.wait_for_function(f"({CHART_MAX})({['v1/latency', 2]!r}) > 0", timeout=15_000)
        seen["after"] = page.evaluate(CHART_MAX, ["v1/rps", 1])
        seen["endpoints"] = page.inner_text("#cluster-v1 .endpoints tbody")
        seen["broken"] = page.inner_text("#cluster-broken .endpoints tbody")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    return seen


async def test_dashboard_loads_shows_clusters_and_its_charts_move(
    start_upstream: StartUpstream, start_gateway: StartGateway, closed_address: ClosedAddress
) -> None:
    a, b, c = [await start_upstream(n) for n in ("v1-a", "v1-b", "v2-a")]
    data = simple_config(
        {"v1": [a, b], "v2": [c], "broken": [closed_address()]},
        routes=[
            {"match": {"prefix": "/broken"}, "cluster": "broken"},
            {
                "match": {"prefix": "/"},
                "name": "canary",
                "split": [{"cluster": "v1", "weight": 80}, {"cluster": "v2", "weight": 20}],
            },
        ],
    )
    gw = await start_gateway(data, admin=True)
    traffic = trio.Event()
    stop = trio.Event()

    async def send_traffic() -> None:
        await traffic.wait()
        base = f"http://{gw.listener_address('web')}"
        async with httpx.AsyncClient(base_url=base) as client:
            i = 0
            while not stop.is_set():
                await client.get("/broken" if i % 5 == 0 else f"/delay/{i % 3}")
                i += 1
                if i % 10 == 0:  # a chart point per ten requests (the ticker is off)
                    gw.stats.tick(trio.current_time())

    def start_traffic() -> None:
        trio.from_thread.run_sync(traffic.set)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_traffic)
        try:
            seen = await trio.to_thread.run_sync(
                browse, f"http://{gw.admin_address}", start_traffic
            )
        finally:
            stop.set()
    assert seen["console_errors"] == [] and seen["page_errors"] == []
    assert seen["title"] == "triogate dashboard"
    assert seen["status"] == "serving"
    assert "canary" in seen["routes"] and "v1 80%" in seen["routes"] and "v2 20%" in seen["routes"]
    assert "web" in seen["listeners"]
    assert seen["before"] == 0 and seen["after"] > 0
    assert str(a) in seen["endpoints"] and "healthy" in seen["endpoints"]
    assert "0.0%" in seen["broken"]  # every attempt on the closed port failed
    png = ARTIFACTS / "dashboard.png"
    assert png.stat().st_size > 10_000


def browse_health(admin: str, rows: dict[str, str]) -> dict[str, Any]:
    """Open the dashboard once the gateway is in its state; read each row of ``rows``
    (name: ``cluster/address``) cell by cell, and each cluster's breaker badge."""
    seen: dict[str, Any] = {}
    with dashboard_page(admin, seen) as page:
        for name, where in rows.items():
            cluster, address = where.split("/")
            row = f'#cluster-{cluster} tr[data-endpoint="{address}"]'
            page.wait_for_selector(row, timeout=10_000)
            seen[name] = {
                cell: page.inner_text(f"{row} td.{cell}")
                for cell in ("verdict", "health-check", "ejection", "breaker")
            }
            seen[name]["title"] = page.get_attribute(f"{row} td.health-check", "title")
        for cluster in ("checked", "ejecting", "breaking"):
            seen[f"{cluster} badge"] = page.inner_text(f"#cluster-{cluster} .breaker-badge")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-health.png"), full_page=True)
    return seen


async def test_dashboard_shows_health_checks_ejections_and_the_breaker(
    start_gateway: StartGateway, start_checked_upstream: StartCheckedUpstream
) -> None:
    setup = await start_resilient(start_gateway, start_checked_upstream)
    rows = {
        "well": f"checked/{setup.well.address}",
        "sick": f"checked/{setup.sick.address}",
        "good": f"ejecting/{setup.good.address}",
        "failing": f"ejecting/{setup.failing.address}",
        "broken": f"breaking/{setup.broken.address}",
    }
    seen = await trio.to_thread.run_sync(
        browse_health, f"http://{setup.gateway.admin_address}", rows
    )
    assert seen.pop("console_errors") == [] and seen.pop("page_errors") == []
    assert seen["well"]["verdict"] == "healthy" and seen["well"]["health-check"] == "healthy"
    assert seen["sick"]["verdict"] == "failed_active_hc"
    assert seen["sick"]["health-check"] == "unhealthy status 503"
    assert seen["sick"]["title"].startswith("last check failed at ")
    assert seen["sick"]["ejection"] == "—"  # no outlier detection there
    assert seen["good"]["ejection"] == "no"
    assert seen["failing"]["verdict"] == "failed_outlier_check"
    assert seen["failing"]["ejection"].startswith("ejected consecutive_5xx until ")
    assert seen["failing"]["health-check"] == "—"  # no health checks there
    assert seen["broken"]["breaker"] == "open" and seen["broken"]["verdict"] == "healthy"
    assert seen["good"]["breaker"] == "—"  # no breaker there
    assert (seen["breaking badge"], seen["checked badge"], seen["ejecting badge"]) == (
        "breaker open",
        "",
        "",
    )


def browse_rollouts(admin: str, names: list[str]) -> dict[str, Any]:
    """Open the dashboard; read each rollout's row (``data-rollout``) cell by cell."""
    seen: dict[str, Any] = {}
    with dashboard_page(admin, seen) as page:
        for name in names:
            row = f'#rollouts tr[data-rollout="{name}"]'
            page.wait_for_selector(row, timeout=10_000)
            seen[name] = {
                cell: page.inner_text(f"{row} td.{cell}")
                for cell in ("state", "progress", "figures", "breach")
            }
            seen[name]["row"] = page.inner_text(row)
            seen[name]["current steps"] = page.locator(f"{row} .step.current").all_inner_texts()
            seen[name]["undone steps"] = page.locator(f"{row} .step.undone").all_inner_texts()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-rollouts.png"), full_page=True)
    return seen


async def test_dashboard_shows_each_rollout_its_state_and_weight(
    start_gateway: StartGateway, start_checked_upstream: StartCheckedUpstream
) -> None:
    setup = await start_rollouts(start_gateway, start_checked_upstream)
    seen = await trio.to_thread.run_sync(
        browse_rollouts, f"http://{setup.gateway.admin_address}", ["checkout", "payments"]
    )
    assert seen.pop("console_errors") == [] and seen.pop("page_errors") == []
    checkout, payments = seen["checkout"], seen["payments"]
    assert checkout["state"] == "paused"
    assert checkout["progress"].endswith("canary 50%")
    assert checkout["current steps"] == ["50%"]  # the second of 10%, 50%, 100%
    assert "web/main" in checkout["row"] and "v1 → v2" in checkout["row"]
    assert "/5 requests" in checkout["figures"] and "≤ 1.0%" in checkout["figures"]
    assert checkout["breach"] == "—"
    assert payments["state"] == "rolled back"
    assert payments["progress"].endswith("canary 0%")
    assert payments["undone steps"] == ["20%"] and payments["current steps"] == []
    assert payments["figures"] == "—"  # finished: no step in progress
    assert payments["breach"].startswith("max_error_rate 100.0% > 1.0% at ")
