"""What a cluster actor publishes: an immutable snapshot over live endpoint counters.

Two kinds of object, kept apart on purpose:

- ``EndpointRuntime`` is the *live* side of one endpoint address in this process: its
  connection pool and the requests in flight. It is made once per address (again only
  when the pool's config changes) and outlives snapshots, because connections and
  in-flight requests do. The data path increments ``active`` and uses ``pool``; nothing
  else about it changes.
- ``ClusterSnapshot`` and its ``EndpointState``s are *values*: the endpoint's config,
  when it became ready (slow start), and which runtime carries its traffic. A change
  builds a new snapshot; no published snapshot is ever edited, so a request that read
  one sees the same cluster to its end.

``build_snapshot`` is pure but for the pools it drains: an endpoint that leaves, or is
set ``draining``/``disabled``, has its pool put in draining mode (each connection closes
as its request ends), and one whose pool config changed gets a new runtime.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Container, Mapping

import attrs

from gateway.config import Address, Cluster, Endpoint
from gateway.tls import TlsOrigin
from gateway.upstream.http2 import Http2EndpointPool
from gateway.upstream.pool import EndpointPool
from policies.balancing import ClusterBalancer, make_balancer
from policies.endpoint_health import EndpointHealth, endpoint_health
from policies.health import HealthState
from policies.hosts import Host, HostSet


class EndpointRuntime:
    """The live, per-process side of an endpoint: its pool and requests in flight."""

    __slots__ = ("active", "key", "pool")

    def __init__(self, address: Address, cluster: Cluster, tls: TlsOrigin | None = None) -> None:
        self.key = str(address)
        self.pool: EndpointPool
        if cluster.protocol == "http2":
            self.pool = Http2EndpointPool(address, cluster.pool, cluster.http2, tls=tls)
        else:
            self.pool = EndpointPool(address, cluster.pool, tls=tls)
        #: requests in flight to this endpoint
        self.active = 0


#: picks ``another`` makes looking for an endpoint not to avoid (Istio's setting of
#: Envoy's ``host_selection_retry_max_attempts`` with the ``previous_hosts`` predicate)
HOST_SELECTION_ATTEMPTS = 5


@attrs.frozen
class EndpointState:
    """One endpoint as a snapshot has it: config, readiness, and its live runtime."""

    config: Endpoint
    #: when it joined (or came back to ``active``): slow start ramps from here
    ready_at: float
    runtime: EndpointRuntime = attrs.field(eq=False)
    #: what the active health checks say (None: not checked)
    check: HealthState | None = None
    #: whether outlier detection has it ejected
    ejected: bool = False

    @property
    def health(self) -> EndpointHealth:
        """Config state, health check and ejection folded into one verdict (Envoy's flags)."""
        return endpoint_health(self.config.state, self.check, self.ejected)

    @property
    def key(self) -> str:
        return self.runtime.key

    @property
    def pool(self) -> EndpointPool:
        return self.runtime.pool

    @property
    def active(self) -> int:
        return self.runtime.active

    def host(self) -> Host:
        ep = self.config
        return Host(
            key=self.runtime.key,
            weight=ep.weight,
            priority=ep.priority,
            locality=ep.locality,
            healthy=self.health.healthy,
            ready_at=self.ready_at,
        )


@attrs.frozen
class ClusterSnapshot:
    """What the data path sees of a cluster at one instant."""

    config: Cluster
    #: endpoints that take new requests
    endpoints: tuple[EndpointState, ...]
    #: every endpoint still known, including draining and leaving ones (stats, admin API)
    all_endpoints: tuple[EndpointState, ...]
    balancer: ClusterBalancer
    #: the runtimes of ``endpoints``, by address: what ``pick`` returns
    by_key: Mapping[str, EndpointRuntime]
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

    def another(
        self, endpoint: EndpointRuntime, avoid: Container[str], now: float
    ) -> EndpointRuntime:
        """``endpoint`` (the balancer's pick) unless its address is one to ``avoid`` (tried
        already, or suspected by the outlier detector), then another the balancer offers
        within a few picks (without the request's hash, which would give the same one
        again), else the first healthy endpoint not to avoid (the picks missed it, which
        they do now and then with few endpoints); the pick itself if there is none."""
        if endpoint.key not in avoid:
            return endpoint
        for _ in range(HOST_SELECTION_ATTEMPTS):
            other = self.pick(now)
            if other is not None and other.key not in avoid:
                return other
        for state in self.endpoints:
            if state.key not in avoid and state.health.healthy:
                return state.runtime
        return endpoint

    def without_idle_leavers(self) -> ClusterSnapshot:
        """The same snapshot less the leaving endpoints that no longer have requests."""
        members = {str(ep.address) for ep in self.members}
        live = tuple(s for s in self.all_endpoints if s.key in members or s.runtime.active)
        if len(live) == len(self.all_endpoints):
            return self
        return attrs.evolve(self, all_endpoints=live)


def build_snapshot(
    cluster: Cluster,
    previous: ClusterSnapshot | None,
    now: float,
    endpoints: tuple[Endpoint, ...] | None = None,
    checks: Mapping[str, HealthState] | None = None,
    ejected: frozenset[str] = frozenset(),
    tls: TlsOrigin | None = None,
) -> ClusterSnapshot:
    """The snapshot for ``cluster`` after ``previous`` (None: the first one).

    ``tls`` is the cluster's ``TlsOrigin`` (None: cleartext); a pool made for another
    (the cluster's ``tls`` changed) drains and a new runtime takes its place.

    ``endpoints`` are the cluster's members as its discovery source has them (default:
    the config's). Runtimes of ``previous`` are kept by address (their pools and
    in-flight counts go on). Endpoints removed stay in ``all_endpoints``, draining,
    while they still have requests in flight. ``now`` is the ``ready_at`` of endpoints
    that are new or back to ``active`` (0 for the first snapshot: endpoints present at
    start skip slow start, as in Envoy). ``checks`` are the active health checks'
    verdicts by address (an endpoint not in it is not checked): an unhealthy endpoint
    stays in the balancer's host set, unhealthy, so that panic routing can still use it.
    ``ejected`` are the addresses outlier detection has ejected: unhealthy the same way.
    """
    if endpoints is None:
        endpoints = cluster.endpoints
    before: dict[str, EndpointState] = (
        {} if previous is None else {s.key: s for s in previous.all_endpoints}
    )
    kept: dict[str, EndpointState] = {}
    for ep in endpoints:
        key = str(ep.address)
        old = before.get(key)
        if old is None:
            runtime, ready_at = EndpointRuntime(ep.address, cluster, tls), now
        else:
            runtime, ready_at = old.runtime, old.ready_at
            if not runtime.pool.serves(cluster, tls):
                runtime.pool.drain()
                runtime = EndpointRuntime(ep.address, cluster, tls)
            elif old.config.state != "active" and ep.state == "active":
                ready_at = now  # back from draining/disabled: ramp up again
        if ep.state == "active":
            runtime.pool.draining = False
        else:
            runtime.pool.drain()
        check = None if checks is None else checks.get(key)
        kept[key] = EndpointState(ep, ready_at, runtime, check, key in ejected)
    leaving = []
    kept_runtimes = {id(s.runtime) for s in kept.values()}
    for state in before.values():
        if id(state.runtime) not in kept_runtimes:
            state.runtime.pool.drain()
            if state.runtime.active:
                leaving.append(state)
    serving = tuple(s for s in kept.values() if s.health.in_host_set)
    balancer = make_balancer(
        cluster.lb_policy,
        HostSet(s.host() for s in serving),
        random.Random(),
        cluster.lb_options,
        active=_active_of({s.key: s.runtime for s in kept.values()}),
    )
    return ClusterSnapshot(
        cluster,
        serving,
        (*kept.values(), *leaving),
        balancer,
        {s.key: s.runtime for s in serving},
        endpoints,
    )


def _active_of(runtimes: dict[str, EndpointRuntime]) -> Callable[[Host], int]:
    def active(host: Host) -> int:
        return runtimes[host.key].active

    return active
