"""The TCP proxy: bytes both ways between a client and one endpoint of a cluster.

Each direction is a copy loop with backpressure (a piece is written before the next
read); a half-close is passed on (``send_eof``), and the connection ends when both
directions have ended or either side resets.

Stats: the connection to the endpoint is the attempt, charged as HTTP attempts are
(``gateway.proxy.outcome``) but without a request: it counts in the cluster's
``upstream_cx_*`` and the endpoint's ``cx_*`` only.
"""

from __future__ import annotations

import logging

import trio

from gateway.errors import UpstreamConnectError
from gateway.listener.context import ListenerContext
from gateway.netio import ByteStream, SocketIO
from gateway.proxy.outcome import charge_attempt, charge_connected
from policies.balancing import hash_key

log = logging.getLogger("triogate.tcp")


async def _copy(
    src: trio.abc.HalfCloseableStream | ByteStream,
    dst: trio.abc.HalfCloseableStream | ByteStream,
    scope: trio.CancelScope,
) -> None:
    try:
        while data := await src.receive_some(65536):
            await dst.send_all(data)
        await dst.send_eof()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        scope.cancel()  # a reset on either side ends both directions


async def serve_tcp_connection(
    client: trio.abc.HalfCloseableStream, ctx: ListenerContext, cluster: str
) -> None:
    """Proxy one client connection to an endpoint picked from ``cluster``."""
    async with client:
        snapshot = ctx.dataplane.current.clusters[cluster].snapshot
        client_ip = client.peer_ip() if isinstance(client, SocketIO) else b""
        endpoint = snapshot.pick(ctx.now, hash_key(client_ip) if snapshot.uses_hash else None)
        cluster_stats = ctx.cluster_stats.get(cluster) or ctx.registry.cluster(cluster)
        if endpoint is None:
            cluster_stats.upstream_cx_none_healthy += 1
            log.info("tcp %s: no endpoint in cluster %r", ctx.name, cluster)
            return
        endpoint_stats = cluster_stats.endpoint(endpoint.key)
        try:
            upstream = await endpoint.pool.connect()
        except UpstreamConnectError as e:
            charge_attempt(cluster_stats, endpoint_stats, e, request=False)
            log.info("tcp %s: %s", ctx.name, e)
            return
        charge_connected(cluster_stats, endpoint_stats)
        endpoint.active += 1
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_copy, client, upstream, nursery.cancel_scope)
                nursery.start_soon(_copy, upstream, client, nursery.cancel_scope)
        finally:
            endpoint.active -= 1
            upstream.close()
