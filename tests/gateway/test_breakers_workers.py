"""The classic breaker with worker processes: each worker has its own (as Envoy's
circuit breakers are per worker), opened by the failures it saw; the primary's
``/clusters/{name}/health`` says how many workers reported theirs open."""

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
    """``count`` requests, ten at a time, each on a fresh connection: the status of
    each, ``open`` for the breaker's fast failures."""
    return Counter(
        "open" if "x-triogate-breaker" in r.headers else str(r.status_code)
        for r in await fresh_requests(web, count)
    )


async def test_each_worker_opens_its_breaker_and_fails_fast(
    start_checked_upstream: StartCheckedUpstream, tmp_path: Path
) -> None:
    upstream = await start_checked_upstream("u")
    data = simple_config({"api": [upstream.address]})
    data["clusters"][0]["breaker"] = {
        "minimum_requests": 4,
        "failure_rate": 50,
        "open_time": 60,
        "max_open_time": 60,
    }
    config = tmp_path / "gw.json"
    config.write_text(json.dumps(data))
    async with gateway_process(config, workers=2) as gateway:
        web, admin = gateway.listeners["web"], gateway.admin
        view = (await admin_json(admin, "/clusters/api/health"))["breaker"]
        assert view == {"per_worker": True, "state": None, "open_time": None, "open_workers": 0}
        upstream.failing = True

        async def both_open() -> bool:
            await _send(web, 10)
            view = (await admin_json(admin, "/clusters/api/health"))["breaker"]
            return bool(view["open_workers"] == 2)

        await wait_until(both_open, within=15)
        # each worker's breaker opened after at most minimum_requests of its own
        # failures, and now every request fails fast without reaching the upstream
        before = len(upstream.received)
        seen = await _send(web, 40)
        assert seen == Counter({"open": 40})
        assert len(upstream.received) == before
        stats = await admin_json(admin, "/stats?filter=breaker")
        assert stats["gauges"]["cluster.api.breaker.open"] == 2
        assert stats["counters"]["cluster.api.breaker.rq_rejected"] >= 40
