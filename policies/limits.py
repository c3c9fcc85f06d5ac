"""Envoy's ``circuit_breakers`` thresholds: caps on a cluster's concurrency, and the retry budget.

Theory of operation
-------------------
These are not the open/closed breaker of ``policies.breaker``: they are counters'
ceilings, checked when something is about to start (Envoy's
``cluster.circuit_breakers.thresholds``):

    max_connections       connections open to the cluster's endpoints
    max_pending_requests  requests waiting for a connection from the pool
    max_requests          requests in flight to the cluster
    max_retries           retries in flight to the cluster (unless a budget is set)

A check passes while the current count is *below* the ceiling: the one that would make
it ``ceiling + 1`` is refused (Envoy's ``UO`` overflow, a 503 without a try).

A ``RetryBudget`` replaces ``max_retries`` with a ceiling that scales with load: at
most ``budget_percent`` percent of the active requests (in flight plus pending) may be
retries, but never fewer than ``min_retry_concurrency``. With a budget configured,
``max_retries`` is ignored, as in Envoy. The percentage is rounded down.

The caller owns the counts (the cluster's data path keeps them); everything here is a
pure function of them.
"""

from __future__ import annotations

import math
from typing import Any

import attrs

from policies import settings
from policies.errors import InvalidSetting

__all__ = ["CircuitBreakerThresholds", "RetryBudget", "retry_allowed"]


@attrs.frozen
class RetryBudget:
    """Retries in flight as a share of the requests in flight, with a floor."""

    #: percent of active (in flight + pending) requests that may be retries
    budget_percent: float = attrs.field(default=20.0, validator=settings.between(0, 100))
    #: retries always allowed in flight, whatever the load
    min_retry_concurrency: int = attrs.field(default=3, validator=settings.integer_at_least(0))

    def max_active_retries(self, active_requests: int) -> int:
        """The retries that may be in flight alongside ``active_requests`` requests."""
        share = math.floor(self.budget_percent * active_requests / 100)
        return max(self.min_retry_concurrency, share)


def _budget_or_none(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, RetryBudget):
        raise InvalidSetting(attribute.name, f"must be a retry budget or none, not {value!r}")


@attrs.frozen
class CircuitBreakerThresholds:
    """A cluster's concurrency ceilings (Envoy's defaults)."""

    #: connections open over all the cluster's endpoints; over it the request (tcp: connection) gets
    #: 503 (is closed) at once
    max_connections: int = attrs.field(default=1024, validator=settings.integer_at_least(1))
    #: requests (tcp: connections) waiting for a new connection; over it: 503 (closed) at once
    max_pending_requests: int = attrs.field(default=1024, validator=settings.integer_at_least(0))
    #: requests in flight to the cluster; over it: 503 at once
    max_requests: int = attrs.field(default=1024, validator=settings.integer_at_least(1))
    #: requests being retried at once; a retry over it is not made
    max_retries: int = attrs.field(default=3, validator=settings.integer_at_least(0))
    #: when set, replaces ``max_retries``
    retry_budget: RetryBudget | None = attrs.field(default=None, validator=_budget_or_none)

    def connection_allowed(self, open_connections: int) -> bool:
        """Whether one more connection may be opened."""
        return open_connections < self.max_connections

    def pending_allowed(self, pending_requests: int) -> bool:
        """Whether one more request may wait for a connection."""
        return pending_requests < self.max_pending_requests

    def request_allowed(self, active_requests: int) -> bool:
        """Whether one more request may be sent."""
        return active_requests < self.max_requests

    def retry_allowed(
        self, active_requests: int, active_retries: int, pending_requests: int = 0
    ) -> bool:
        """Whether one more retry may start; see ``retry_allowed``."""
        return retry_allowed(self, active_requests, active_retries, pending_requests)


def retry_allowed(
    thresholds: CircuitBreakerThresholds,
    active_requests: int,
    active_retries: int,
    pending_requests: int = 0,
) -> bool:
    """Whether one more retry may start while ``active_retries`` are in flight.

    With a retry budget the ceiling is ``max(min_retry_concurrency, budget_percent% of
    active_requests + pending_requests)``; without one it is ``max_retries``.
    """
    budget = thresholds.retry_budget
    if budget is None:
        return active_retries < thresholds.max_retries
    return active_retries < budget.max_active_retries(active_requests + pending_requests)
