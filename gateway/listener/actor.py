"""Listener actors: each serves one listener's sockets and is the only writer of its state.

Theory of operation: the actor's task owns the listener's context (config, drain flag,
the sockets it accepts on) and changes it only on a message from its inbox:

    Reconfigure(config)   a change that needs no new socket: routes, timeouts, header
                          limits, access log, tracing, protocol, toxics. New
                          connections and the next request of open ones see it;
                          nothing is refused. Toxics act on live connections too
                          (``gateway.faults.toxics``). ``enabled: false`` closes the
                          listening sockets (a connect is refused) and cancels every
                          open connection; ``enabled: true`` binds the same address
                          again (with port 0, the port it had), or answers the bind
                          error with nothing changed.
    Rebind(sockets)       accept on new sockets from now on; the old ones are handed
                          back, still open, so the control plane can undo the change
                          (``Rebind`` them again) or commit it (close them).
    Drain(grace)          stop accepting, let each connection finish its request,
                          close idle ones, cancel what is left after ``grace`` seconds.

A config with ``enabled: false`` closes the sockets (a udp listener's sessions end with
them); enabled again, the listener binds the address it had. A udp listener's socket is
read by ``gateway.proxy.udp`` instead of accepted on.

Which listener fields need a new socket is said by the config model itself (fields
marked ``rebind`` in ``gateway.config.model``; today only ``address``).

Which address a disabled listener had stays in ``ListenerHandle.last_bound``.

The sockets of a first start are bound by the control plane before anything else of a
change happens (``bind_listener``), so a bind failure refuses the change while nothing
has moved; a restarted incarnation binds its config's address itself. Connections run
in the listener's own nursery; a drain moves that nursery's deadline (hypercorn's way).
The timer task and the access log writer run beside it, so lines written by the last
connections of a drain are still flushed.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Sequence

import attrs
import trio

from gateway.config import Address, Listener
from gateway.dataplane import DataPlaneRef
from gateway.errors import ListenerBindError, bind_failed
from gateway.faults.toxics import serve_with_toxics
from gateway.listener.context import TIMER_TICK, ListenerContext
from gateway.netio import SocketIO, accept_forever, open_listening_sockets
from gateway.observe.stats import StatsRegistry
from gateway.proxy.http2 import serve_http
from gateway.proxy.tcp import serve_tcp_connection
from gateway.proxy.udp import UdpProxy
from gateway.runtime.actor import ask, command
from gateway.tls import ClientCertHeader, ServerTls, TlsStream
from gateway.tls.reload import watch_listener_tls

__all__ = [
    "Drain",
    "ListenerHandle",
    "Rebind",
    "Reconfigure",
    "bind_listener",
    "close_sockets",
    "run_listener",
]

log = logging.getLogger("triogate.listener")

Sockets = tuple[socket.socket, ...]


@attrs.frozen
class Reconfigure:
    """Command: take ``config`` (the same address); answered once in force."""

    config: Listener
    reply: trio.MemorySendChannel[Exception | None]


@attrs.frozen
class Rebind:
    """Command: accept on ``sockets`` (bound for ``config``); answered with the old ones."""

    config: Listener
    sockets: Sockets = attrs.field(eq=False)
    reply: trio.MemorySendChannel[Sockets | Exception]


@attrs.frozen
class Drain:
    """Command: stop accepting; connections finish their request within ``grace`` s."""

    grace: float
    reply: trio.MemorySendChannel[Exception | None]


ListenerMsg = Reconfigure | Rebind | Drain


def bind_listener(config: Listener, *, listen: bool = True) -> Sockets:
    """Listening sockets for ``config.address``; ``ListenerBindError`` if it cannot be bound.

    ``listen`` False: bound only, to hold the address for worker processes.
    """
    host = None if config.address.host in ("", "*") else config.address.host
    try:
        datagram = config.protocol == "udp"
        return tuple(
            open_listening_sockets(host, config.address.port, listen=listen, datagram=datagram)
        )
    except OSError as e:
        raise bind_failed(f"listener {config.name!r}", config.address, e) from None


def close_sockets(sockets: Sequence[socket.socket]) -> None:
    for sock in sockets:
        if sock.fileno() != -1:
            trio.lowlevel.notify_closing(sock)
            sock.close()


class ListenerHandle:
    """How others reach a listener actor: its inbox and what it publishes.

    Made by the control plane, so it stays valid across restarts. ``config``, ``bound``
    and ``connections`` are written by the actor's task only; read them freely.
    """

    def __init__(
        self,
        config: Listener,
        dataplane: DataPlaneRef,
        stats: StatsRegistry | None = None,
        sockets: Sockets = (),
    ) -> None:
        self.name = config.name
        self.ctx = ListenerContext(
            config, dataplane, registry=stats if stats is not None else StatsRegistry()
        )
        #: the address the listener accepts on (port 0 resolved); None while stopped
        self.bound: Address | None = None
        #: the address last accepted on: a restart binds it again (port 0 resolved)
        self.last_bound: Address | None = None
        #: open connections
        self.connections = 0
        #: set when the current incarnation has stopped: sockets closed, connections ended
        self.stopped = trio.Event()
        self.inbox, self._inbox_rx = trio.open_memory_channel[ListenerMsg](16)
        # bound by the control plane for the first incarnation; later ones bind themselves
        self._first_sockets = sockets

    @property
    def config(self) -> Listener:
        """The config in force: the context's, which only the actor's task replaces."""
        return self.ctx.config

    async def reconfigure(self, config: Listener) -> None:
        """Take a config of the same address; ``ActorStopped`` if the listener is gone."""
        await command(self.inbox, lambda reply: Reconfigure(config, reply), who=self._who)

    async def rebind(self, config: Listener, sockets: Sockets) -> Sockets:
        """Accept on ``sockets`` (bound for ``config``) from now on; returns the old ones."""
        old: Sockets = await ask(
            self.inbox, lambda reply: Rebind(config, sockets, reply), who=self._who
        )
        return old

    async def drain(self, grace: float) -> None:
        """Stop accepting; connections finish their current request within ``grace`` s."""
        await command(self.inbox, lambda reply: Drain(grace, reply), who=self._who)

    @property
    def _who(self) -> str:
        return f"listener {self.name!r}"


class _Handshake:
    """A TLS handshake in progress, under the listener's timers (its header timeout)."""

    __slots__ = ("deadline", "scope")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.scope = trio.CancelScope()

    def cancel_if_idle(self) -> None:
        self.scope.cancel()  # a drain closes connections that have sent no request


