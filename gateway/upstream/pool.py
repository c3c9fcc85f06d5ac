"""A bounded pool of keep-alive HTTP/1.1 connections to one endpoint.

Theory of operation: a connection is either *busy* (lent to one request) or *idle* (in
``_idle``, most recently used last). ``take_idle`` takes the freshest idle connection
that is still open (a non-blocking peek tells; an upstream may have closed it while idle)
and younger than the idle timeout; failing that, ``open_new`` opens one if fewer than
``max_connections`` are open. ``release(conn, reusable)`` returns it; only a connection
whose last exchange ended cleanly (whole response read, no framing error, no
``Connection: close``) is kept. A draining pool keeps no idle connections: each closes as
its request finishes.

Connections are opened by the pool's ``connector`` (``open_upstream``, a TCP connection,
unless a test passes another: any ``netio.ByteStream``, such as an in-memory one); a
pool of a cluster with ``tls`` runs its ``TlsOrigin``'s handshake over each, inside the
same ``connect_timeout`` (a failed one is ``UpstreamTlsError``: 502, ``UF``).
The liveness peek needs a socket; a connection without one is taken as open (a close
that raced with reuse is caught by the caller's retry, as on a socket).

Only the event loop's thread touches a pool, so plain attributes suffice: the hot path
rule (no actor round trip per request) holds.
"""

from __future__ import annotations

import socket
from collections import deque
from collections.abc import Awaitable, Callable

import trio

from gateway.config import Address, Cluster, PoolConfig
from gateway.errors import (
    PoolExhausted,
    UpstreamClosedEarly,
    UpstreamConnectError,
    UpstreamConnectTimeout,
    UpstreamResetError,
)
from gateway.http1.parse import ResponseParser
from gateway.netio import ByteStream, SocketIO, open_connection
from gateway.tls import TlsOrigin, TlsStream

#: seconds idle after which a pooled connection is checked before reuse
PEEK_AFTER_IDLE = 1.0

#: opens a connection to an address; raises ``OSError`` when it cannot
Connector = Callable[[Address], Awaitable[ByteStream]]


async def open_upstream(address: Address) -> SocketIO:
    """A TCP connection to ``address``: the connector of every pool outside tests."""
    return await open_connection(address.host, address.port)


class UpstreamConnection:
    """One connection to an endpoint, with the parser of its responses."""

    __slots__ = ("idle_since", "io", "parser", "pool", "sock")

    def __init__(self, io: ByteStream, pool: EndpointPool) -> None:
        self.io = io
        #: the socket to peek at before reuse; None for a stream without one
        self.sock = io.sock if isinstance(io, SocketIO | TlsStream) else None
        self.pool = pool
        self.parser = ResponseParser()
        self.idle_since = 0.0

    async def send(self, data: bytes) -> None:
        try:
            await self.io.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
            raise UpstreamResetError(f"upstream {self.pool.address} reset: {e}") from None

    async def read(self) -> None:
        """Receive what the upstream sent and feed it to ``parser``, whose ``events`` then
        hold what it made of it.

        Raises ``UpstreamResetError`` (a reset, or a close in the middle of a message),
        ``UpstreamClosedEarly`` (a close before any byte of a response), or the parser's
        ``UpstreamProtocolError``.
        """
        try:
            data = await self.io.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
            raise UpstreamResetError(f"upstream {self.pool.address} reset: {e}") from None
        parser = self.parser
        if data:
            parser.feed(data)
        else:
            parser.feed_eof()
            if not parser.events:
                raise UpstreamClosedEarly(f"upstream {self.pool.address} closed without responding")

    def is_open(self) -> bool:
        """False if the peer has closed (or sent unsolicited bytes) while idle."""
        sock = self.sock
        if sock is None:
            return True
        try:
            sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return True
        except OSError:
            return False
        return False  # closed (b"") or unsolicited bytes: either way not reusable

    def close(self) -> None:
        self.io.close()


