"""When an endpoint is checked again: ``interval`` after traffic, ``no_traffic_interval``
without (Envoy's rule), on a clock that moves only when every task waits."""

from __future__ import annotations

import random
from itertools import pairwise

import trio
import trio.testing

from gateway.cluster.health import CheckOutcome, HealthChecked, run_endpoint_checks
from gateway.config import Address
from gateway.observe.stats import ClusterStats
from policies.health import HealthCheckConfig

CONFIG = HealthCheckConfig(interval=1.0, interval_jitter=0.0, no_traffic_interval=30.0)


async def _check_times(stats: ClusterStats | None, checks: int) -> list[float]:
    """The time of each of the first ``checks`` checks; during the third, a request
    goes through the cluster (when there are ``stats`` to count it)."""
    at: list[float] = []

    async def check(address: Address, config: HealthCheckConfig, cluster: str) -> CheckOutcome:
        at.append(trio.current_time())
        if stats is not None and len(at) == 3:
            stats.upstream_rq_xx[2] += 1
        return CheckOutcome(True, "", 0.0)

    report_tx, report_rx = trio.open_memory_channel[HealthChecked](100)
    address = Address("10.0.0.1", 80)
    rng = random.Random(1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            run_endpoint_checks, str(address), address, CONFIG, "api", report_tx, rng, stats, check
        )
        for _ in range(checks):
            await report_rx.receive()
        nursery.cancel_scope.cancel()
    return at


def _gaps(times: list[float]) -> list[float]:
    return [round(b - a, 6) for a, b in pairwise(times)]


async def test_traffic_shortens_the_wait_to_the_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    times = await _check_times(ClusterStats("api"), 6)
    # no traffic before the second and third checks; the request during the third makes
    # the fourth come an interval later; none after it: the no-traffic interval again
    assert _gaps(times) == [30.0, 30.0, 1.0, 30.0, 30.0]


async def test_without_stats_every_check_is_an_interval_apart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    assert _gaps(await _check_times(None, 4)) == [1.0, 1.0, 1.0]
