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

Active health checks (``health_check`` on the cluster, ``gateway.cluster.health``):
the actor runs one checking task per member in its nursery, started when the member
appears, cancelled when it leaves, and all restarted when ``health_check`` changes
(removed: they stop and every verdict goes). Results come back as ``HealthChecked``;
the actor owns each member's ``HealthThresholds``, and a verdict change (a new member
starts ``unknown``, and serves) republishes the snapshot, records an event on the
handle's ``EventLog`` and counts ``health_check.*`` stats. ``handle.health`` holds
the verdicts and ``handle.checks`` each member's last result. With worker processes
the primary's actors check and the workers' actors never do (a worker config has no
``health_check``): the primary's verdicts arrive as ``HealthVerdicts`` and go through
the same ``_publish`` as the primary's own.

Outlier detection (``outlier_detection`` on the cluster, ``policies.outlier``): the
actor owns the ``OutlierDetector`` and hangs an ``OutcomeBuffer`` on the cluster's
stats, where the data path leaves every attempt's result without waiting
(``gateway.cluster.outcomes``). Every ``FLUSH_INTERVAL`` the actor takes the buffer
into the detector (``record_many``), ticks it at its ``next_tick()``, and gives it the
members on each publish (``set_hosts``); a passing health check ends an ejection
early (``uneject``). An ejection or a return republishes the snapshot (an ejected
endpoint is unhealthy, ``failed_outlier_check``), records an ``ejection`` event and
counts ``outlier_detection.*``; ``handle.ejections`` holds the current ones. With
worker processes only the primary's actor detects (``detect_outliers``): a worker's
actor keeps the buffer, which the worker's stats report ships to the primary
(``OutcomesReported`` into the primary's actor), and serves with the primary's
ejections, which arrive with its health verdicts (``HealthVerdicts.ejected``).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Protocol

import attrs
import trio

from gateway.cluster import health
from gateway.cluster.breaker import ClusterBreaker
from gateway.cluster.health import CheckOutcome, HealthChecked, run_endpoint_checks
from gateway.cluster.outcomes import FLUSH_INTERVAL, Outcome, OutcomeBuffer, OutcomesWaiting
from gateway.cluster.snapshot import ClusterSnapshot, build_snapshot
from gateway.config import Address, Cluster, Endpoint, check_endpoint
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
from gateway.errors import ConfigError, ConfigIssue
from gateway.observe.events import EventLog
from gateway.observe.stats.scopes import ClusterStats
from gateway.runtime.actor import ask
from gateway.tls import TlsOrigin
from gateway.tls.reload import watch_origin
from policies.health import HealthCheckConfig, HealthState, HealthThresholds
from policies.outlier import (
    EjectionReason,
    EndpointEjected,
    EndpointReturned,
    OutlierConfig,
    OutlierDetector,
)

log = logging.getLogger("triogate.cluster")


@attrs.frozen
class Reconfigure:
    """Command: replace the cluster's config; answered on ``reply`` once published."""

    cluster: Cluster
    reply: trio.MemorySendChannel[ClusterSnapshot | Exception]


@attrs.frozen
class Registered:
    """Answer to ``Register``: the registration and whether the address was new."""

    registration: Registration
    created: bool


RegistryAnswer = Registered | Registration | Exception


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


@attrs.frozen
class HealthVerdicts:
    """Command: serve with these health verdicts by address (what the primary's checks
    decided, on a worker process); replaces the ones the actor had."""

    states: Mapping[str, HealthState]
    #: the addresses the primary's outlier detection has ejected
    ejected: frozenset[str] = frozenset()


@attrs.frozen
class OutcomesReported:
    """Report: attempts' results for the outlier detector (a worker's, via the primary)."""

    results: tuple[Outcome, ...]


@attrs.frozen
class Ejection:
    """One endpoint's current ejection, as the admin API shows it (Unix times)."""

    since: float
    until: float
    #: ejections of this endpoint since the detector was built
    times_ejected: int
    reason: EjectionReason


ClusterMsg = (
    Reconfigure
    | Register
    | Renew
    | Deregister
    | EndpointsDiscovered
    | DiscoveryFailed
    | HealthChecked
    | HealthVerdicts
    | OutcomesReported
    | OutcomesWaiting
)


@attrs.frozen
class MembersPublished:
    """Report (to a handle's ``watcher``): the cluster published a new set of members."""

    cluster: str


@attrs.frozen
class VerdictsPublished:
    """Report (to a handle's ``watcher``): the cluster's health verdicts changed
    (``handle.health``)."""

    cluster: str


ClusterReport = MembersPublished | VerdictsPublished


class MembersWatcher(Protocol):
    """Who is told of new members and verdicts: an inbox that takes reports without waiting."""

    def send_nowait(self, value: ClusterReport, /) -> None: ...


def _tls_origin(cluster: Cluster, stats: ClusterStats | None) -> TlsOrigin | None:
    """TLS to the cluster's endpoints (None: cleartext), offering h2 by ALPN to those of a
    ``protocol: http2`` cluster."""
    if cluster.tls is None:
        return None
    return TlsOrigin(cluster.tls, stats, ("h2",) if cluster.protocol == "http2" else ())


class ClusterHandle:
    """How others reach a cluster actor: its inbox and its latest snapshot.

    Made by whoever builds the actor's ChildSpec, so it stays valid across restarts.
    ``snapshot``, ``discovery_stats`` and ``registrations`` are immutable values that
    the actor replaces; read them freely.
    """

    def __init__(
        self,
        cluster: Cluster,
        watcher: MembersWatcher | None = None,
        *,
        events: EventLog | None = None,
        stats: ClusterStats | None = None,
        detect_outliers: bool = True,
    ) -> None:
        self.name = cluster.name
        self.inbox, self._inbox_rx = trio.open_memory_channel[ClusterMsg](16)
        #: told (without waiting) when the members or verdicts change: a primary's
        #: control plane, which installs them on its workers
        self.watcher = watcher
        #: where health verdict changes are recorded (the control side's event log)
        self.events = events
        #: where ``health_check.*`` is counted
        self.stats = stats
        #: the health checks' verdicts by address (empty: not checked)
        self.health: Mapping[str, HealthState] = MappingProxyType({})
        #: each checked member's last check, by address
        self.checks: Mapping[str, CheckOutcome] = MappingProxyType({})
        #: TLS to the endpoints (``cluster.tls``): its context is swapped in place when
        #: the files change (``gateway.tls.reload``); a new one when the config changes
        self.tls = _tls_origin(cluster, stats)
        self.snapshot = build_snapshot(cluster, None, now=0.0, tls=self.tls)
        self.discovery_stats = DiscoveryStats(source=cluster.discovery.type)
        #: registry clusters: every registered instance, by address
        self.registrations: tuple[Registration, ...] = ()
        #: whether this actor runs the outlier detector (False on a worker process: the
        #: primary's does, and its ejections arrive as ``HealthVerdicts``)
        self.detect_outliers = detect_outliers
        #: where the data path leaves attempts' results (None: no outlier detection)
        self.outcomes: OutcomeBuffer | None = None
        #: the endpoints ejected now, by address
        self.ejections: Mapping[str, Ejection] = MappingProxyType({})
        #: the addresses ejected now (the primary's, on a worker)
        self.ejected: frozenset[str] = frozenset()

    async def reconfigure(self, cluster: Cluster) -> ClusterSnapshot:
        """Replace the cluster's config; returns the snapshot published for it.

        Raises ``ActorStopped`` if the actor crashed on it (its supervisor restarts it
        with the config it had).
        """
        snapshot: ClusterSnapshot = await ask(
            self.inbox, lambda reply: Reconfigure(cluster, reply), who=f"cluster {self.name!r}"
        )
        return snapshot

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
    ) -> Registered | Registration:
        answer: Registered | Registration = await ask(
            self.inbox, make, who=f"cluster {self.name!r}"
        )
        return answer


