"""The TCP proxy: bytes both ways between a client and one endpoint of a cluster.

The cluster is the listener's ``cluster``, or one drawn per connection from its
weighted ``split`` (``policies.split.WeightedSplit``, compiled by the listener context).
Each direction is a ``gateway.faults.toxics.Link``: a copy loop with backpressure (a
piece is written before the next read) while the listener has no toxic for it, the
listener's toxic chain when it has (added, changed or removed live); a half-close is
passed on (``send_eof``), and the connection ends when both directions have ended,
either side resets, or a toxic ends it.

Timeouts: the connect is bounded by the cluster's ``pool.connect_timeout``; a
connection with no byte either way for the listener's ``idle_timeout`` is closed on both
sides (its deadline moves with each chunk read; the listener's timer task fires it).

Connect retries, as Envoy's tcp_proxy ``max_connect_attempts``: a connect that fails
(refused, unreachable, timed out) is tried again on another endpoint not tried yet (the
balancer's pick, else the first healthy one left), up to ``MAX_CONNECT_ATTEMPTS`` (3)
attempts in all and never more than the cluster has endpoints taking connections: one
endpoint means one attempt. When every attempt failed the client connection is closed
and ``upstream_cx_connect_attempts_exceeded`` counts it. Each failed attempt is charged
to its endpoint and reported to the outlier detector as a connect failure.

Network filters (``gateway.filters.network``): a listener with ``network_filters`` has
its connection's filters begun when the client connects (``on_new_connection``, before
the upstream connect); each direction's destination is then a ``FilteredSink`` that
passes every piece through the filters' data hooks before writing it, and
``on_close`` runs when the connection ends. A filter that raises ends the connection.
A listener without them pays one truth test per connection.

Bytes (Envoy's names): the listener's ``downstream_cx_rx_bytes_total`` (read from
clients) and ``downstream_cx_tx_bytes_total`` (written to them), the cluster's
``upstream_cx_tx_bytes_total`` and ``upstream_cx_rx_bytes_total``, counted per chunk.

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
  connection before an endpoint is picked (its connect retries are the same request);
  open, the client connection is closed at once (``breaker.rq_rejected``). When the
  connection ends its permit gets its result: a connect failure (every attempt failed)
  or a reset by the upstream is a failure, a connection that connected and ended
  otherwise a success (``TCP_CONNECTED``), no endpoint to pick the 503 the HTTP proxy
  would answer; refused by a threshold, reset by the client or cut
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
from collections.abc import Sequence
from typing import TypeAlias

import trio

from gateway.cluster.snapshot import ClusterSnapshot, EndpointRuntime
from gateway.errors import NoHealthyUpstream, UpstreamConnectError
from gateway.faults.toxics import Link, ToxicConnection, set_reset_on_close
from gateway.filters.network import ConnectionFilters, FilteredSink, NetworkFilterFailed
from gateway.listener.context import ListenerContext
from gateway.netio import ByteStream, SocketIO
from gateway.observe.stats import ClusterStats, ListenerStats
from gateway.proxy.outcome import TCP_CONNECTED, charge_attempt, charge_connected, failure_of
from policies.balancing import hash_key
from policies.retry import Failure

log = logging.getLogger("triogate.tcp")

#: connect attempts per client connection at most (Envoy's tcp_proxy
#: ``max_connect_attempts``), each on another endpoint; fewer when the cluster has fewer
MAX_CONNECT_ATTEMPTS = 3

#: a connection's result for the classic breaker when it says nothing of the upstream
ABANDONED = 0

Stream: TypeAlias = ByteStream


class TcpConnection:
    """One proxied client connection under the listener's timers (idle timeout)."""

    __slots__ = ("client", "ctx", "deadline", "filters", "idle_timeout", "scope", "upstream")

    def __init__(self, client: Stream, ctx: ListenerContext) -> None:
        self.client = client
        self.ctx = ctx
        self.upstream: Stream | None = None
        self.scope = trio.CancelScope()
        self.idle_timeout = ctx.config.idle_timeout
        self.deadline = ctx.now + self.idle_timeout
        #: the listener's network filters for this connection; None without any
        self.filters: ConnectionFilters | None = None

    def cancel_if_idle(self) -> None:
        """A drain does not cut a TCP connection short: it ends with the drain's grace."""

    def end(self, reset: bool) -> None:
        """Close both sides now (a toxic's ``Close``); by RST if ``reset``."""
        for stream in (self.client, self.upstream):
            if stream is None:
                continue
            if reset and isinstance(stream, SocketIO):
                set_reset_on_close(stream.sock)
            stream.close()
        self.scope.cancel()


