"""How an attempt's outcome is charged to its cluster's and endpoint's stats (HTTP and TCP).

An *attempt* is one try on one endpoint: an HTTP request sent on one upstream
connection, or a TCP connection. Every upstream figure the data path keeps is charged
here, exactly once per attempt, when the attempt ends (``ClusterStats`` and
``EndpointStats`` say what each counter means):

- a response: its status class, ``upstream_rq_time``, the endpoint's ``rq_total`` (and
  ``rq_error`` for a 5xx);
- a failure, an ``UpstreamError``: the status class of the local reply it maps to (as
  Envoy charges aborted upstream requests) and why: a connect failure or timeout, the
  route timeout (``upstream_rq_timeout``), the try's own timeout
  (``upstream_rq_per_try_timeout``), a full pool (``upstream_cx_overflow``, the
  gateway's limit and not the endpoint's failure, so not in its ``rq_error``); a
  ``circuit_breakers`` threshold reached (``CircuitBreakerOverflow``) is no attempt:
  only its overflow counter moves, where it was refused;
- cut short by the client going away or a drain (status 0): slot 0, not the endpoint's
  fault.

When the cluster has outlier detection (``cluster.outcomes``, an ``OutcomeBuffer``),
the attempt's result also goes there for the detector: a status, or the ``Failure`` the
error was (a full pool is the gateway's limit, not the endpoint's failure, and an
attempt cut short is nobody's: neither is reported). Without it the cost is one
attribute test.

A TCP attempt carries no request (``request=False``): only its connection is counted.
An HTTP attempt that opened a new connection counts it with ``opened``.
"""

from __future__ import annotations

from gateway.errors import (
    CircuitBreakerOverflow,
    PoolExhausted,
    UpstreamConnectError,
    UpstreamConnectTimeout,
    UpstreamError,
    UpstreamPerTryTimeout,
    UpstreamResetError,
    UpstreamTimeoutError,
)
from gateway.observe.stats import ClusterStats, EndpointStats
from policies.retry import Failure

#: what a TCP attempt that connected reports to the outlier detector: a success
TCP_CONNECTED = 200


def charge_opened(cluster: ClusterStats, endpoint: EndpointStats) -> None:
    """An attempt opened a connection to the endpoint."""
    cluster.upstream_cx_total += 1
    endpoint.cx_total += 1


def charge_connected(cluster: ClusterStats, endpoint: EndpointStats) -> None:
    """A TCP attempt connected: its connection is counted, and the outlier detector
    hears of a success (a TCP attempt's only result besides a connect failure)."""
    charge_opened(cluster, endpoint)
    if cluster.outcomes is not None:
        cluster.outcomes.add(endpoint.name, TCP_CONNECTED)


def charge_attempt(
    cluster: ClusterStats,
    endpoint: EndpointStats,
    outcome: int | UpstreamError,
    ms: float = -1.0,
    *,
    request: bool = True,
) -> None:
    """Charge one attempt's outcome: a status (0: no response), or how it failed.

    ``ms`` is the attempt's time to the end of its response (a response only).
    """
    if type(outcome) is int:  # the common case first: a response
        cluster.upstream_rq_xx[outcome // 100] += 1
        if not outcome:
            return  # cut short: not the endpoint's doing
        endpoint.rq_total += 1
        if outcome >= 500:
            endpoint.rq_error += 1
        cluster.upstream_rq_time.record(ms)
        if cluster.outcomes is not None:
            cluster.outcomes.add(endpoint.name, outcome)
        return
    assert isinstance(outcome, UpstreamError)
    if isinstance(outcome, CircuitBreakerOverflow):
        return  # refused before the pool: no attempt, counted in its overflow counter
    if isinstance(outcome, PoolExhausted):
        cluster.upstream_cx_overflow += 1
        if request:
            cluster.upstream_rq_xx[outcome.status_hint // 100] += 1
        return
    if cluster.outcomes is not None:
        cluster.outcomes.add(endpoint.name, failure_of(outcome))
    if isinstance(outcome, UpstreamConnectError):
        charge_opened(cluster, endpoint)
        cluster.upstream_cx_connect_fail += 1
        endpoint.cx_connect_fail += 1
        if isinstance(outcome, UpstreamConnectTimeout):
            cluster.upstream_cx_connect_timeout += 1
    if not request:
        return
    cluster.upstream_rq_xx[outcome.status_hint // 100] += 1
    endpoint.rq_total += 1
    endpoint.rq_error += 1
    if isinstance(outcome, UpstreamTimeoutError):
        if isinstance(outcome, UpstreamPerTryTimeout):
            cluster.upstream_rq_per_try_timeout += 1
        else:
            cluster.upstream_rq_timeout += 1
        endpoint.rq_timeout += 1


def failure_of(error: UpstreamError) -> Failure:
    """How an attempt failed, as the retry policy and the outlier detector see it."""
    if isinstance(error, UpstreamConnectError):
        return Failure.CONNECT
    if isinstance(error, UpstreamResetError):
        return Failure.RESET
    if isinstance(error, UpstreamPerTryTimeout):
        return Failure.TIMEOUT
    return Failure.OTHER
