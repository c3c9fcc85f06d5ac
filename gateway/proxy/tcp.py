"""The TCP proxy: bytes both ways between a client and one endpoint of a cluster.

Each direction is a copy loop with backpressure (a piece is written before the next
read); a half-close is passed on (``send_eof``), and the connection ends when both
directions have ended or either side resets.

Stats: the connection to the endpoint counts in the cluster's ``upstream_cx_*`` and the
endpoint's ``cx_*`` (a TCP listener has no requests to count).
"""

from __future__ import annotations

import logging

import trio

from gateway.errors import UpstreamConnectError
from gateway.listener.context import ListenerContext
from gateway.netio import SocketIO, open_connection
from policies.balancing import hash_key

log = logging.getLogger("triogate.tcp")


async def _copy(
    src: trio.abc.HalfCloseableStream, dst: trio.abc.HalfCloseableStream, scope: trio.CancelScope
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
        handle = ctx.dataplane.current.clusters[cluster]
        snapshot = handle.snapshot
        client_ip = client.peer_ip() if isinstance(client, SocketIO) else b""
        endpoint = snapshot.pick(ctx.now, hash_key(client_ip) if snapshot.uses_hash else None)
        cs = ctx.registry.cluster(cluster)
        if endpoint is None:
            cs.upstream_cx_none_healthy += 1
            log.info("tcp %s: no endpoint in cluster %r", ctx.name, cluster)
            return
        es = cs.endpoint(endpoint.key)
        cs.upstream_cx_total += 1
        es.cx_total += 1
        address = endpoint.pool.address
        try:
            with trio.fail_after(endpoint.pool.config.connect_timeout):
                upstream = await open_connection(address.host, address.port)
        except (OSError, trio.TooSlowError) as e:
            cs.upstream_cx_connect_fail += 1
            es.cx_connect_fail += 1
            if isinstance(e, trio.TooSlowError):
                cs.upstream_cx_connect_timeout += 1
            log.info("tcp %s: %s", ctx.name, UpstreamConnectError(f"connect to {address}: {e}"))
            return
        endpoint.active += 1
        try:
            async with upstream, trio.open_nursery() as nursery:
                nursery.start_soon(_copy, client, upstream, nursery.cancel_scope)
                nursery.start_soon(_copy, upstream, client, nursery.cancel_scope)
        finally:
            endpoint.active -= 1
