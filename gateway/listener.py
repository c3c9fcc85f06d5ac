"""Listener actors: each binds one address and serves its connections.

The actor binds in its startup (so a bind failure fails the start, and a half-started
gateway never runs), reports its handle with the bound address (port 0 is resolved),
then accepts until cancelled or drained. Connections run in the listener's own
nursery; a drain stops accepting, lets each connection finish the request it is on,
closes idle keep-alive connections, and cancels what is left after the grace period
(hypercorn's way: the handler nursery's deadline moves).
"""

from __future__ import annotations

import logging
from functools import partial

import trio

from .config import Address, Listener
from .dataplane import DataPlaneRef
from .proxy.http import HttpConnection, ListenerContext
from .proxy.tcp import serve_tcp_connection

log = logging.getLogger("triogate.listener")


class ListenerHandle:
    """A listener's name, bound address and drain control; stable across restarts."""

    def __init__(self, config: Listener, dataplane: DataPlaneRef) -> None:
        self.name = config.name
        self.config = config
        self.ctx = ListenerContext(config, dataplane)
        self.bound: Address | None = None
        self._drained = trio.Event()
        self._conn_scope: trio.CancelScope | None = None
        self.connections = 0

    def drain(self, grace: float) -> None:
        """Stop accepting; connections finish their current request within ``grace`` s."""
        self.ctx.draining = True
        self._drained.set()
        for scope in list(self.ctx.idle_scopes):
            scope.cancel()
        if self._conn_scope is not None:
            self._conn_scope.deadline = min(self._conn_scope.deadline, trio.current_time() + grace)


async def _open_listeners(address: Address) -> list[trio.SocketListener]:
    host = None if address.host in ("", "*") else address.host
    return await trio.open_tcp_listeners(address.port, host=host, backlog=1024)


def _peer_ip(stream: trio.SocketStream) -> bytes:
    try:
        peer = stream.socket.getpeername()
    except OSError:
        return b"unknown"
    return str(peer[0]).encode()


async def run_listener(
    handle: ListenerHandle,
    *,
    task_status: trio.TaskStatus[ListenerHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Bind, report ready, serve until cancelled or drained."""
    config = handle.config
    listeners = await _open_listeners(config.address)
    sockname = listeners[0].socket.getsockname()
    handle.bound = Address(str(sockname[0]), int(sockname[1]))
    ctx = handle.ctx
    tcp_cluster = config.cluster

    async def handler(stream: trio.SocketStream) -> None:
        handle.connections += 1
        try:
            if config.protocol == "tcp":
                assert tcp_cluster is not None
                await serve_tcp_connection(stream, ctx, tcp_cluster)
            else:
                await HttpConnection(stream, ctx, _peer_ip(stream)).serve()
        except Exception:
            log.exception("connection on listener %r failed", handle.name)
        finally:
            handle.connections -= 1

    log.info("listener %r serving %s on %s", handle.name, config.protocol, handle.bound)
    async with trio.open_nursery() as conn_nursery:
        handle._conn_scope = conn_nursery.cancel_scope
        async with trio.open_nursery() as accept_nursery:
            for lst in listeners:
                accept_nursery.start_soon(
                    partial(trio.serve_listeners, handler, [lst], handler_nursery=conn_nursery)
                )
            task_status.started(handle)
            await handle._drained.wait()
            accept_nursery.cancel_scope.cancel()
        for lst in listeners:
            await lst.aclose()
        log.info("listener %r draining %d connections", handle.name, handle.connections)
    handle.bound = None


__all__ = ["ListenerHandle", "run_listener"]
