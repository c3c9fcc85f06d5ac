"""Outlier detection with worker processes: the workers' attempts reach the primary's
detector in their stats reports, and its ejections reach every worker
(``HealthPublished``), so no worker sends an ejected endpoint a request."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from gateway.config import Address
from tests.conftest import (
    StartCheckedUpstream,
    admin_json,
    fresh_requests,
    gateway_process,
    simple_config,
    wait_until,
)


async def _send(web: Address, count: int) -> Counter[str]:
    """``count`` requests, ten at a time, each on a fresh connection; who answered each
    200, or the status."""
    return Counter(
        r.headers["x-upstream"] if r.status_code == 200 else str(r.status_code)
        for r in await fresh_requests(web, count)
    )


async def test_an_endpoint_ejected_by_the_primary_gets_nothing_from_any_worker(
    start_checked_upstream: StartCheckedUpstream, tmp_path: Path
) -> None:
    u1, u2, u3 = [await start_checked_upstream(n) for n in ("u1", "u2", "u3")]
    data = simple_config({"api": [u.address for u in (u1, u2, u3)]})
    data["clusters"][0]["outlier_detection"] = {
        "consecutive_5xx": 3,
        "consecutive_gateway_failure": 0,
        "interval": 60,
        "base_ejection_time": 60,
        "max_ejection_percent": 34,
    }
    config = tmp_path / "gw.json"
    config.write_text(json.dumps(data))
    async with gateway_process(config, workers=2) as gateway:
        web, admin = gateway.listeners["web"], gateway.admin
        u2.failing = True

        async def ejected() -> bool:
            await _send(web, 10)
            view = await admin_json(admin, "/clusters/api/health")
            return [e["address"] for e in view["endpoints"] if e["ejection"]["ejected"]] == [
                str(u2.address)
            ]

        await wait_until(ejected, within=15)
        events = (await admin_json(admin, "/events?cluster=api"))["events"]
        assert [(e["endpoint"], e["new"], e["reason"]) for e in events] == [
            (str(u2.address), "ejected", "consecutive_5xx")
        ]

        # both workers have it ejected: many fresh connections, spread over both, and
        # none reaches u2 (the ejection may still be on its way to a worker: wait for a
        # clean batch first)
        async def clean() -> bool:
            return set(await _send(web, 20)) <= {"u1", "u3"}

        await wait_until(clean, within=10)
        before = len(u2.received)
        shares = [w["downstream_rq_total"] for w in await admin_json(admin, "/stats/workers")]
        served = await _send(web, 200)
        assert set(served) == {"u1", "u3"} and sum(served.values()) == 200
        assert len(u2.received) == before
        after = [w["downstream_rq_total"] for w in await admin_json(admin, "/stats/workers")]
        assert all(n > m for n, m in zip(after, shares, strict=True)), (shares, after)

        # the detector's stats are the primary's own; the flag shows in /stats/clusters
        stats = await admin_json(admin, "/stats")
        assert stats["gauges"]["cluster.api.outlier_detection.ejections_active"] == 1
        assert stats["counters"]["cluster.api.outlier_detection.ejections_enforced_total"] == 1
        clusters = await admin_json(admin, "/stats/clusters")
        flags = {e["address"]: e["health_flags"] for e in clusters["api"]["endpoints"]}
        assert flags[str(u2.address)] == ["failed_outlier_check"]
