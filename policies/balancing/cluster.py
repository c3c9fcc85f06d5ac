"""The cluster balancer: priority, then locality, then the policy's own pick.

Theory of operation: a ``ClusterBalancer`` is built once per ``HostSet`` snapshot and
then asked ``pick(now, hash_key)`` for every request. On construction it plans the
priority loads and panic flags (``priority.py``) and builds one picker per level that
has load, so that a pick is a table lookup plus the policy's own O(1) or O(log n)
step:

1. Choose a level: a draw in [0, 100) (the request hash mod 100 for the hash
   policies, so that a key sticks to its level) indexes a 100-entry table of levels
   laid out by load, as Envoy's ``choosePriority`` does.
2. A level in panic balances over all of its hosts by host weight, ignoring health
   and locality.
3. Otherwise it balances over its localities that have a healthy host, each weighted
   by ``sum(host weights) * min(1, overprovisioning * healthy / total)`` (Envoy's
   effective locality weight, using the hosts' weights as the locality's capacity),
   in smooth weighted round robin (Envoy uses an EDF schedule to the same effect);
   then the policy picks among the locality's healthy hosts. The hash policies cannot
   pick a locality first without breaking affinity, so, as in Envoy, they fold the
   locality weight into each host's weight and build one table per level. (Envoy
   weighs localities only when ``locality_weighted_lb_config`` is set; here it is
   always on, and while every locality is healthy it equals plain host weighting.)

Slow start (``round_robin``, ``least_request``, ``random``; the hash policies ignore it,
as Envoy's do, because moving weight moves keys): while some healthy host is inside its
window, its weight is scaled by ``slow_start_percent`` of ``now``. The pickers are
rebuilt at the instants a percent changes (``_refresh_at``), so a pick costs a float
comparison more, and a rebuild (O(hosts), on the pick that crosses the instant)
restarts round-robin cycles and least-request schedules.

``now`` is the caller's monotonic clock in seconds (``trio.current_time()``), the same
clock as the hosts' ``ready_at``; it is only read for slow start and must not go
backwards (if it does, weights simply stay where they were).

The balancer keeps mutable pick state (round-robin positions, least-request deadlines)
and is meant to be shared by the tasks of one thread, as the data path does; it is not
thread-safe.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Final

from policies.balancing.maglev import Maglev
from policies.balancing.options import (
    POLICY_NAMES,
    BalancerConfigError,
    BalancerOptions,
    PolicyName,
)
from policies.balancing.pickers import (
    Fixed,
    Picker,
    least_request,
    smooth_round_robin,
    weighted_random,
)
from policies.balancing.priority import LevelCounts, PriorityPlan, plan_priorities
from policies.balancing.ring_hash import RingHash
from policies.balancing.slow_start import next_slow_start_change, slow_start_percent
from policies.hosts import Host, HostSet, LocalityGroup, PriorityLevel

__all__ = ["DEFAULT_OPTIONS", "ActiveRequests", "ClusterBalancer", "make_balancer"]

#: the data path's count of requests in flight to a host
ActiveRequests = Callable[[Host], int]

DEFAULT_OPTIONS: Final = BalancerOptions()

_HASH_POLICIES: Final = frozenset({"ring_hash", "maglev"})
_SLOW_START_POLICIES: Final = frozenset({"round_robin", "least_request", "random"})

# Locality health factors are kept in units of 0.01% so that the locality weights stay
# integers (smooth round robin is exact on integers) without visible rounding.
_FACTOR_UNIT: Final = 10_000


class _Localities:
    """Pick a locality, then a host within it."""

    __slots__ = ("_localities",)

    def __init__(self, localities: Picker[Picker[Host]]) -> None:
        self._localities = localities

    def pick(self, key: int, /) -> Host:
        return self._localities.pick(key).pick(key)


def _locality_weight(group: LocalityGroup, overprovisioning_percent: int) -> int:
    factor = min(
        _FACTOR_UNIT,
        overprovisioning_percent * (_FACTOR_UNIT // 100) * len(group.healthy) // len(group.hosts),
    )
    return group.weight * factor


class ClusterBalancer:
    """Picks hosts from one ``HostSet`` snapshot; build one per snapshot."""

    __slots__ = (
        "_active",
        "_getrandbits",
        "_hashing",
        "_only",
        "_ramping",
        "_random",
        "_refresh_at",
        "_rng",
        "_table",
        "hosts",
        "options",
        "plan",
        "policy",
    )

    def __init__(
        self,
        policy: PolicyName,
        hosts: HostSet,
        rng: random.Random,
        options: BalancerOptions,
        active: ActiveRequests | None,
    ) -> None:
        self.policy: Final = policy
        self.hosts: Final = hosts
        self.options: Final = options
        #: per level of ``hosts.levels``: health, load and panic flag
        self.plan: Final[PriorityPlan] = plan_priorities(
            [LevelCounts(len(level.healthy), len(level.hosts)) for level in hosts.levels],
            overprovisioning_percent=options.overprovisioning_percent,
            panic_threshold=options.panic_threshold,
        )
        self._rng = rng
        self._random = rng.random
        self._getrandbits = rng.getrandbits
        self._active = active
        self._hashing = policy in _HASH_POLICIES
        self._table: tuple[Picker[Host] | None, ...] | None = None
        self._only: Picker[Host] | None = None
        # Healthy hosts that may still be in their slow-start window. Their percents
        # depend on ``now``, so with any of them the first pick builds the pickers.
        self._ramping: tuple[Host, ...] = ()
        if options.slow_start_window > 0 and policy in _SLOW_START_POLICIES:
            self._ramping = tuple(h for level in hosts.levels for h in level.healthy)
        if self._ramping:
            self._refresh_at = -math.inf
        else:
            self._refresh_at = math.inf
            self._install(None)

    def pick(self, now: float, hash_key: int | None = None) -> Host | None:
        """A host for one request, or None when no host can take it.

        Args:
            now: the caller's clock, in seconds (read only for slow start).
            hash_key: the request's 64-bit affinity hash (``hash_key()``), read by
                ``ring_hash`` and ``maglev``; None picks at random.
        """
        if now >= self._refresh_at:
            self._refresh(now)
        table = self._table
        if self._hashing:
            if hash_key is None:
                hash_key = self._getrandbits(64)
            picker = self._only if table is None else table[hash_key % 100]
            return None if picker is None else picker.pick(hash_key)
        picker = self._only if table is None else table[int(self._random() * 100)]
        return None if picker is None else picker.pick(0)

    def _refresh(self, now: float) -> None:
        """Rebuild the pickers with the slow-start percents at ``now``."""
        options = self.options
        window = options.slow_start_window
        floor = options.slow_start_min_percent
        percents: dict[str, int] = {}
        next_at = math.inf
        for host in self._ramping:
            percent = slow_start_percent(now, host.ready_at, window, floor)
            if percent < 100:
                percents[host.key] = percent
                next_at = min(next_at, next_slow_start_change(now, host.ready_at, window, floor))
        # The percent never decreases, so a host at 100 stays there: stop watching it.
        self._ramping = tuple(h for h in self._ramping if h.key in percents)
        self._refresh_at = next_at
        self._install(percents or None)

    def _install(self, percents: dict[str, int] | None) -> None:
        """Build a picker per level with load and lay the levels out by load."""
        if percents is None:

            def weight(host: Host) -> int:
                return host.weight

        else:
            # Everyone is scaled by 100 so that the ramping hosts' percents stay exact.
            def weight(host: Host) -> int:
                return host.weight * percents.get(host.key, 100)

        levels = self.hosts.levels
        plan = self.plan
        pickers = [
            self._level_picker(level, panic, weight) if load else None
            for level, load, panic in zip(levels, plan.loads, plan.panic, strict=True)
        ]
        table: list[Picker[Host] | None] = []
        for picker, load in zip(pickers, plan.loads, strict=True):
            table.extend([picker] * load)
        distinct = {id(p) for p in table}
        if len(distinct) <= 1:
            self._table = None
            self._only = table[0] if table else None
        else:
            self._table = tuple(table)
            self._only = None

    def _level_picker(
        self, level: PriorityLevel, panic: bool, weight: Callable[[Host], int]
    ) -> Picker[Host] | None:
        if panic:
            return self._slice(level.hosts, [weight(h) for h in level.hosts])
        op = self.options.overprovisioning_percent
        groups = [(g, _locality_weight(g, op)) for g in level.localities if g.healthy]
        groups = [(g, w) for g, w in groups if w > 0]
        if not groups:
            return None
        if len(groups) == 1:
            healthy = groups[0][0].healthy
            return self._slice(healthy, [weight(h) for h in healthy])
        if self._hashing:
            # One table per level: each host's share is its locality's share times its
            # share of the locality's healthy weight (Envoy's normalizeLocalityWeights).
            members: list[Host] = []
            shares: list[float] = []
            total = sum(w for _, w in groups)
            for g, w in groups:
                healthy_weight = sum(h.weight for h in g.healthy)
                for h in g.healthy:
                    members.append(h)
                    shares.append(h.weight / healthy_weight * (w / total))
            return self._consistent(members, shares)
        slices = [self._slice(g.healthy, [weight(h) for h in g.healthy]) for g, _ in groups]
        return _Localities(smooth_round_robin(slices, [w for _, w in groups]))

    def _slice(self, hosts: Sequence[Host], weights: Sequence[int]) -> Picker[Host]:
        """The policy's picker over ``hosts`` (never empty) with these weights."""
        if len(hosts) == 1:
            return Fixed(hosts[0])
        policy = self.policy
        if policy == "round_robin":
            return smooth_round_robin(hosts, weights)
        if policy == "random":
            return weighted_random(hosts, weights, self._rng)
        if policy == "least_request":
            assert self._active is not None  # make_balancer insists
            return least_request(
                hosts,
                weights,
                self._rng,
                self._active,
                choice_count=self.options.choice_count,
                bias=self.options.active_request_bias,
            )
        return self._consistent(hosts, [float(w) for w in weights])

    def _consistent(self, hosts: Sequence[Host], weights: Sequence[float]) -> Picker[Host]:
        if len(hosts) == 1:
            return Fixed(hosts[0])
        keys = [h.key for h in hosts]
        options = self.options
        if self.policy == "ring_hash":
            return RingHash(
                hosts,
                keys,
                weights,
                min_ring_size=options.min_ring_size,
                max_ring_size=options.max_ring_size,
            )
        return Maglev(hosts, keys, weights, table_size=options.maglev_table_size)


def make_balancer(
    policy_name: str,
    hosts: HostSet,
    rng: random.Random,
    options: BalancerOptions = DEFAULT_OPTIONS,
    *,
    active: ActiveRequests | None = None,
) -> ClusterBalancer:
    """The balancer for one snapshot of a cluster's hosts.

    Args:
        policy_name: one of ``POLICY_NAMES`` (the config's ``lb_policy``).
        rng: the source of every random choice; seed it for reproducible picks.
        active: requests in flight to a host; required by ``least_request``.

    Raises:
        BalancerConfigError: an unknown policy, or ``least_request`` without ``active``.
    """
    if policy_name not in POLICY_NAMES:
        raise BalancerConfigError(
            f"unknown load balancing policy {policy_name!r}; expected one of "
            + ", ".join(POLICY_NAMES)
        )
    if policy_name == "least_request" and active is None:
        raise BalancerConfigError("least_request needs the active request counts (active=)")
    return ClusterBalancer(policy_name, hosts, rng, options, active)
