"""Listener actors: each binds one address and serves its connections.

The actor binds in its startup (so a bind failure fails the start, and a half-started
gateway never runs), reports its handle with the bound address (port 0 is resolved),
then accepts until cancelled or drained. Connections run in the listener's own
nursery; a drain stops accepting, lets each connection finish the request it is on,
closes idle keep-alive connections, and cancels what is left after the grace period
(hypercorn's way: the handler nursery's deadline moves).

The listener's access log writer runs beside its timer task, so lines written by the
last connections of a drain are still flushed.
"""

from __future__ import annotations

import logging
import socket

import trio

from gateway.config import Address, Listener
from gateway.dataplane import DataPlaneRef
from gateway.errors import ListenerBindError
from gateway.listener.context import TIMER_TICK, ListenerContext
from gateway.netio import SocketIO, accept_forever, open_listening_sockets
from gateway.observe.stats import StatsRegistry
from gateway.proxy.http import HttpConnection
from gateway.proxy.tcp import serve_tcp_connection

log = logging.getLogger("triogate.listener")


class ListenerHandle:
    """A listener's name, bound address and drain control; stable across restarts."""

    def __init__(
        self, config: Listener, dataplane: DataPlaneRef, stats: StatsRegistry | None = None
    ) -> None:
        self.name = config.name
        self.config = config
        self.ctx = ListenerContext(
            config, dataplane, registry=stats if stats is not None else StatsRegistry()
        )
        self.bound: Address | None = None
        self._drained = trio.Event()
        #: set when the listener has stopped: socket closed, every connection ended
        self.stopped = trio.Event()
        self._conn_scope: trio.CancelScope | None = None
        self.connections = 0

    def reconfigure(self, config: Listener) -> None:
        """A config change that needs no rebind (routes, access log, tracing)."""
        self.config = config
        self.ctx.reconfigure(config)

    def drain(self, grace: float) -> None:
        """Stop accepting; connections finish their current request within ``grace`` s."""
        self.ctx.draining = True
        self._drained.set()
        for conn in list(self.ctx.idle):
            conn.cancel_if_idle()
        if self._conn_scope is not None:
            self._conn_scope.deadline = min(self._conn_scope.deadline, trio.current_time() + grace)


async def run_listener(
    handle: ListenerHandle,
    *,
    task_status: trio.TaskStatus[ListenerHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Bind, report ready, serve until cancelled or drained."""
    config = handle.config
    handle.stopped = trio.Event()  # this incarnation's
    host = None if config.address.host in ("", "*") else config.address.host
    try:
        sockets = open_listening_sockets(host, config.address.port)
    except OSError as e:
        raise ListenerBindError(
            f"listener {handle.name!r}: cannot bind {config.address}: {e.strerror or e}"
        ) from None
    sockname = sockets[0].getsockname()
    handle.bound = Address(str(sockname[0]), int(sockname[1]))
    ctx = handle.ctx
    tcp_cluster = config.cluster

    stats = ctx.stats

    async def handler(io: SocketIO) -> None:
        handle.connections += 1
        stats.downstream_cx_total += 1
        stats.downstream_cx_active += 1
        try:
            if tcp_cluster is not None:
                await serve_tcp_connection(io, ctx, tcp_cluster)
            else:
                await HttpConnection(io, ctx, io.peer_ip()).serve()
        except Exception:
            log.exception("connection on listener %r failed", handle.name)
        finally:
            handle.connections -= 1
            stats.downstream_cx_active -= 1

    log.info("listener %r serving %s on %s", handle.name, config.protocol, handle.bound)
    try:
        ctx.now = trio.current_time() + TIMER_TICK
        async with trio.open_nursery() as timer_nursery:
            timer_nursery.start_soon(ctx.run_timers)
            timer_nursery.start_soon(ctx.access_log.run_writer)
            async with trio.open_nursery() as conn_nursery:
                handle._conn_scope = conn_nursery.cancel_scope
                async with trio.open_nursery() as accept_nursery:
                    for sock in sockets:
                        accept_nursery.start_soon(accept_forever, sock, conn_nursery, handler)
                    task_status.started(handle)
                    await handle._drained.wait()
                    accept_nursery.cancel_scope.cancel()
                _close_all(sockets)
                log.info("listener %r draining %d connections", handle.name, handle.connections)
            timer_nursery.cancel_scope.cancel()
    finally:
        _close_all(sockets)
        handle.bound = None
        handle.stopped.set()


def _close_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        if sock.fileno() != -1:
            trio.lowlevel.notify_closing(sock)
            sock.close()
