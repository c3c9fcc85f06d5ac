"""Load balancers as pure policies: Envoy's priority and locality math, five pickers.

The data path calls one thing::

    balancer = make_balancer(cluster.lb_policy, HostSet(hosts), rng, options, active=...)
    host = balancer.pick(now, hash_key=hash_key(request_affinity_bytes))

Build a balancer once per host set snapshot (the build is where the work is: priority
plan, locality weights, rings and Maglev tables), then pick from it per request.

Errors::

    PolicyError (policies.errors)
    ├── HostError(ValueError)             a bad host or host set (policies.hosts)
    └── BalancerConfigError(ValueError)   an unknown policy name, an option out of range

Modules: ``options`` (BalancerOptions), ``priority`` (load spill and panic),
``slow_start``, ``pickers`` (round robin, random, least request), ``ring_hash``,
``maglev``, ``hashing``, ``cluster`` (the balancer that ties them together).
"""

from __future__ import annotations

from policies.balancing.cluster import (
    DEFAULT_OPTIONS,
    ActiveRequests,
    ClusterBalancer,
    make_balancer,
)
from policies.balancing.hashing import hash_key
from policies.balancing.options import (
    POLICY_NAMES,
    BalancerConfigError,
    BalancerOptions,
    PolicyName,
)
from policies.balancing.priority import PriorityPlan, plan_priorities
from policies.balancing.slow_start import slow_start_percent

__all__ = [
    "DEFAULT_OPTIONS",
    "POLICY_NAMES",
    "ActiveRequests",
    "BalancerConfigError",
    "BalancerOptions",
    "ClusterBalancer",
    "PolicyName",
    "PriorityPlan",
    "hash_key",
    "make_balancer",
    "plan_priorities",
    "slow_start_percent",
]
