"""Active health checks with worker processes: the primary checks, every worker routes
by its verdicts (``HealthPublished`` over the worker link)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import httpx

from gateway.config import Address
from tests.conftest import (
    CheckedUpstream,
    StartCheckedUpstream,
    admin_json,
    fresh_requests,
    gateway_process,
    simple_config,
    wait_until,
    worker_rows,
)
from tests.gateway.test_health_e2e import HEALTH_CHECK


async def _verdicts(admin: Address) -> dict[str, str]:
    health = await admin_json(admin, "/clusters/api/health")
    return {e["address"]: e["verdict"] for e in health["endpoints"]}


async def _worker_shares(admin: Address) -> list[int]:
    return [w["downstream_rq_total"] for w in await worker_rows(admin)]


async def _send(web: Address, count: int) -> list[str]:
    """``count`` requests, each on a fresh connection; who answered each (all 200)."""
    answers = await fresh_requests(web, count)
    assert [r.status_code for r in answers] == [200] * count, [r.text for r in answers]
    return [r.headers["x-upstream"] for r in answers]


async def _until_only(web: Address, upstream: CheckedUpstream) -> None:
    """Until a batch of fresh connections all reach ``upstream`` (each worker has the
    verdicts that leave it the only healthy endpoint)."""

    async def only() -> bool:
        return set(await _send(web, 20)) == {upstream.name}

    await wait_until(only, within=10)


async def test_workers_route_by_the_primarys_verdicts(
    start_checked_upstream: StartCheckedUpstream, tmp_path: Path
) -> None:
    a, b = await start_checked_upstream("a"), await start_checked_upstream("b")
    data = simple_config({"api": [a.address, b.address]})
    data["clusters"][0]["health_check"] = HEALTH_CHECK
    # one of two unhealthy is below any panic
    data["clusters"][0]["lb_options"] = {"panic_threshold": 0}
    config = tmp_path / "gw.json"
    config.write_text(json.dumps(data))
    async with gateway_process(config, workers=2) as gateway:
        web, admin = gateway.listeners["web"], gateway.admin
        healthy = {str(a.address): "healthy", str(b.address): "healthy"}
        await wait_until(lambda: _verdicts(admin), within=10)
        await wait_until(lambda: _verdicts_are(admin, healthy), within=10)

        # a fails its checks but still serves: no worker may send it a request
        a.sick = True
        await wait_until(
            lambda: _verdicts_are(
                admin, {str(a.address): "/failed_active_hc", str(b.address): "healthy"}
            ),
            within=10,
        )
        await _until_only(web, b)
        before = len(a.received)
        shares = await _worker_shares(admin)
        served = await _send(web, 100)
        assert set(served) == {"b"} and len(a.received) == before
        after = await _worker_shares(admin)
        assert all(n > m for n, m in zip(after, shares, strict=True)), (shares, after)

        # a worker killed and started again is given the verdicts with its config
        [first, *_] = await worker_rows(admin)
        os.kill(first["pid"], signal.SIGKILL)

        async def restarted() -> bool:
            [again, *_] = await worker_rows(admin)
            return bool(again["restarts"] == 1 and again["pid"] != first["pid"])

        await wait_until(restarted, within=15)
        shares = await _worker_shares(admin)
        served = await _send(web, 100)
        assert set(served) == {"b"} and len(a.received) == before
        after = await _worker_shares(admin)
        assert after[0] > shares[0], (shares, after)

        # a passes again, b fails: every worker sends all its requests to a
        a.sick = False
        await wait_until(lambda: _verdicts_are(admin, healthy), within=10)
        b.sick = True
        await wait_until(
            lambda: _verdicts_are(
                admin, {str(a.address): "healthy", str(b.address): "/failed_active_hc"}
            ),
            within=10,
        )
        await _until_only(web, a)
        before_a, before_b = len(a.received), len(b.received)
        shares = await _worker_shares(admin)
        served = await _send(web, 100)
        assert set(served) == {"a"} and len(a.received) == before_a + 100
        assert len(b.received) == before_b
        # both workers served in that batch: both sent a its traffic
        after = await _worker_shares(admin)
        assert all(n > m for n, m in zip(after, shares, strict=True)), (shares, after)

        # health check stats are the primary's own (the workers' sums leave them alone)
        async with httpx.AsyncClient() as client:
            stats = (await client.get(f"http://{admin}/stats")).json()
        assert stats["counters"]["cluster.api.health_check.attempt"] > 0
        assert stats["gauges"]["cluster.api.health_check.healthy"] == 1


async def _verdicts_are(admin: Address, expected: dict[str, str]) -> bool:
    return await _verdicts(admin) == expected