class _UpstreamBytes:
    """The client-to-server direction's bytes: read from the client, sent upstream."""

    __slots__ = ("cluster", "conn", "listener")

    def __init__(self, conn: TcpConnection, listener: ListenerStats, cluster: ClusterStats):
        self.conn = conn
        self.listener = listener
        self.cluster = cluster

    def read(self, size: int) -> None:
        self.listener.downstream_cx_rx_bytes_total += size
        conn = self.conn
        conn.deadline = conn.ctx.now + conn.idle_timeout

    def written(self, size: int) -> None:
        self.cluster.upstream_cx_tx_bytes_total += size


class _DownstreamBytes(_UpstreamBytes):
    """The server-to-client direction's bytes: read from the upstream, sent to the client."""

    __slots__ = ()

    def read(self, size: int) -> None:
        self.cluster.upstream_cx_rx_bytes_total += size
        conn = self.conn
        conn.deadline = conn.ctx.now + conn.idle_timeout

    def written(self, size: int) -> None:
        self.listener.downstream_cx_tx_bytes_total += size


class _Splice:
    """Both directions of one proxied connection, and which side broke it, if one did."""

    __slots__ = ("broken", "client", "links", "scope", "upstream")

    def __init__(self, client: Stream, upstream: Stream, links: Sequence[Link]) -> None:
        self.client = client
        self.upstream = upstream
        self.links = links
        self.scope = trio.CancelScope()
        #: the side that broke the connection (a receive from it or a send to it
        #: failed); None while neither did
        self.broken: Stream | None = None

    async def run(self) -> None:
        """Copy both ways until both directions ended, or either side broke."""
        with self.scope:
            async with trio.open_nursery() as nursery:
                for link in self.links:
                    nursery.start_soon(self._copy, link)

    async def _copy(self, link: Link) -> None:
        try:
            await link.run()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            failing = link.failing
            if isinstance(failing, FilteredSink):
                failing = failing.inner
            if self.broken is None and failing is not None:
                self.broken = self.client if failing is self.client else self.upstream
            self.scope.cancel()  # a reset on either side ends both directions
        except NetworkFilterFailed as e:  # counted by the filters; says nothing of the upstream
            log.info("tcp: %s", e)
            if self.broken is None:
                self.broken = self.client
            self.scope.cancel()


async def serve_tcp_connection(client: ByteStream, ctx: ListenerContext, cluster: str) -> None:
    """Proxy one client connection to an endpoint picked from ``cluster``."""
    conn = TcpConnection(client, ctx)
    ctx.connections.add(conn)
    try:
        with conn.scope:
            chains = ctx.dataplane.current.network_chains
            if chains:  # network filters: off unless configured
                chain = chains.get(ctx.name)
                if chain is not None:
                    conn.filters = chain.begin()
                    try:
                        await conn.filters.new_connection()
                    except NetworkFilterFailed as e:
                        log.info("tcp %s: %s", ctx.name, e)
                        return
            await _serve(conn, ctx, cluster)
    finally:
        ctx.connections.discard(conn)
        client.close()
        if conn.upstream is not None:
            conn.upstream.close()
        if conn.filters is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await conn.filters.close()


async def _serve(conn: TcpConnection, ctx: ListenerContext, cluster: str) -> None:
    client = conn.client
    cluster_stats = ctx.cluster_stats.get(cluster) or ctx.registry.cluster(cluster)
    client_ip = client.peer_ip().decode() if isinstance(client, SocketIO) else ""
    toxics = ToxicConnection(ctx.toxic_table, client_ip, ctx.rng, conn.end)
    delay = toxics.slow_open_delay()
    if delay:
        await trio.sleep(delay)
    guard = cluster_stats.breaker
    if guard is None:  # the classic breaker: off unless configured
        await _proxy(conn, toxics, ctx, cluster, cluster_stats)
        return
    permit = guard.allow(ctx.now)
    if permit is None:
        cluster_stats.breaker_rq_rejected += 1
        log.info("tcp %s: circuit breaker open for cluster %r", ctx.name, cluster)
        return
    result: int | Failure = ABANDONED  # unless the connection tells otherwise
    try:
        result = await _proxy(conn, toxics, ctx, cluster, cluster_stats)
    finally:
        guard.record(permit, result, ctx.now)


