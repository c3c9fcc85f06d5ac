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

The endpoints come from the cluster's discovery source (``gateway.discovery``): the
config for ``static``; for ``dns`` and ``file`` a task in the actor's nursery that
reports each set it finds (the config's endpoints are a seed until then); for
``registry`` the actor's own ``Registry``, changed by ``Register``/``Renew``/
``Deregister`` commands and by TTL expiry. At start the actor waits (bounded by the
source's timeout) for the source's first report before it reports itself started, so
a cluster is not published empty while its first DNS answer is on the way (Envoy's
cluster warming). ``handle.discovery_stats`` counts answers and failures;
``handle.registrations`` shows the registry.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable

import attrs
import trio

from gateway.config import Cluster, Endpoint, check_endpoint
from gateway.discovery import (
    DiscoveryFailed,
    DiscoveryStats,
    EndpointsDiscovered,
    NotARegistryCluster,
    Registration,
    Registry,
    RegistryError,
    Resolver,
    has_source_task,
    run_source,
)
from gateway.errors import ConfigError, ConfigIssue, GatewayError
from gateway.upstream.pool import EndpointPool
from policies.balancing import ClusterBalancer, make_balancer
from policies.hosts import Host, HostSet

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
    #: the cluster's endpoints in every state, from its discovery source (or the config)
    members: tuple[Endpoint, ...] = ()

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


@attrs.frozen
class Registered:
    """Answer to ``Register``: the registration and whether the address was new."""

    registration: Registration
    created: bool


RegistryAnswer = Registered | Registration | RegistryError


@attrs.frozen
class Register:
    """Command (registry clusters): add or replace an instance; ``ttl`` None: the default."""

    endpoint: Endpoint
    ttl: float | None
    reply: trio.MemorySendChannel[RegistryAnswer]


@attrs.frozen
class Renew:
    """Command (registry clusters): a heartbeat; ``ttl`` None keeps the registration's own."""

    key: str
    ttl: float | None
    reply: trio.MemorySendChannel[RegistryAnswer]


@attrs.frozen
class Deregister:
    """Command (registry clusters): remove an instance; it drains."""

    key: str
    reply: trio.MemorySendChannel[RegistryAnswer]


ClusterMsg = Reconfigure | Register | Renew | Deregister | EndpointsDiscovered | DiscoveryFailed


class ClusterHandle:
    """How others reach a cluster actor: its inbox and its latest snapshot.

    Made by whoever builds the actor's ChildSpec, so it stays valid across restarts.
    ``snapshot``, ``discovery_stats`` and ``registrations`` are immutable values that
    the actor replaces; read them freely.
    """

    def __init__(self, cluster: Cluster) -> None:
        self.name = cluster.name
        self.inbox, self._inbox_rx = trio.open_memory_channel[ClusterMsg](16)
        self.snapshot = _build_snapshot(cluster, {}, now=0.0)
        self.discovery_stats = DiscoveryStats(source=cluster.discovery.type)
        #: registry clusters: every registered instance, by address
        self.registrations: tuple[Registration, ...] = ()

    async def reconfigure(self, cluster: Cluster) -> ClusterSnapshot:
        reply_tx, reply_rx = trio.open_memory_channel[ClusterSnapshot](1)
        await self.inbox.send(Reconfigure(cluster, reply_tx))
        async with reply_rx:
            return await reply_rx.receive()

    async def register(self, endpoint: Endpoint, ttl: float | None = None) -> Registered:
        """Register an instance (registry clusters); ``ConfigError`` if ``endpoint`` is invalid."""
        issues = check_endpoint(endpoint, "")
        if ttl is not None and not (math.isfinite(ttl) and ttl >= 0):
            issues.append(ConfigIssue("ttl", "must be a number of seconds >= 0"))
        if issues:
            raise ConfigError(issues)
        answer = await self._ask(lambda reply: Register(endpoint, ttl, reply))
        assert isinstance(answer, Registered)
        return answer

    async def renew(self, key: str, ttl: float | None = None) -> Registration:
        """A heartbeat for the instance at ``key``; ``NotRegistered`` if there is none."""
        if ttl is not None and not (math.isfinite(ttl) and ttl >= 0):
            raise ConfigError([ConfigIssue("ttl", "must be a number of seconds >= 0")])
        answer = await self._ask(lambda reply: Renew(key, ttl, reply))
        assert isinstance(answer, Registration)
        return answer

    async def deregister(self, key: str) -> Registration:
        """Remove the instance at ``key`` (it drains); ``NotRegistered`` if there is none."""
        answer = await self._ask(lambda reply: Deregister(key, reply))
        assert isinstance(answer, Registration)
        return answer

    async def _ask(
        self, make: Callable[[trio.MemorySendChannel[RegistryAnswer]], ClusterMsg]
    ) -> RegistryAnswer:
        reply_tx, reply_rx = trio.open_memory_channel[RegistryAnswer](1)
        await self.inbox.send(make(reply_tx))
        async with reply_rx:
            try:
                answer = await reply_rx.receive()
            except trio.EndOfChannel:
                raise GatewayError(f"cluster {self.name!r} stopped before answering") from None
        if isinstance(answer, RegistryError):
            raise answer
        return answer


def _build_snapshot(
    cluster: Cluster,
    runtimes: dict[str, EndpointRuntime],
    now: float,
    endpoints: tuple[Endpoint, ...] | None = None,
) -> ClusterSnapshot:
    """A snapshot for ``cluster``, reusing (and updating) existing endpoint runtimes.

    ``endpoints`` are the cluster's members as its discovery source has them (default:
    the config's). Endpoints removed stay in ``all_endpoints``, draining, while they
    still have requests in flight; the actor's sweep forgets them once idle. ``now`` is
    the ``ready_at`` of endpoints that are new (0 for the first snapshot: endpoints
    present at start skip slow start, as in Envoy).
    """
    if endpoints is None:
        endpoints = cluster.endpoints
    kept: dict[str, EndpointRuntime] = {}
    for ep in endpoints:
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
        cluster,
        serving,
        (*kept.values(), *leaving),
        balancer,
        {rt.key: rt for rt in serving},
        endpoints,
    )


def _active_of(runtimes: dict[str, EndpointRuntime]) -> Callable[[Host], int]:
    def active(host: Host) -> int:
        return runtimes[host.key].active

    return active


#: seconds a starting actor waits for its source's first report beyond the source timeout
WARM_SLACK = 1.0


async def run_cluster(
    handle: ClusterHandle,
    *,
    sweep_interval: Callable[[Cluster], float] = lambda c: max(0.5, c.pool.idle_timeout / 4),
    resolver: Resolver | None = None,
    task_status: trio.TaskStatus[ClusterHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The cluster actor: applies commands and discovery reports, expires idle connections
    and registrations, until cancelled. ``resolver`` replaces the dns source's (tests)."""
    try:
        async with trio.open_nursery() as nursery:
            actor = _ClusterActor(handle, nursery, sweep_interval, resolver)
            discovery = handle.snapshot.config.discovery
            if has_source_task(discovery):
                with trio.move_on_after(discovery.timeout + WARM_SLACK):
                    while not actor.warm:
                        actor.apply(await handle._inbox_rx.receive())
            task_status.started(handle)
            await actor.serve()
    finally:
        # idle pooled connections belong to the actor; busy ones close with their request
        for rt in handle.snapshot.all_endpoints:
            rt.pool.close_all_idle()


class _ClusterActor:
    """The state of one running cluster actor; only its own task calls it."""

    def __init__(
        self,
        handle: ClusterHandle,
        nursery: trio.Nursery,
        sweep_interval: Callable[[Cluster], float],
        resolver: Resolver | None,
    ) -> None:
        self.handle = handle
        self.nursery = nursery
        self.sweep_interval = sweep_interval
        self.resolver = resolver
        self.snapshot = snapshot = handle.snapshot
        discovery = snapshot.config.discovery
        # after a restart, the set the handle shows is the best known (a seed is harmless:
        # the source's first answer replaces it)
        self.discovered: tuple[Endpoint, ...] | None = (
            snapshot.members if has_source_task(discovery) else None
        )
        self.registry = Registry(handle.registrations)
        self.source_scope = trio.CancelScope()
        #: whether the source has reported since the actor started
        self.warm = not has_source_task(discovery)
        #: whether the source's last report was a failure (to log a streak once)
        self.failing = False
        self.next_sweep = trio.current_time() + sweep_interval(snapshot.config)
        self._start_source()

    # -- the loop ----------------------------------------------------------------------

    async def serve(self) -> None:
        while True:
            wake_at = min(self.next_sweep, self.registry.next_expiry())
            with trio.move_on_at(wake_at):
                self.apply(await self.handle._inbox_rx.receive())
            now = trio.current_time()
            if self.registry.next_expiry() <= now:
                self._expire_registrations(now)
            if now >= self.next_sweep:
                self._sweep(now)
                self.next_sweep = now + self.sweep_interval(self.snapshot.config)

    def apply(self, msg: ClusterMsg) -> None:
        cluster = self.snapshot.config
        match msg:
            case Reconfigure(cluster=new, reply=reply):
                with reply:
                    self._reconfigure(new)
                    reply.send_nowait(self.snapshot)
            case EndpointsDiscovered(endpoints=endpoints, source=source):
                if source == cluster.discovery:
                    self.warm = True
                    self._discovered(endpoints)
            case DiscoveryFailed(reason=reason, source=source):
                if source == cluster.discovery:
                    self.warm = True
                    self._failed(reason)
            case Register(endpoint=endpoint, ttl=ttl, reply=reply):
                with reply:
                    reply.send_nowait(self._register(endpoint, ttl))
            case Renew(key=key, ttl=ttl, reply=reply):
                with reply:
                    reply.send_nowait(self._renew(key, ttl))
            case Deregister(key=key, reply=reply):
                with reply:
                    reply.send_nowait(self._deregister(key))

    # -- publishing --------------------------------------------------------------------

    def _members(self, cluster: Cluster) -> tuple[Endpoint, ...]:
        kind = cluster.discovery.type
        if kind == "registry":
            return self.registry.endpoints()
        if kind == "static" or self.discovered is None:
            return cluster.endpoints
        return self.discovered

    def _publish(self, cluster: Cluster) -> None:
        runtimes = {rt.key: rt for rt in self.snapshot.all_endpoints}
        now = trio.current_time()
        self.snapshot = _build_snapshot(cluster, runtimes, now, self._members(cluster))
        self.handle.snapshot = self.snapshot
        self.handle.registrations = self.registry.registrations()

    # -- commands and reports ----------------------------------------------------------

    def _reconfigure(self, new: Cluster) -> None:
        old = self.snapshot.config.discovery
        if new.discovery != old:
            self.source_scope.cancel()
            kind = new.discovery.type
            if old.type == "registry" and kind != "registry":
                # the registered set serves until the new source answers
                self.discovered = self.registry.endpoints()
                self.registry = Registry()
            if kind == "static" or old.type == "static":
                self.discovered = None  # the new config's endpoints (a seed for dns/file)
            self.handle.discovery_stats = attrs.evolve(self.handle.discovery_stats, source=kind)
            self.failing = False
            self._start_source_for(new)
        self._publish(new)

    def _start_source(self) -> None:
        self._start_source_for(self.snapshot.config)

    def _start_source_for(self, cluster: Cluster) -> None:
        discovery = cluster.discovery
        self.source_scope = scope = trio.CancelScope()
        if not has_source_task(discovery):
            return

        async def source() -> None:
            with scope:
                await run_source(discovery, self.handle.inbox.send, self.resolver)

        self.nursery.start_soon(source, name=f"discovery:{cluster.name}")

    def _discovered(self, endpoints: tuple[Endpoint, ...]) -> None:
        stats = self.handle.discovery_stats
        changed = endpoints != self.snapshot.members
        self.handle.discovery_stats = attrs.evolve(
            self.handle.discovery_stats,
            resolutions=stats.resolutions + 1,
            changes=stats.changes + changed,
            last_success=time.time(),
        )
        if self.failing:
            log.info("cluster %s: %s discovery recovered", self.handle.name, stats.source)
            self.failing = False
        self.discovered = endpoints
        if changed:
            before = {str(ep.address) for ep in self.snapshot.members}
            after = {str(ep.address) for ep in endpoints}
            log.info(
                "cluster %s: %s found %d endpoints (+%d -%d)",
                self.handle.name,
                stats.source,
                len(endpoints),
                len(after - before),
                len(before - after),
            )
            self._publish(self.snapshot.config)

    def _failed(self, reason: str) -> None:
        stats = self.handle.discovery_stats
        # a failing source reports every interval: log when the failure starts or changes
        repeated = self.failing and reason == stats.last_error
        self.failing = True
        (log.debug if repeated else log.warning)(
            "cluster %s: %s discovery failed, keeping %d endpoints: %s",
            self.handle.name,
            stats.source,
            len(self.snapshot.members),
            reason,
        )
        self.handle.discovery_stats = attrs.evolve(
            self.handle.discovery_stats,
            failures=stats.failures + 1,
            last_error=reason,
            last_failure=time.time(),
        )

    def _registry_cluster(self) -> Cluster | NotARegistryCluster:
        cluster = self.snapshot.config
        if cluster.discovery.type != "registry":
            return NotARegistryCluster(
                f"cluster {cluster.name!r} takes its endpoints from "
                f"{cluster.discovery.type!r} discovery, not from registrations"
            )
        return cluster

    def _register(self, endpoint: Endpoint, ttl: float | None) -> RegistryAnswer:
        cluster = self._registry_cluster()
        if isinstance(cluster, NotARegistryCluster):
            return cluster
        ttl = cluster.discovery.default_ttl if ttl is None else ttl
        registration, created = self.registry.register(endpoint, ttl, trio.current_time())
        stats = self.handle.discovery_stats
        changed = self.registry.endpoints() != self.snapshot.members
        self.handle.discovery_stats = attrs.evolve(
            self.handle.discovery_stats,
            resolutions=stats.resolutions + 1,
            changes=stats.changes + changed,
            last_success=time.time(),
        )
        if created:
            log.info("cluster %s: %s registered", cluster.name, registration.key)
        self._publish(cluster)
        return Registered(registration, created)

    def _renew(self, key: str, ttl: float | None) -> RegistryAnswer:
        cluster = self._registry_cluster()
        if isinstance(cluster, NotARegistryCluster):
            return cluster
        try:
            registration = self.registry.renew(key, trio.current_time(), ttl)
        except RegistryError as e:
            return e
        self.handle.registrations = self.registry.registrations()
        return registration

    def _deregister(self, key: str) -> RegistryAnswer:
        cluster = self._registry_cluster()
        if isinstance(cluster, NotARegistryCluster):
            return cluster
        try:
            registration = self.registry.deregister(key)
        except RegistryError as e:
            return e
        stats = self.handle.discovery_stats
        self.handle.discovery_stats = attrs.evolve(
            self.handle.discovery_stats, changes=stats.changes + 1
        )
        log.info("cluster %s: %s deregistered, draining", cluster.name, key)
        self._publish(cluster)
        return registration

    # -- timers ------------------------------------------------------------------------

    def _expire_registrations(self, now: float) -> None:
        gone = self.registry.expire(now)
        if not gone:
            return
        for registration in gone:
            log.warning(
                "cluster %s: %s missed its heartbeat (ttl %gs), removed",
                self.handle.name,
                registration.key,
                registration.ttl,
            )
        stats = self.handle.discovery_stats
        self.handle.discovery_stats = attrs.evolve(
            self.handle.discovery_stats,
            expirations=stats.expirations + len(gone),
            changes=stats.changes + 1,
        )
        self._publish(self.snapshot.config)

    def _sweep(self, now: float) -> None:
        snapshot = self.snapshot
        for rt in snapshot.all_endpoints:
            rt.pool.expire_idle(now)
        members = {str(ep.address) for ep in snapshot.members}
        live = tuple(rt for rt in snapshot.all_endpoints if rt.key in members or rt.active)
        if len(live) != len(snapshot.all_endpoints):
            self.snapshot = attrs.evolve(snapshot, all_endpoints=live)
            self.handle.snapshot = self.snapshot