#: seconds a starting actor waits for its source's first report beyond the source timeout
WARM_SLACK = 1.0


async def run_cluster(
    handle: ClusterHandle,
    *,
    sweep_interval: Callable[[Cluster], float] = lambda c: max(0.5, c.pool.idle_timeout / 4),
    resolver: Resolver | None = None,
    rng: random.Random | None = None,
    task_status: trio.TaskStatus[ClusterHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The cluster actor: applies commands and discovery reports, expires idle connections
    and registrations, runs health checks, until cancelled. ``resolver`` replaces the dns
    source's and ``rng`` the health checks' jitter (tests)."""
    try:
        async with trio.open_nursery() as nursery:
            actor = _ClusterActor(handle, nursery, sweep_interval, resolver, rng)
            nursery.start_soon(watch_origin, lambda: handle.tls)
            discovery = handle.snapshot.config.discovery
            if has_source_task(discovery):
                with trio.move_on_after(discovery.timeout + WARM_SLACK):
                    while not actor.warm:
                        actor.apply(await handle._inbox_rx.receive())
            task_status.started(handle)
            await actor.serve()
    finally:
        # idle pooled connections belong to the actor; busy ones close with their request
        for state in handle.snapshot.all_endpoints:
            state.pool.close_all_idle()


class _ClusterActor:
    """The state of one running cluster actor; only its own task calls it."""

    def __init__(
        self,
        handle: ClusterHandle,
        nursery: trio.Nursery,
        sweep_interval: Callable[[Cluster], float],
        resolver: Resolver | None,
        rng: random.Random | None = None,
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
        self.rng = rng if rng is not None else random.Random()
        #: per checked member: its thresholds and the scope of its checking task
        self.thresholds: dict[str, HealthThresholds] = {}
        self.checkers: dict[str, trio.CancelScope] = {}
        #: the verdicts the snapshot is built with (a worker's: the primary's); after a
        #: restart the checks start again, from unknown
        self.health: dict[str, HealthState] = (
            {} if snapshot.config.health_check is not None else dict(handle.health)
        )
        #: the outlier detector (None: off, or a worker's actor); after a restart it
        #: starts again with every endpoint in service
        self.detector: OutlierDetector | None = None
        #: the ejected addresses the snapshot is built with (a worker's: the primary's)
        self.ejected: frozenset[str] = handle.ejected
        self.ejections: dict[str, Ejection] = {}
        #: ejections per address since the detector was built
        self.times_ejected: dict[str, int] = {}
        #: the detector's overflows already counted in the stats
        self.overflows = 0
        self.next_flush = math.inf
        self._start_outliers(snapshot.config)
        self._start_breaker(snapshot.config)
        self._start_source()
        if snapshot.config.health_check is not None or self.ejected != handle.ejected:
            self._publish(snapshot.config)  # every member unknown, its checks started

    # -- the loop ----------------------------------------------------------------------

    async def serve(self) -> None:
        while True:
            wake_at = min(self.next_sweep, self.registry.next_expiry(), self._next_outlier())
            with trio.move_on_at(wake_at):
                self.apply(await self.handle._inbox_rx.receive())
            now = trio.current_time()
            if self._next_outlier() <= now:
                self._tick_outliers(now)
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
            case HealthChecked(key=key, config=config, outcome=outcome):
                if config == cluster.health_check and key in self.thresholds:
                    self._checked(key, outcome)
            case HealthVerdicts(states=states, ejected=ejected):
                self.health = dict(states)
                if self.detector is None:
                    self.ejected = ejected
                self._publish(cluster)
            case OutcomesWaiting():
                if self.detector is not None:
                    self.next_flush = trio.current_time()  # taken by the loop, now
            case OutcomesReported(results=results):
                if self.detector is not None:
                    now = trio.current_time()
                    self.detector.record_many(results, now)
                    if self._drain_outliers(now):
                        self._publish(cluster)

    # -- publishing --------------------------------------------------------------------

    def _members(self, cluster: Cluster) -> tuple[Endpoint, ...]:
        kind = cluster.discovery.type
        if kind == "registry":
            return self.registry.endpoints()
        if kind == "static" or self.discovered is None:
            return cluster.endpoints
        return self.discovered

    def _publish(self, cluster: Cluster) -> None:
        now = trio.current_time()
        before = self.snapshot.members
        members = self._members(cluster)
        if cluster.health_check is not None:
            self._track_checks(cluster, members)
        if self.detector is not None:
            self.detector.set_hosts(str(ep.address) for ep in members)
            self._drain_outliers(now)
        self.snapshot = build_snapshot(
            cluster, self.snapshot, now, members, self.health, self.ejected, self.handle.tls
        )
        self.handle.snapshot = self.snapshot
        self.handle.registrations = self.registry.registrations()
        if self.snapshot.members != before:
            self._report(MembersPublished(self.handle.name))
        if self.health != self.handle.health or self.ejected != self.handle.ejected:
            self.handle.health = MappingProxyType(dict(self.health))
            self.handle.ejected = self.ejected
            if self.handle.stats is not None:
                self.handle.stats.health_check_healthy = sum(
                    state is HealthState.HEALTHY for state in self.health.values()
                )
            self._report(VerdictsPublished(self.handle.name))

    def _report(self, report: ClusterReport) -> None:
        watcher = self.handle.watcher
        if watcher is None:
            return
        try:
            watcher.send_nowait(report)
        except trio.WouldBlock:
            # the watcher reads the handle's latest state on each report: a later one
            # covers it
            log.warning("cluster %s: %s; watcher busy", self.handle.name, type(report).__name__)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the watcher is gone (the gateway stops)

    # -- health checks -----------------------------------------------------------------

    def _track_checks(self, cluster: Cluster, members: tuple[Endpoint, ...]) -> None:
        """A checking task and thresholds for each member, none for those that left."""
        config = cluster.health_check
        assert config is not None
        addresses = {str(ep.address): ep.address for ep in members}
        for key in list(self.checkers):
            if key not in addresses:
                self.checkers.pop(key).cancel()
                del self.thresholds[key]
                self.health.pop(key, None)
        if len(self.handle.checks.keys() - addresses.keys()):
            self.handle.checks = MappingProxyType(
                {k: v for k, v in self.handle.checks.items() if k in addresses}
            )
        for key, address in addresses.items():
            if key in self.checkers:
                continue
            self.thresholds[key] = HealthThresholds.of(config)
            self.health[key] = HealthState.UNKNOWN
            self.checkers[key] = self._start_checker(cluster.name, config, key, address)

    def _start_checker(
        self, cluster: str, config: HealthCheckConfig, key: str, address: Address
    ) -> trio.CancelScope:
        scope = trio.CancelScope()

        async def check() -> None:
            with scope:
                await run_endpoint_checks(
                    key,
                    address,
                    config,
                    cluster,
                    self.handle.inbox,
                    self.rng,
                    self.handle.stats,
                    # over TLS for a cluster with ``tls`` (the one in force at each check)
                    lambda a, c, n: health.check_endpoint(a, c, n, self.handle.tls),
                )

        self.nursery.start_soon(check, name=f"health-check:{cluster}:{key}")
        return scope

    def _stop_checks(self) -> None:
        for scope in self.checkers.values():
            scope.cancel()
        self.checkers.clear()
        self.thresholds.clear()
        self.health.clear()
        self.handle.checks = MappingProxyType({})

    def _checked(self, key: str, outcome: CheckOutcome) -> None:
        stats = self.handle.stats
        if stats is not None:
            stats.health_check_attempt += 1
            if outcome.passed:
                stats.health_check_success += 1
            else:
                stats.health_check_failure += 1
        self.handle.checks = MappingProxyType({**self.handle.checks, key: outcome})
        now = trio.current_time()
        unejected = False
        if outcome.passed and self.detector is not None:
            self.detector.uneject(key, now)  # a passing check ends an ejection early
            unejected = self._drain_outliers(now)
        thresholds = self.thresholds[key]
        thresholds.record(outcome.passed, now)
        changes = thresholds.drain_events()
        if not changes:
            if unejected:
                self._publish(self.snapshot.config)
            return
        events = self.handle.events
        for change in changes:
            (log.warning if change.new is HealthState.UNHEALTHY else log.info)(
                "cluster %s: %s is %s (%s)",
                self.handle.name,
                key,
                change.new.value,
                outcome.detail,
            )
            if events is not None:
                events.record(
                    self.handle.name,
                    key,
                    "health",
                    change.old.value,
                    change.new.value,
                    outcome.detail,
                )
        self.health[key] = thresholds.state
        self._publish(self.snapshot.config)

    # -- circuit breakers --------------------------------------------------------------

    def _start_breaker(self, cluster: Cluster) -> None:
        """``cluster``'s thresholds and a new classic breaker (or none) for the data path."""
        stats = self.handle.stats
        if stats is None:
            return
        stats.thresholds = cluster.circuit_breakers
        config = cluster.breaker
        stats.breaker = (
            None if config is None else ClusterBreaker(cluster.name, config, self.handle.events)
        )

    # -- outlier detection -------------------------------------------------------------

    def _start_outliers(self, cluster: Cluster) -> None:
        """The buffer and detector for ``cluster``'s ``outlier_detection`` (or none)."""
        config: OutlierConfig | None = cluster.outlier_detection
        handle = self.handle
        buffer = None if config is None else (handle.outcomes or OutcomeBuffer())
        handle.outcomes = buffer
        if handle.stats is not None:
            handle.stats.outcomes = buffer
        if not handle.detect_outliers:
            return  # a worker: the primary detects; its ejections come as HealthVerdicts
        if buffer is not None:
            assert config is not None
            thresholds = [
                t for t in (config.consecutive_5xx, config.consecutive_gateway_failure) if t
            ]
            buffer.wake_at = min(thresholds, default=0)
            buffer.inbox = handle.inbox
        self.ejected = frozenset()
        self.ejections.clear()
        self.times_ejected.clear()
        self.handle.ejections = MappingProxyType({})
        if handle.stats is not None:
            handle.stats.outlier_detection_ejections_active = 0
        if config is None:
            self.detector = None
            self.next_flush = math.inf
            return
        now = trio.current_time()
        members = (str(ep.address) for ep in self._members(cluster))
        self.detector = OutlierDetector(config, members, now)
        self.overflows = 0
        self.next_flush = now + FLUSH_INTERVAL

    def _next_outlier(self) -> float:
        """When the detector next has work: a take from the buffer, or its tick."""
        detector = self.detector
        return math.inf if detector is None else min(self.next_flush, detector.next_tick())

    def _tick_outliers(self, now: float) -> None:
        detector, buffer = self.detector, self.handle.outcomes
        assert detector is not None and buffer is not None
        if now >= self.next_flush:
            self.next_flush = now + FLUSH_INTERVAL
            results = buffer.take()
            if results:
                detector.record_many(results, now)
            dropped = buffer.take_dropped()
            stats = self.handle.stats
            if stats is not None:
                stats.outlier_detection_outcomes_dropped += dropped
                stats.outlier_detection_wakes_dropped += buffer.wakes_dropped
                buffer.wakes_dropped = 0
        detector.tick(now)
        if self._drain_outliers(now):
            self._publish(self.snapshot.config)

    def _drain_outliers(self, now: float) -> bool:
        """The detector's ejections and returns since the last call: logged, counted and
        recorded; True if the ejected set changed (the caller publishes)."""
        detector = self.detector
        assert detector is not None
        ejected = detector.ejected(now)  # returns whose time has passed, first
        handle = self.handle
        stats = handle.stats
        wall = time.time() - now  # the detector's clock to Unix time
        events = detector.drain_events()
        for event in events:
            match event:
                case EndpointEjected(host=host, reason=reason, at=at, until=until):
                    times = self.times_ejected[host] = self.times_ejected.get(host, 0) + 1
                    self.ejections[host] = Ejection(wall + at, wall + until, times, reason)
                    log.warning(
                        "cluster %s: %s ejected (%s) for %.3gs",
                        handle.name,
                        host,
                        reason.value,
                        until - at,
                    )
                    if stats is not None:
                        stats.outlier_detection_ejections_enforced_total += 1
                        name = f"outlier_detection_ejections_enforced_{reason.value}"
                        setattr(stats, name, getattr(stats, name) + 1)
                    if handle.events is not None:
                        handle.events.record(
                            handle.name,
                            host,
                            "ejection",
                            "serving",
                            "ejected",
                            reason.value,
                            wall + until,
                        )
                case EndpointReturned(host=host, trigger=trigger):
                    self.ejections.pop(host, None)
                    log.info("cluster %s: %s returned (%s)", handle.name, host, trigger.value)
                    if handle.events is not None:
                        handle.events.record(
                            handle.name, host, "ejection", "ejected", "serving", trigger.value
                        )
        gone = self.ejections.keys() - ejected  # removed from the cluster while ejected
        for host in gone:
            del self.ejections[host]
        if stats is not None:
            stats.outlier_detection_ejections_overflow += detector.overflows - self.overflows
            stats.outlier_detection_ejections_active = len(ejected)
        self.overflows = detector.overflows
        if events or gone:
            handle.ejections = MappingProxyType(dict(self.ejections))
        changed = ejected != self.ejected
        self.ejected = ejected
        return changed

    # -- commands and reports ----------------------------------------------------------

    def _reconfigure(self, new: Cluster) -> None:
        before = self.snapshot.config
        if new.tls != before.tls or new.protocol != before.protocol:
            self.handle.tls = _tls_origin(new, self.handle.stats)
        if new.health_check != self.snapshot.config.health_check:
            self._stop_checks()  # new checkers, from unknown (or none)
        if new.outlier_detection != self.snapshot.config.outlier_detection:
            self._start_outliers(new)  # a new detector, every endpoint in service (or none)
        if new.breaker != self.snapshot.config.breaker:
            self._start_breaker(new)  # a new breaker, closed (or none)
        elif self.handle.stats is not None:
            self.handle.stats.thresholds = new.circuit_breakers
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
        for state in self.snapshot.all_endpoints:
            state.pool.expire_idle(now)
        self.snapshot = self.handle.snapshot = self.snapshot.without_idle_leavers()