class _ListenerActor:
    """The state of one running listener; only its own task changes it."""

    def __init__(self, handle: ListenerHandle, sockets: Sockets, conns: trio.Nursery) -> None:
        self.handle = handle
        self.ctx = handle.ctx
        self.conns = conns
        self.sockets: Sockets = ()
        self.accept_scope = trio.CancelScope()
        self.drained = trio.Event()
        #: the cancel scope of each open connection (closed all at once when disabled)
        self.live: set[trio.CancelScope] = set()
        self.enabled = True
        #: the sessions of a udp listener's sockets
        self.udp = UdpProxy(handle.ctx)
        self._accept_on(sockets)
        if not handle.config.enabled:
            self._disable()

    def _accept_on(self, sockets: Sockets) -> Sockets:
        """Accept on ``sockets`` from now on; returns the previous ones, still open."""
        old = self.sockets
        self.accept_scope.cancel()
        self.accept_scope = scope = trio.CancelScope()
        self.sockets = sockets
        for sock in sockets:
            self.conns.start_soon(self._accept, sock, scope)
        name = sockets[0].getsockname() if sockets else None
        self.handle.bound = None if name is None else Address(str(name[0]), int(name[1]))
        if self.handle.bound is not None:
            self.handle.last_bound = self.handle.bound
        return old

    async def _accept(self, sock: socket.socket, scope: trio.CancelScope) -> None:
        with scope:
            # cancelled before this task ran (the listener went down at once): the socket
            # may be closed already
            await trio.lowlevel.checkpoint()
            if sock.type == socket.SOCK_DGRAM:
                await self.udp.serve(sock)
            else:
                await accept_forever(sock, self.conns, self._serve_connection)

    async def _serve_connection(self, io: SocketIO) -> None:
        handle = self.handle
        ctx = self.ctx
        stats = ctx.stats
        handle.connections += 1
        stats.downstream_cx_total += 1
        stats.downstream_cx_active += 1
        scope = trio.CancelScope()
        live = self.live
        live.add(scope)
        try:
            with scope:
                stream: SocketIO | TlsStream = io
                client_cert: ClientCertHeader | None = None
                tls = ctx.tls
                if tls is not None:
                    accepted = await self._handshake(io, tls)
                    if accepted is None:
                        return
                    stream, client_cert = accepted
                l4_split = ctx.l4_split
                if l4_split is not None:
                    await serve_tcp_connection(stream, ctx, l4_split.pick(ctx.rng))
                elif ctx.toxics is None:
                    alpn = stream.alpn if isinstance(stream, TlsStream) else None
                    await serve_http(stream, ctx, io.peer_ip(), alpn, client_cert)
                else:
                    await self._serve_http_with_toxics(stream, client_cert)
        except Exception:
            log.exception("connection on listener %r failed", handle.name)
        finally:
            live.discard(scope)
            io.close()
            handle.connections -= 1
            stats.downstream_cx_active -= 1

    async def _handshake(
        self, io: SocketIO, tls: ServerTls
    ) -> tuple[TlsStream, ClientCertHeader] | None:
        """The TLS handshake, within the listener's header timeout, and the client
        certificate's checks; None when the connection may not go on (counted)."""
        ctx = self.ctx
        stats = ctx.stats
        stream = tls.wrap(io)
        pending = _Handshake(ctx.now + ctx.config.header_timeout)
        ctx.connections.add(pending)  # under the listener's timers, as a request head
        try:
            with pending.scope:
                await stream.do_handshake()
        except (ssl.SSLError, trio.BrokenResourceError, trio.ClosedResourceError) as e:
            stats.ssl_connection_error += 1
            if isinstance(e, ssl.SSLCertVerificationError):
                stats.ssl_fail_verify_error += 1
            log.debug("listener %r: TLS handshake failed: %s", ctx.name, e)
            return None
        finally:
            ctx.connections.discard(pending)
        if pending.scope.cancelled_caught:
            stats.ssl_connection_error += 1
            log.debug("listener %r: TLS handshake timed out", ctx.name)
            return None
        allowed, identity = tls.admit(stream, stats)
        if not allowed:
            log.info("listener %r: client certificate refused", ctx.name)
            stream.close()
            return None
        by = tls.served_by(stream) if identity is not None else ()
        return stream, ClientCertHeader(tls.config.forward_client_cert, identity, by)

    async def _serve_http_with_toxics(
        self, io: SocketIO | TlsStream, client_cert: ClientCertHeader | None
    ) -> None:
        """An HTTP connection whose client side runs through the listener's toxics
        (over TLS, the toxics act on the decrypted bytes)."""
        ctx = self.ctx
        assert ctx.toxics is not None
        client_ip = io.peer_ip()
        alpn = io.alpn if isinstance(io, TlsStream) else None

        async def serve(stream: trio.abc.HalfCloseableStream) -> None:
            await serve_http(stream, ctx, client_ip, alpn, client_cert)

        await serve_with_toxics(io, ctx.toxics, client_ip.decode(), ctx.rng, serve)

    async def serve(self) -> None:
        """Answer the inbox until cancelled."""
        async for msg in self.handle._inbox_rx:
            match msg:
                case Reconfigure(config=config, reply=reply):
                    with reply:
                        try:
                            self._reconfigure(config)
                        except ListenerBindError as e:
                            reply.send_nowait(e)
                        else:
                            reply.send_nowait(None)
                case Rebind(config=config, sockets=sockets, reply=reply):
                    with reply:
                        if self.drained.is_set():
                            reply.send_nowait(ListenerBindError(f"{self.handle._who} drains"))
                        else:
                            reply.send_nowait(self._rebind(config, sockets))
                case Drain(grace=grace, reply=reply):
                    with reply:
                        self._drain(grace)
                        reply.send_nowait(None)

    def _reconfigure(self, config: Listener) -> None:
        """Take ``config`` (same address); raises ``ListenerBindError``, with nothing
        changed, if enabling it cannot bind its address again."""
        sockets: Sockets = ()
        enabling = config.enabled and not self.enabled and not self.drained.is_set()
        if enabling:
            sockets = bind_listener(self._address_again(config))
        self.ctx.reconfigure(config)
        if enabling:
            self.enabled = True
            self._accept_on(sockets)
        elif not config.enabled and self.enabled:
            self._disable()

    def _rebind(self, config: Listener, sockets: Sockets) -> Sockets:
        """Accept on ``sockets`` (bound for ``config``); returns the old ones, still open.

        Disabled, the new sockets only give the address (then close); enabled with none
        (an undo back to an enabled config), it binds its address again itself."""
        self.ctx.reconfigure(config)
        if config.enabled and not sockets:
            sockets = bind_listener(self._address_again(config))
        old = self._accept_on(sockets)
        if not config.enabled:
            self._disable()
        else:
            self.enabled = True
        return old

    def _address_again(self, config: Listener) -> Listener:
        """``config``, with the port it had when configured as port 0."""
        last = self.handle.last_bound
        if config.address.port == 0 and last is not None:
            return attrs.evolve(config, address=last)
        return config

    def _disable(self) -> None:
        """Refuse connections (listening sockets closed) and close the open ones."""
        self.enabled = False
        close_sockets(self._accept_on(()))
        for scope in self.live:
            scope.cancel()

    def _drain(self, grace: float) -> None:
        ctx = self.ctx
        ctx.draining = True
        if not self.drained.is_set():
            self.drained.set()
            close_sockets(self._accept_on(()))
        for conn in list(ctx.connections):
            conn.cancel_if_idle()
        scope = self.conns.cancel_scope
        scope.deadline = min(scope.deadline, trio.current_time() + grace)


