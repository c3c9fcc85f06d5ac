"""The TCP proxy: bytes both ways between a client and one endpoint of a cluster.

Each direction is a copy loop with backpressure (a piece is written before the next
read); a half-close is passed on (``send_eof``), and the connection ends when both
directions have ended or either side resets.

Stats: the connection to the endpoint is the attempt, charged as HTTP attempts are
(``gateway.proxy.outcome``) but without a request: it counts in the cluster's
``upstream_cx_*`` and the endpoint's ``cx_*`` only. It is counted in its endpoint
pool's ``open`` (and ``connecting`` while it connects), beside the HTTP proxy's pooled
connections, so the cluster's gauges and ``circuit_breakers.max_connections`` see both.

Circuit breakers, as Envoy's tcp_proxy applies them (a client connection is the
cluster's request):

- ``circuit_breakers``: with ``max_connections`` open over the cluster's endpoints, or
  ``max_pending_requests`` connections being opened, the client connection is closed at
  once without connecting (``upstream_cx_overflow``, resp.
  ``upstream_rq_pending_overflow``). That is the gateway's own limit: no attempt, so
  nothing for the endpoint's stats, the outlier detector or the classic breaker.
- the classic ``breaker`` (``gateway.cluster.breaker``): asked once per client
  connection before an endpoint is picked; open, the client connection is closed at
  once (``breaker.rq_rejected``). When the connection ends its permit gets its result:
  a connect failure or a reset by the upstream is a failure, a connection that
  connected and ended otherwise a success (``TCP_CONNECTED``), no endpoint to pick the
  503 the HTTP proxy would answer; refused by a threshold, reset by the client or cut
  short (a drain), it tells nothing of the upstream (abandoned). A cluster without a
  breaker pays one attribute test.

The outlier detector hears of a TCP attempt when its connect ends, as in Envoy's
tcp_proxy: a success, or ``Failure.CONNECT`` (which counts as a gateway failure and a
5xx). What happens after the connect (a reset, a long quiet connection) is not reported:
a success already went, and a second result for the same attempt would break up the
detector's runs of consecutive failures.
"""

from __future__ import annotations

import logging
from typing import TypeAlias

import trio

from gateway.cluster.snapshot import EndpointRuntime
from gateway.errors import NoHealthyUpstream, UpstreamConnectError
from gateway.listener.context import ListenerContext
from gateway.netio import ByteStream, SocketIO
from gateway.observe.stats import ClusterStats
from gateway.proxy.outcome import TCP_CONNECTED, charge_attempt, charge_connected, failure_of
from policies.balancing import hash_key
from policies.retry import Failure

log = logging.getLogger("triogate.tcp")

READ_SIZE = 65536

#: a connection's result for the classic breaker when it says nothing of the upstream
ABANDONED = 0

Stream: TypeAlias = trio.abc.HalfCloseableStream | ByteStream


class _Splice:
    """Both directions of one proxied connection, and which side broke it, if one did."""

    __slots__ = ("broken", "client", "scope", "upstream")

    def __init__(self, client: Stream, upstream: Stream) -> None:
        self.client = client
        self.upstream = upstream
        self.scope = trio.CancelScope()
        #: the side that broke the connection (a receive from it or a send to it
        #: failed); None while neither did
        self.broken: Stream | None = None

    async def run(self) -> None:
        """Copy both ways until both directions ended, or either side broke."""
        with self.scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._copy, self.client, self.upstream)
                nursery.start_soon(self._copy, self.upstream, self.client)

    async def _copy(self, src: Stream, dst: Stream) -> None:
        failing = src  # the stream whose failure would end the copy now
        try:
            while data := await src.receive_some(READ_SIZE):
                failing = dst
                await dst.send_all(data)
                failing = src
            failing = dst
            await dst.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            if self.broken is None:
                self.broken = failing
            self.scope.cancel()  # a reset on either side ends both directions


async def serve_tcp_connection(
    client: trio.abc.HalfCloseableStream, ctx: ListenerContext, cluster: str
) -> None:
    """Proxy one client connection to an endpoint picked from ``cluster``."""
    async with client:
        cluster_stats = ctx.cluster_stats.get(cluster) or ctx.registry.cluster(cluster)
        guard = cluster_stats.breaker
        if guard is None:  # the classic breaker: off unless configured
            await _proxy(client, ctx, cluster, cluster_stats)
            return
        permit = guard.allow(ctx.now)
        if permit is None:
            cluster_stats.breaker_rq_rejected += 1
            log.info("tcp %s: circuit breaker open for cluster %r", ctx.name, cluster)
            return
        result: int | Failure = ABANDONED  # unless the connection tells otherwise
        try:
            result = await _proxy(client, ctx, cluster, cluster_stats)
        finally:
            guard.record(permit, result, ctx.now)


async def _proxy(
    client: trio.abc.HalfCloseableStream,
    ctx: ListenerContext,
    cluster: str,
    cluster_stats: ClusterStats,
) -> int | Failure:
    """Connect ``client`` to an endpoint of ``cluster``; returns the result for the
    classic breaker (see the module docstring)."""
    snapshot = ctx.dataplane.current.clusters[cluster].snapshot
    client_ip = client.peer_ip() if isinstance(client, SocketIO) else b""
    endpoint = snapshot.pick(ctx.now, hash_key(client_ip) if snapshot.uses_hash else None)
    if endpoint is None:
        cluster_stats.upstream_cx_none_healthy += 1
        log.info("tcp %s: no endpoint in cluster %r", ctx.name, cluster)
        return NoHealthyUpstream.status_hint
    thresholds = cluster_stats.thresholds
    if sum(m.runtime.pool.open for m in snapshot.all_endpoints) >= thresholds.max_connections:
        cluster_stats.upstream_cx_overflow += 1
        log.info("tcp %s: cluster %r at circuit_breakers.max_connections", ctx.name, cluster)
        return ABANDONED
    if cluster_stats.rq_connecting >= thresholds.max_pending_requests:
        cluster_stats.upstream_rq_pending_overflow += 1
        log.info("tcp %s: cluster %r at circuit_breakers.max_pending_requests", ctx.name, cluster)
        return ABANDONED
    return await _connect_and_splice(client, ctx, endpoint, cluster_stats)


async def _connect_and_splice(
    client: trio.abc.HalfCloseableStream,
    ctx: ListenerContext,
    endpoint: EndpointRuntime,
    cluster_stats: ClusterStats,
) -> int | Failure:
    """Connect to ``endpoint`` and copy until the connection ends; returns its result."""
    endpoint_stats = cluster_stats.endpoint(endpoint.key)
    pool = endpoint.pool
    # in flight from the pick on, connect included: least_request must see a connection
    # that is still opening (as the HTTP proxy counts its requests)
    endpoint.active += 1
    pool.open += 1
    try:
        pool.connecting += 1
        cluster_stats.rq_connecting += 1
        try:
            upstream = await pool.connect()
        except UpstreamConnectError as e:
            charge_attempt(cluster_stats, endpoint_stats, e, request=False)
            log.info("tcp %s: %s", ctx.name, e)
            return failure_of(e)
        finally:
            pool.connecting -= 1
            cluster_stats.rq_connecting -= 1
        charge_connected(cluster_stats, endpoint_stats)
        splice = _Splice(client, upstream)
        try:
            await splice.run()
        finally:
            upstream.close()
        if splice.broken is None:
            return TCP_CONNECTED
        # a client that broke off says nothing of the upstream
        return Failure.RESET if splice.broken is upstream else ABANDONED
    finally:
        endpoint.active -= 1
        pool.open -= 1