async def _proxy(
    conn: TcpConnection,
    toxics: ToxicConnection,
    ctx: ListenerContext,
    cluster: str,
    cluster_stats: ClusterStats,
) -> int | Failure:
    """Connect the client to an endpoint of ``cluster`` (trying others if the connect
    fails); returns the result for the classic breaker (see the module docstring)."""
    snapshot = ctx.dataplane.current.clusters[cluster].snapshot
    key = hash_key(toxics.client_ip.encode()) if snapshot.uses_hash else None
    attempts = min(MAX_CONNECT_ATTEMPTS, max(len(snapshot.endpoints), 1))
    tried: list[str] = []
    result: int | Failure = ABANDONED
    endpoint = snapshot.pick(ctx.now, key)
    for attempt in range(attempts):
        if attempt:
            snapshot = ctx.dataplane.current.clusters[cluster].snapshot
            endpoint = _next_endpoint(snapshot, tried, ctx.now)
        if endpoint is None:
            if not tried:
                cluster_stats.upstream_cx_none_healthy += 1
                log.info("tcp %s: no endpoint in cluster %r", ctx.name, cluster)
                return NoHealthyUpstream.status_hint
            break
        if not _admitted(ctx, cluster, snapshot, cluster_stats):
            return ABANDONED
        result = await _connect_and_splice(conn, toxics, ctx, endpoint, cluster_stats)
        if result != Failure.CONNECT:
            return result
        tried.append(endpoint.key)
    cluster_stats.upstream_cx_connect_attempts_exceeded += 1
    log.info("tcp %s: every connect attempt to cluster %r failed", ctx.name, cluster)
    return result


def _next_endpoint(
    snapshot: ClusterSnapshot, tried: list[str], now: float
) -> EndpointRuntime | None:
    """An endpoint not tried yet, or None if every one was."""
    first = snapshot.pick(now)
    if first is None:
        return None
    endpoint = snapshot.another(first, tried, now)
    return None if endpoint.key in tried else endpoint


def _admitted(
    ctx: ListenerContext, cluster: str, snapshot: ClusterSnapshot, cluster_stats: ClusterStats
) -> bool:
    """Whether the cluster's ``circuit_breakers`` let one more connection open."""
    thresholds = cluster_stats.thresholds
    if sum(m.runtime.pool.open for m in snapshot.all_endpoints) >= thresholds.max_connections:
        cluster_stats.upstream_cx_overflow += 1
        log.info("tcp %s: cluster %r at circuit_breakers.max_connections", ctx.name, cluster)
        return False
    if cluster_stats.rq_connecting >= thresholds.max_pending_requests:
        cluster_stats.upstream_rq_pending_overflow += 1
        log.info("tcp %s: cluster %r at circuit_breakers.max_pending_requests", ctx.name, cluster)
        return False
    return True


async def _connect_and_splice(
    conn: TcpConnection,
    toxics: ToxicConnection,
    ctx: ListenerContext,
    endpoint: EndpointRuntime,
    cluster_stats: ClusterStats,
) -> int | Failure:
    """Connect to ``endpoint`` and copy until the connection ends; returns its result
    (``Failure.CONNECT`` if the connect failed or timed out)."""
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
        conn.upstream = upstream
        charge_connected(cluster_stats, endpoint_stats)
        client = conn.client
        listener_stats = ctx.stats
        to_upstream: Stream | FilteredSink = upstream
        to_client: Stream | FilteredSink = client
        filters = conn.filters
        if filters is not None:
            to_upstream = FilteredSink(upstream, filters.downstream)
            to_client = FilteredSink(client, filters.upstream)
        links = (
            Link(
                toxics,
                "upstream",
                client,
                to_upstream,
                _UpstreamBytes(conn, listener_stats, cluster_stats),
            ),
            Link(
                toxics,
                "downstream",
                upstream,
                to_client,
                _DownstreamBytes(conn, listener_stats, cluster_stats),
            ),
        )
        splice = _Splice(client, upstream, links)
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


__all__ = ["MAX_CONNECT_ATTEMPTS", "TcpConnection", "serve_tcp_connection"]