class EndpointPool:
    """Connections to one endpoint: bounded, reused, expired when idle too long."""

    __slots__ = (
        "_idle",
        "address",
        "config",
        "connecting",
        "connector",
        "draining",
        "open",
        "tls",
    )

    def __init__(
        self,
        address: Address,
        config: PoolConfig,
        connector: Connector = open_upstream,
        tls: TlsOrigin | None = None,
    ) -> None:
        self.address = address
        self.config = config
        self.connector = connector
        #: TLS to the endpoint (the cluster's ``tls``); None: cleartext
        self.tls = tls
        self._idle: deque[UpstreamConnection] = deque()
        #: connections open (busy and idle)
        self.open = 0
        #: connections being established (requests waiting for one: Envoy's "pending")
        self.connecting = 0
        self.draining = False

    @property
    def idle(self) -> int:
        return len(self._idle)

    def serves(self, cluster: Cluster, tls: TlsOrigin | None) -> bool:
        """Whether this pool is still right for ``cluster`` (else a new one replaces it)."""
        return cluster.protocol == "http1" and cluster.pool == self.config and tls is self.tls

    def take_idle(self, now: float) -> UpstreamConnection | None:
        """The freshest idle connection fit for reuse; None when there is none (then
        ``open_new``). Not async: the common case, a pooled connection, awaits nothing.

        ``now`` (and ``release``'s) is trio's clock as the caller has it: the proxy passes
        its listener's coarse clock (``ListenerContext.now``, at most two timer ticks
        ahead), which costs no clock read; ages of a second or more are all it decides.
        """
        idle = self._idle
        if idle:
            oldest_ok = now - self.config.idle_timeout
            while idle:
                conn = idle.pop()
                # a connection idle for a moment is taken as is (the peek is a syscall on
                # every request); a close that races with reuse is retried by the caller
                if conn.idle_since >= oldest_ok and (
                    now - conn.idle_since < PEEK_AFTER_IDLE or conn.is_open()
                ):
                    return conn
                self.open -= 1
                conn.close()
        return None

    async def open_new(self) -> UpstreamConnection:
        """A new connection, counted in the pool; raises ``PoolExhausted`` when
        ``max_connections`` are open, else as ``connect``."""
        if self.open >= self.config.max_connections:
            raise PoolExhausted(f"{self.config.max_connections} connections to {self.address} busy")
        self.open += 1
        self.connecting += 1
        try:
            io = await self.connect()
        except BaseException:
            self.open -= 1
            raise
        finally:
            self.connecting -= 1
        return UpstreamConnection(io, self)

    async def connect(self) -> ByteStream:
        """A new connection to the endpoint, outside the pool's idle list (the TCP
        proxy's, which counts it in ``open`` and ``connecting`` itself); raises
        ``UpstreamConnectError``, ``UpstreamConnectTimeout`` after ``connect_timeout``."""
        try:
            with trio.fail_after(self.config.connect_timeout):
                io = await self.connector(self.address)
                tls = self.tls
                if tls is not None and isinstance(io, SocketIO):
                    return await tls.handshake(io, self.address)
                return io
        except trio.TooSlowError:
            raise UpstreamConnectTimeout(f"connect to {self.address} timed out") from None
        except OSError as e:
            raise UpstreamConnectError(
                f"connect to {self.address} failed: {e.strerror or e}"
            ) from None

    def release(self, conn: UpstreamConnection, reusable: bool, now: float) -> None:
        """Give a connection back; kept only if ``reusable`` and there is room."""
        if reusable and not self.draining and len(self._idle) < self.config.max_idle:
            if conn.parser.broken:
                conn.parser = ResponseParser()
            conn.idle_since = now
            self._idle.append(conn)
            return
        self.open -= 1
        conn.close()

    def expire_idle(self, now: float) -> int:
        """Close idle connections older than the idle timeout; returns how many."""
        oldest_ok = now - self.config.idle_timeout
        closed = 0
        idle = self._idle
        while idle and (idle[0].idle_since < oldest_ok or self.draining):
            idle.popleft().close()
            self.open -= 1
            closed += 1
        return closed

    def drain(self) -> None:
        """No idle connection is kept from now on; busy ones close when released."""
        self.draining = True
        self.expire_idle(trio.current_time())

    def close_all_idle(self) -> None:
        while self._idle:
            self._idle.pop().close()
            self.open -= 1
