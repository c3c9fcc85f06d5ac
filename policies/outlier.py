"""Outlier detection: eject the endpoints that answer worse than the rest, for a while.

Theory of operation
-------------------
Envoy's passive health checking, over one cluster's endpoints (by host key). The
caller reports every attempt's result (``record``: a status, or a ``Failure`` before
one) and calls ``tick(now)`` at least at ``next_tick()``. Four detectors find outliers:

    consecutive_5xx              ``consecutive_5xx`` 5xx results in a row (a ``Failure``
                                 counts as a 5xx); judged at once, in ``record``
    consecutive_gateway_failure  ``consecutive_gateway_failure`` 502/503/504 or
                                 ``Failure`` results in a row; judged at once
    success_rate                 every ``interval``: among the endpoints with at least
                                 ``success_rate_request_volume`` results in the interval
                                 (if there are ``success_rate_minimum_hosts`` of them),
                                 those whose success rate is below
                                 ``mean - success_rate_stdev_factor / 1000 * stdev``
    failure_percentage           every ``interval``: among the endpoints with at least
                                 ``failure_percentage_request_volume`` results (if there
                                 are ``failure_percentage_minimum_hosts`` of them), those
                                 failing ``failure_percentage_threshold`` percent or more

A success is any result that is not a 5xx or a ``Failure``; the standard deviation is
the population's. A consecutive threshold of 0 turns that detector off (Envoy has
``enforcing_*`` percentages for this; this model enforces every detector it runs).

An outlier is ejected unless that would put more than ``max_ejection_percent`` of the
endpoints out; one endpoint may always be ejected (Envoy's rule). Ejection number ``k``
lasts ``min(base_ejection_time * k, max(base_ejection_time, max_ejection_time))``
seconds: ``k`` is the endpoint's multiplier, which grows by one per ejection until the
cap is reached, and shrinks by one at each interval sweep that finds the endpoint in
service and back for at least an ``interval`` (Envoy's decay of the back-off). An
already ejected endpoint is never judged (its late results are counted but cannot
eject it again).

An endpoint's ejection ends when its time has passed (noticed at the next call that
passes ``now``: ``tick``, ``record``, ``ejected``) or early, when an active health check
passes (``uneject``). Each endpoint is SERVING or EJECTED, and every change goes
through ``TRANSITIONS``; events (``EndpointEjected``, ``EndpointReturned``) wait in
order for ``drain_events``.

``now`` is a monotonic reading in seconds, never decreasing. The detector is built at
the start of the first interval (``now``) and sweeps at most once per ``interval``:
``tick`` before ``next_tick()`` only returns the endpoints whose time passed. Outliers
found by a sweep are ejected worst first (then by key), as far as the cap allows.
Membership changes go through ``set_hosts``: a removed endpoint is forgotten (no
event), a new one starts in service with a clean record; the cap is judged against the
current membership.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from typing import Final

import attrs

from policies import settings
from policies.errors import ImpossibleTransition
from policies.retry import Failure

__all__ = [
    "TRANSITIONS",
    "EjectionReason",
    "EjectionState",
    "EjectionTrigger",
    "EndpointEjected",
    "EndpointReturned",
    "OutlierConfig",
    "OutlierDetector",
    "OutlierEvent",
    "transition",
]

GATEWAY_FAILURES: Final = frozenset({502, 503, 504})


@attrs.frozen
class OutlierConfig:
    """A cluster's outlier detection (Envoy's defaults; durations in seconds)."""

    #: 5xx in a row that eject; 0: off
    consecutive_5xx: int = attrs.field(default=5, validator=settings.integer_at_least(0))
    #: 502/503/504 or connection failures in a row that eject; 0: off
    consecutive_gateway_failure: int = attrs.field(
        default=5, validator=settings.integer_at_least(0)
    )
    #: seconds between sweeps (success rate, failure percentage, returns, decay)
    interval: float = attrs.field(default=10.0, validator=settings.positive)
    #: the first ejection's length; ejection k lasts k times this
    base_ejection_time: float = attrs.field(default=30.0, validator=settings.positive)
    #: the longest ejection (or base_ejection_time, if longer)
    max_ejection_time: float = attrs.field(default=300.0, validator=settings.positive)
    #: the most endpoints ejected at once, in percent (one may always be)
    max_ejection_percent: int = attrs.field(default=10, validator=settings.integer_between(0, 100))
    #: endpoints with enough volume needed for the success rate detector to judge
    success_rate_minimum_hosts: int = attrs.field(default=5, validator=settings.integer_at_least(1))
    #: results in an interval an endpoint needs to be judged by success rate
    success_rate_request_volume: int = attrs.field(
        default=100, validator=settings.integer_at_least(1)
    )
    #: the success rate threshold is mean - this / 1000 * stdev
    success_rate_stdev_factor: int = attrs.field(
        default=1900, validator=settings.integer_at_least(0)
    )
    #: failure percent at or above which an endpoint is ejected
    failure_percentage_threshold: int = attrs.field(
        default=85, validator=settings.integer_between(0, 100)
    )
    #: endpoints with enough volume needed for the failure percentage detector to judge
    failure_percentage_minimum_hosts: int = attrs.field(
        default=5, validator=settings.integer_at_least(1)
    )
    #: results in an interval an endpoint needs to be judged by failure percentage
    failure_percentage_request_volume: int = attrs.field(
        default=50, validator=settings.integer_at_least(1)
    )

    @property
    def ejection_cap(self) -> float:
        """The longest ejection: ``max(base_ejection_time, max_ejection_time)``."""
        return max(self.base_ejection_time, self.max_ejection_time)

    def ejection_time(self, times: int) -> float:
        """How long ejection number ``times`` (its multiplier) lasts."""
        return min(self.base_ejection_time * times, self.ejection_cap)

    def max_ejected(self, hosts: int) -> int:
        """The most of ``hosts`` endpoints that may be out at once (at least one)."""
        return max(1, hosts * self.max_ejection_percent // 100)


class EjectionReason(enum.Enum):
    """Which detector ejected an endpoint (Envoy's names)."""

    CONSECUTIVE_5XX = "consecutive_5xx"
    CONSECUTIVE_GATEWAY_FAILURE = "consecutive_gateway_failure"
    SUCCESS_RATE = "success_rate"
    FAILURE_PERCENTAGE = "failure_percentage"


class EjectionState(enum.Enum):
    SERVING = "serving"
    EJECTED = "ejected"


class EjectionTrigger(enum.Enum):
    """What moves an endpoint between in service and ejected."""

    #: a detector found it an outlier and the cap leaves room
    OUTLIER_FOUND = "outlier_found"
    #: its ejection time has passed
    EJECTION_ENDED = "ejection_ended"
    #: an active health check passed
    HEALTH_CHECK_PASSED = "health_check_passed"


_SERVING, _EJECTED = EjectionState.SERVING, EjectionState.EJECTED

#: every legal change of one endpoint; anything else is impossible
TRANSITIONS: Final[dict[tuple[EjectionState, EjectionTrigger], EjectionState]] = {
    (_SERVING, EjectionTrigger.OUTLIER_FOUND): _EJECTED,
    (_EJECTED, EjectionTrigger.EJECTION_ENDED): _SERVING,
    (_EJECTED, EjectionTrigger.HEALTH_CHECK_PASSED): _SERVING,
}


def transition(state: EjectionState, trigger: EjectionTrigger) -> EjectionState:
    """The state after ``trigger``; ``ImpossibleTransition`` if the table has no row."""
    try:
        return TRANSITIONS[state, trigger]
    except KeyError:
        raise ImpossibleTransition("outlier detector", state, trigger) from None


@attrs.frozen
class EndpointEjected:
    """``host`` was ejected at ``at`` until ``until``; ``times`` is the multiplier used."""

    host: str
    reason: EjectionReason
    at: float
    until: float
    times: int


@attrs.frozen
class EndpointReturned:
    """``host`` went back into service at ``at`` (its ``until``, or a passing check)."""

    host: str
    at: float
    trigger: EjectionTrigger


OutlierEvent = EndpointEjected | EndpointReturned


@attrs.define
class _Endpoint:
    state: EjectionState = EjectionState.SERVING
    consecutive_5xx: int = 0
    consecutive_gateway_failures: int = 0
    #: this interval's results
    successes: int = 0
    failures: int = 0
    #: the ejection back-off multiplier
    times: int = 0
    until: float = -math.inf
    #: when it last went back into service
    returned_at: float | None = None


class OutlierDetector:
    """One cluster's outlier detection; see the module docstring."""

    def __init__(self, config: OutlierConfig, hosts: Iterable[str] = (), now: float = 0.0):
        """A detector over ``hosts`` whose first interval starts at ``now``."""
        self.config = config
        self._endpoints = {h: _Endpoint() for h in sorted(set(hosts))}
        self._next_sweep = now + config.interval
        self._events: list[OutlierEvent] = []
        #: outliers the cap left in service (Envoy's ``ejections_overflow``)
        self.overflows = 0

    def __repr__(self) -> str:
        return f"OutlierDetector({self.config!r}, hosts={sorted(self._endpoints)!r})"

    # -- reading ---------------------------------------------------------------------

    @property
    def hosts(self) -> frozenset[str]:
        return frozenset(self._endpoints)

    def ejected(self, now: float) -> frozenset[str]:
        """The endpoints out of service at ``now``."""
        self._release(now)
        return frozenset(h for h, e in self._endpoints.items() if e.state is _EJECTED)

    def times(self, host: str) -> int:
        """``host``'s ejection multiplier (0 for an unknown host)."""
        endpoint = self._endpoints.get(host)
        return endpoint.times if endpoint else 0

    def next_tick(self) -> float:
        """When ``tick`` next has work: the next sweep or the first ejection to end."""
        ends = (e.until for e in self._endpoints.values() if e.state is _EJECTED)
        return min([self._next_sweep, *ends])

    # -- feeding ---------------------------------------------------------------------

    def set_hosts(self, hosts: Iterable[str]) -> None:
        """The cluster's endpoints now: new ones start clean, removed ones are forgotten."""
        keep = set(hosts)
        endpoints = self._endpoints
        self._endpoints = {h: endpoints.get(h) or _Endpoint() for h in sorted(keep)}

    def record(self, host: str, result: int | Failure, now: float) -> None:
        """The result of one attempt on ``host``: a status, or a failure before one."""
        self._release(now)
        self._record(host, result, now)

    def record_many(self, results: Iterable[tuple[str, int | Failure]], now: float) -> None:
        """Several results at once, in order (a batch the data path sent together)."""
        self._release(now)
        for host, result in results:
            self._record(host, result, now)

    def uneject(self, host: str, now: float) -> None:
        """An active health check of ``host`` passed: an ejection ends early."""
        self._release(now)
        endpoint = self._endpoints.get(host)
        if endpoint is not None and endpoint.state is _EJECTED:
            self._return(host, endpoint, EjectionTrigger.HEALTH_CHECK_PASSED, now)

    def tick(self, now: float) -> None:
        """Return the endpoints whose time passed; sweep if an interval has passed."""
        self._release(now)
        if now >= self._next_sweep:
            self._sweep(now)
            self._next_sweep = now + self.config.interval

    def drain_events(self) -> list[OutlierEvent]:
        """The ejections and returns since the last drain, oldest first."""
        events, self._events = self._events, []
        return events

    # -- inside ----------------------------------------------------------------------

    def _record(self, host: str, result: int | Failure, now: float) -> None:
        endpoint = self._endpoints.get(host)
        if endpoint is None:
            return  # a late result from a removed endpoint
        config = self.config
        if isinstance(result, Failure):
            server_error = gateway_failure = True
        else:
            server_error = 500 <= result <= 599
            gateway_failure = result in GATEWAY_FAILURES
        if not server_error:
            endpoint.successes += 1
            endpoint.consecutive_5xx = endpoint.consecutive_gateway_failures = 0
            return
        endpoint.failures += 1
        endpoint.consecutive_5xx += 1
        if gateway_failure:
            endpoint.consecutive_gateway_failures += 1
        else:
            endpoint.consecutive_gateway_failures = 0
        if endpoint.state is _EJECTED:
            return
        if 0 < config.consecutive_gateway_failure <= endpoint.consecutive_gateway_failures:
            self._eject(host, endpoint, EjectionReason.CONSECUTIVE_GATEWAY_FAILURE, now)
        elif 0 < config.consecutive_5xx <= endpoint.consecutive_5xx:
            self._eject(host, endpoint, EjectionReason.CONSECUTIVE_5XX, now)

    def _release(self, now: float) -> None:
        ended = [
            (e.until, h)
            for h, e in self._endpoints.items()
            if e.state is _EJECTED and e.until <= now
        ]
        for until, host in sorted(ended):
            self._return(host, self._endpoints[host], EjectionTrigger.EJECTION_ENDED, until)

    def _sweep(self, now: float) -> None:
        config = self.config
        for endpoint in self._endpoints.values():
            back = endpoint.returned_at
            if (
                endpoint.state is _SERVING
                and endpoint.times > 0
                and back is not None
                and now - back >= config.interval
            ):
                endpoint.times -= 1
        judged = [
            (host, e.successes, e.successes + e.failures)
            for host, e in self._endpoints.items()
            if e.state is _SERVING
        ]
        for endpoint in self._endpoints.values():
            endpoint.successes = endpoint.failures = 0
        for host in _success_rate_outliers(config, judged):
            self._eject(host, self._endpoints[host], EjectionReason.SUCCESS_RATE, now)
        for host in _failure_percentage_outliers(config, judged):
            endpoint = self._endpoints[host]
            if endpoint.state is _SERVING:
                self._eject(host, endpoint, EjectionReason.FAILURE_PERCENTAGE, now)

    def _eject(self, host: str, endpoint: _Endpoint, reason: EjectionReason, now: float) -> None:
        config = self.config
        out = sum(1 for e in self._endpoints.values() if e.state is _EJECTED)
        if out >= config.max_ejected(len(self._endpoints)):
            self.overflows += 1
            return
        endpoint.state = transition(endpoint.state, EjectionTrigger.OUTLIER_FOUND)
        if config.base_ejection_time * endpoint.times < config.ejection_cap:
            endpoint.times += 1
        endpoint.until = now + config.ejection_time(endpoint.times)
        endpoint.consecutive_5xx = endpoint.consecutive_gateway_failures = 0
        self._events.append(EndpointEjected(host, reason, now, endpoint.until, endpoint.times))

    def _return(self, host: str, endpoint: _Endpoint, trigger: EjectionTrigger, at: float) -> None:
        endpoint.state = transition(endpoint.state, trigger)
        endpoint.returned_at = at
        endpoint.until = -math.inf
        self._events.append(EndpointReturned(host, at, trigger))


def _success_rate_outliers(config: OutlierConfig, judged: list[tuple[str, int, int]]) -> list[str]:
    """The endpoints whose success rate is below ``mean - factor / 1000 * stdev``, worst
    first (the cap may leave room for only some of them)."""
    rates = [
        (host, 100.0 * successes / total)
        for host, successes, total in judged
        if total >= config.success_rate_request_volume
    ]
    if not rates or len(rates) < config.success_rate_minimum_hosts:
        return []
    mean = math.fsum(rate for _, rate in rates) / len(rates)
    variance = math.fsum((rate - mean) ** 2 for _, rate in rates) / len(rates)
    threshold = mean - config.success_rate_stdev_factor / 1000 * math.sqrt(variance)
    return [host for rate, host in sorted((r, h) for h, r in rates) if rate < threshold]


def _failure_percentage_outliers(
    config: OutlierConfig, judged: list[tuple[str, int, int]]
) -> list[str]:
    """The endpoints failing ``failure_percentage_threshold`` percent or more, worst first."""
    percentages = [
        (host, 100.0 * (total - successes) / total)
        for host, successes, total in judged
        if total >= config.failure_percentage_request_volume
    ]
    if not percentages or len(percentages) < config.failure_percentage_minimum_hosts:
        return []
    threshold = config.failure_percentage_threshold
    worst_first = sorted(percentages, key=lambda pair: (-pair[1], pair[0]))
    return [host for host, percent in worst_first if percent >= threshold]
