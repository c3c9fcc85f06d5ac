"""Faults with ``--workers 2``: they reach every worker with the config, a change through
the admin API reaches them all, their stats are summed, and ``first_n`` is per worker."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.conftest import (
    StartUpstream,
    admin_json,
    fresh_requests,
    gateway_process,
    simple_config,
    worker_rows,
)


async def test_faults_reach_every_worker_and_first_n_counts_in_each(
    start_upstream: StartUpstream, tmp_path: Path
) -> None:
    upstream = await start_upstream("u1")
    data = simple_config({"api": [upstream]})
    data["faults"] = [{"name": "broken", "abort": {"status": 503}}]
    config = tmp_path / "gw.json"
    config.write_text(json.dumps(data))
    async with gateway_process(config, workers=2) as gateway:
        web, admin = gateway.listeners["web"], gateway.admin
        answers = await fresh_requests(web, 200)
        assert [r.status_code for r in answers] == [503] * 200
        shares = [w["downstream_rq_total"] for w in await worker_rows(admin)]
        assert len(shares) == 2 and all(shares)  # both workers served, both injected
        stats = await admin_json(admin, "/stats")
        assert stats["counters"]["listener.web.fault.aborts_injected"] == 200

        async with httpx.AsyncClient(base_url=f"http://{admin}", timeout=20) as api:
            r = await api.put(
                "/faults/broken",
                json={"name": "broken", "first_n": 5, "abort": {"status": 418}},
            )
            assert r.status_code == 200, r.text
        before = shares
        answers = await fresh_requests(web, 200)
        after = [w["downstream_rq_total"] for w in await worker_rows(admin)]
        served = [b - a for a, b in zip(before, after, strict=True)]
        statuses = [r.status_code for r in answers]
        # every worker has the new fault, each with its own first_n count
        assert statuses.count(418) == sum(min(5, n) for n in served)
        assert statuses.count(418) + statuses.count(200) == 200
