"""A cluster actor's health verdicts: handed to it (a worker's, from the primary) they
build the snapshot the balancer picks from; no checks run without ``health_check``."""

from __future__ import annotations

import trio

from gateway.cluster.actor import ClusterHandle, HealthVerdicts, run_cluster
from gateway.config import Cluster, structure
from policies.health import HealthState
from tests.conftest import wait_until

A, B = "127.0.0.1:9001", "127.0.0.1:9002"


async def test_verdicts_handed_to_the_actor_steer_the_balancer(nursery: trio.Nursery) -> None:
    cluster = structure(Cluster, {"name": "api", "endpoints": [{"address": A}, {"address": B}]})
    handle = ClusterHandle(cluster)
    await nursery.start(run_cluster, handle)
    await handle.inbox.send(HealthVerdicts({A: HealthState.UNHEALTHY, B: HealthState.HEALTHY}))
    await wait_until(lambda: handle.health.get(A) is HealthState.UNHEALTHY)
    snapshot = handle.snapshot
    assert {s.key: str(s.health) for s in snapshot.all_endpoints} == {
        A: "/failed_active_hc",
        B: "healthy",
    }
    picked = {runtime.key for runtime in (snapshot.pick(1.0) for _ in range(20)) if runtime}
    assert picked == {B}
    # no health_check: the actor runs no checker, it only uses what it is given
    assert handle.checks == {}
    # every endpoint unhealthy: the balancer's panic routes to all
    await handle.inbox.send(HealthVerdicts({A: HealthState.UNHEALTHY, B: HealthState.UNHEALTHY}))
    await wait_until(lambda: handle.health.get(B) is HealthState.UNHEALTHY)
    snapshot = handle.snapshot
    picked = {runtime.key for runtime in (snapshot.pick(1.0) for _ in range(20)) if runtime}
    assert picked == {A, B}
