"""A cluster's classic breaker (``policies.breaker``) as the data path uses it.

Theory of operation: a cluster with ``breaker`` has one ``ClusterBreaker`` per process,
made by its cluster actor and hung on the cluster's stats (``ClusterStats.breaker``),
the object the data path already holds for every request. The proxy asks ``allow``
once per request (on the listener's coarse clock, ``ctx.now``) before any endpoint is
picked: None means fail fast with a 503 and ``x-triogate-breaker: open``, without
reaching the pool. The request's final result goes back with ``record`` when it ends:
its status, the ``Failure`` of an upstream error, or abandoned (status 0: the client
went away). The breaker guards the cluster, so it judges requests (after their
retries), not attempts. The TCP proxy (``gateway.proxy.tcp``) takes a client
connection for a request: open, the connection is closed at once; its result comes
when it ends (a connect failure or upstream reset fails, a normal end passes).

Both calls are plain method calls: no message, no waiting (STYLE.md, hot path rule).
Every state change is drained right there into the cluster's ``EventLog`` (kind
``breaker``, endpoint ``*``: the breaker guards the whole cluster), a timestamped event
also logged as a JSON line.

With worker processes each worker has its own breaker (as Envoy's circuit breakers are
per worker): its events go to the worker's log, and ``breaker.open`` in each worker's
stats report is 1 while its breaker is not closed, so the primary's sum is how many
workers have it open. A cluster without ``breaker`` has none (``ClusterStats.breaker``
is None): the data path pays one attribute test.
"""

from __future__ import annotations

from gateway.observe.events import EventLog
from policies.breaker import BreakerConfig, BreakerState, CircuitBreaker, Outcome, Permit
from policies.retry import Failure

__all__ = ["ClusterBreaker"]


class ClusterBreaker:
    """One cluster's breaker in this process; see the module docstring."""

    __slots__ = ("breaker", "cluster", "config", "events")

    def __init__(self, cluster: str, config: BreakerConfig, events: EventLog | None) -> None:
        self.cluster = cluster
        self.config = config
        self.breaker = CircuitBreaker(config)
        self.events = events

    def allow(self, now: float) -> Permit | None:
        """Leave to send one request at ``now``, or None: fail fast."""
        breaker = self.breaker
        permit = breaker.allow(now)
        if breaker.events:
            self._log()
        return permit

    def record(self, permit: Permit, result: int | Failure, now: float) -> None:
        """A request's end: its status (0: abandoned), or how its last attempt failed."""
        breaker = self.breaker
        if result == 0:
            breaker.record(permit, Outcome.ABANDONED, now)
        else:
            breaker.record(permit, self.config.outcome_of(result), now)
        if breaker.events:
            self._log()

    def state_at(self, now: float) -> BreakerState:
        state = self.breaker.state_at(now)
        if self.breaker.events:
            self._log()
        return state

    def _log(self) -> None:
        changes = self.breaker.drain_events()
        if self.events is None:
            return
        for change in changes:
            self.events.record(
                self.cluster,
                "*",
                "breaker",
                change.old.value,
                change.new.value,
                change.reason.value,
            )