async def run_listener(
    handle: ListenerHandle,
    *,
    task_status: trio.TaskStatus[ListenerHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept on the listener's sockets, report ready, serve until cancelled or drained."""
    handle.stopped = trio.Event()  # this incarnation's
    sockets, handle._first_sockets = handle._first_sockets, ()
    if not sockets and handle.config.enabled:
        # a restarted incarnation takes the port it had, even when configured as port 0
        config = handle.config
        if config.address.port == 0 and handle.last_bound is not None:
            config = attrs.evolve(config, address=handle.last_bound)
        sockets = bind_listener(config)
    actor: _ListenerActor | None = None
    ctx = handle.ctx
    try:
        ctx.now = trio.current_time() + TIMER_TICK
        async with trio.open_nursery() as outer:
            outer.start_soon(ctx.run_timers)
            outer.start_soon(ctx.access_log.run_writer)
            outer.start_soon(ctx.mirror.run)
            outer.start_soon(ctx.filter_log.run)
            outer.start_soon(watch_listener_tls, ctx)
            async with trio.open_nursery() as conns:
                actor = _ListenerActor(handle, sockets, conns)
                outer.start_soon(actor.serve)
                log.info(
                    "listener %r serving %s on %s",
                    handle.name,
                    handle.config.protocol,
                    handle.bound,
                )
                task_status.started(handle)
                await actor.drained.wait()
                log.info("listener %r draining %d connections", handle.name, handle.connections)
            outer.cancel_scope.cancel()
    finally:
        close_sockets(sockets if actor is None else actor.sockets)
        handle.bound = None
        handle.stopped.set()
