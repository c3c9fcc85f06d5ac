"""Cluster actors: each owns one cluster's endpoints and publishes immutable snapshots.

Theory of operation: the actor is the only writer of its cluster's state. It holds an
``EndpointRuntime`` per endpoint address (the connection pool and in-flight count,
which outlive config changes), and after every change publishes a new
``ClusterSnapshot`` on its handle. The data path reads ``handle.snapshot`` directly and
picks with the snapshot's balancer (``policies.balancing``, built once per snapshot:
rings, tables, priority plan) with no message per request (STYLE.md, hot path rule).

An endpoint that leaves the cluster, or is set ``draining``/``disabled``, leaves the
snapshot at once (no new requests), while requests already sent to it finish: its pool
is put in draining mode, so each connection closes as its request ends.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

import attrs
import trio

from policies.balancing import ClusterBalancer, make_balancer
from policies.hosts import Host, HostSet

from .config import Cluster, Endpoint
from .upstream.pool import EndpointPool

log = logging.getLogger("triogate.cluster")


class EndpointRuntime:
    """The mutable, per-process side of an endpoint: its pool and live counters."""

    __slots__ = ("active", "config", "key", "pool", "ready_at")

    def __init__(self, config: Endpoint, cluster: Cluster, ready_at: float) -> None:
        self.config = config
        self.key = str(config.address)
        self.pool = EndpointPool(config.address, cluster.pool)
        #: requests in flight to this endpoint
        self.active = 0
        #: when it joined (or last became healthy): slow start ramps from here
        self.ready_at = ready_at

    def host(self) -> Host:
        ep = self.config
        return Host(
            key=self.key,
            weight=ep.weight,
            priority=ep.priority,
            locality=ep.locality,
            healthy=True,
            ready_at=self.ready_at,
        )


@attrs.frozen
class ClusterSnapshot:
    """What the data path sees of a cluster at one instant."""

    config: Cluster
    #: endpoints that take new requests
    endpoints: tuple[EndpointRuntime, ...]
    #: every endpoint still known, including draining ones (for stats and the admin API)
    all_endpoints: tuple[EndpointRuntime, ...]
    balancer: ClusterBalancer
    by_key: dict[str, EndpointRuntime]

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def uses_hash(self) -> bool:
        return self.config.lb_policy in ("ring_hash", "maglev")

    def pick(self, now: float, hash_key: int | None = None) -> EndpointRuntime | None:
        """The endpoint for one request (the balancer's choice), or None if none can serve."""
        host = self.balancer.pick(now, hash_key)
        return None if host is None else self.by_key[host.key]


@attrs.frozen
class Reconfigure:
    """Command: replace the cluster's config; answered on ``reply`` once published."""

    cluster: Cluster
    reply: trio.MemorySendChannel[ClusterSnapshot]


ClusterMsg = Reconfigure


class ClusterHandle:
    """How others reach a cluster actor: its inbox and its latest snapshot.

    Made by whoever builds the actor's ChildSpec, so it stays valid across restarts.
    """

    def __init__(self, cluster: Cluster) -> None:
        self.name = cluster.name
        self.inbox, self._inbox_rx = trio.open_memory_channel[ClusterMsg](16)
        self.snapshot = _build_snapshot(cluster, {}, now=0.0)

    async def reconfigure(self, cluster: Cluster) -> ClusterSnapshot:
        reply_tx, reply_rx = trio.open_memory_channel[ClusterSnapshot](1)
        await self.inbox.send(Reconfigure(cluster, reply_tx))
        async with reply_rx:
            return await reply_rx.receive()


def _build_snapshot(
    cluster: Cluster, runtimes: dict[str, EndpointRuntime], now: float
) -> ClusterSnapshot:
    """A snapshot for ``cluster``, reusing (and updating) existing endpoint runtimes.

    Endpoints removed from the config stay in ``all_endpoints``, draining, while they
    still have requests in flight; the actor's sweep forgets them once idle. ``now`` is
    the ``ready_at`` of endpoints that are new (0 for the first snapshot: endpoints
    present at start skip slow start, as in Envoy).
    """
    kept: dict[str, EndpointRuntime] = {}
    for ep in cluster.endpoints:
        key = str(ep.address)
        rt = runtimes.get(key)
        if rt is None or rt.pool.config != cluster.pool:
            if rt is not None:
                rt.pool.drain()
            rt = EndpointRuntime(ep, cluster, ready_at=now if rt is None else rt.ready_at)
        elif rt.config.state != "active" and ep.state == "active":
            rt.ready_at = now  # back from draining/disabled: ramp up again
        rt.config = ep
        if ep.state == "active":
            rt.pool.draining = False
        else:
            rt.pool.drain()
        kept[key] = rt
    leaving = []
    for key, rt in runtimes.items():
        if kept.get(key) is not rt:
            rt.pool.drain()
            if rt.active:
                leaving.append(rt)
    serving = tuple(rt for rt in kept.values() if rt.config.state == "active")
    balancer = make_balancer(
        cluster.lb_policy,
        HostSet(rt.host() for rt in serving),
        random.Random(),
        cluster.lb_options,
        active=_active_of(kept),
    )
    return ClusterSnapshot(
        cluster, serving, (*kept.values(), *leaving), balancer, {rt.key: rt for rt in serving}
    )


def _active_of(runtimes: dict[str, EndpointRuntime]) -> Callable[[Host], int]:
    def active(host: Host) -> int:
        return runtimes[host.key].active

    return active


async def run_cluster(
    handle: ClusterHandle,
    *,
    sweep_interval: Callable[[Cluster], float] = lambda c: max(0.5, c.pool.idle_timeout / 4),
    task_status: trio.TaskStatus[ClusterHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The cluster actor: applies commands and expires idle connections, until cancelled."""
    task_status.started(handle)
    try:
        await _serve_inbox(handle, sweep_interval)
    finally:
        # idle pooled connections belong to the actor; busy ones close with their request
        for rt in handle.snapshot.all_endpoints:
            rt.pool.close_all_idle()


async def _serve_inbox(handle: ClusterHandle, sweep_interval: Callable[[Cluster], float]) -> None:
    snapshot = handle.snapshot
    while True:
        with trio.move_on_after(sweep_interval(snapshot.config)):
            msg = await handle._inbox_rx.receive()
            match msg:
                case Reconfigure(cluster=cluster, reply=reply):
                    with reply:
                        runtimes = {rt.key: rt for rt in snapshot.all_endpoints}
                        snapshot = _build_snapshot(cluster, runtimes, trio.current_time())
                        handle.snapshot = snapshot
                        reply.send_nowait(snapshot)
            continue
        now = trio.current_time()
        for rt in snapshot.all_endpoints:
            rt.pool.expire_idle(now)
        serving = {str(ep.address) for ep in snapshot.config.endpoints}
        live = tuple(rt for rt in snapshot.all_endpoints if rt.key in serving or rt.active)
        if len(live) != len(snapshot.all_endpoints):
            snapshot = attrs.evolve(snapshot, all_endpoints=live)
            handle.snapshot = snapshot
