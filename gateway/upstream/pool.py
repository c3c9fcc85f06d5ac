"""A bounded pool of keep-alive HTTP/1.1 connections to one endpoint.

Theory of operation: a connection is either *busy* (lent to one request) or *idle* (in
``_idle``, most recently used last). ``acquire`` takes the freshest idle connection that
is still open (a non-blocking peek tells; an upstream may have closed it while idle) and
younger than the idle timeout, or opens a new one if fewer than ``max_connections`` are
open. ``release(conn, reusable)`` returns it; only a connection whose last exchange
ended cleanly (whole response read, no framing error, no ``Connection: close``) is kept.
A draining pool keeps no idle connections: each closes as its request finishes.

Only the event loop's thread touches a pool, so plain attributes suffice: the hot path
rule (no actor round trip per request) holds.
"""

from __future__ import annotations

import errno
import socket
from collections import deque

import trio

from ..config import Address, PoolConfig
from ..errors import UpstreamConnectError, UpstreamResetError
from ..http1.parse import ResponseParser


class PoolExhausted(UpstreamConnectError):
    """``max_connections`` are open and busy."""

    status_hint = 503
    flag = "UO"


class UpstreamConnection:
    """One connection to an endpoint, with the parser of its responses."""

    __slots__ = ("idle_since", "parser", "pool", "sock", "stream")

    def __init__(self, sock: socket.socket, stream: trio.SocketStream, pool: EndpointPool) -> None:
        self.stream = stream
        #: the stdlib socket under the stream, for a synchronous peek while idle
        self.sock = sock
        self.pool = pool
        self.parser = ResponseParser()
        self.idle_since = 0.0

    async def send(self, data: bytes) -> None:
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
            raise UpstreamResetError(f"upstream {self.pool.address} reset: {e}") from None

    async def receive(self) -> bytes:
        try:
            return await self.stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
            raise UpstreamResetError(f"upstream {self.pool.address} reset: {e}") from None

    def is_open(self) -> bool:
        """False if the peer has closed (or sent unsolicited bytes) while idle."""
        try:
            self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return True
        except OSError as e:
            return e.errno in (errno.EAGAIN, errno.EWOULDBLOCK)
        return False  # closed (b"") or unsolicited bytes: either way not reusable

    def close(self) -> None:
        # a plain socket close never blocks; SocketStream.aclose would only add a checkpoint
        self.sock.close()


async def _connect(address: Address) -> tuple[socket.socket, trio.SocketStream]:
    """Connect to the first address ``address`` resolves to that accepts."""
    infos = await trio.socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
    error: OSError = OSError(f"{address} resolves to nothing")
    for family, type_, proto, _, sockaddr in infos:
        sock = socket.socket(family, type_, proto)
        sock.setblocking(False)
        tsock = trio.socket.from_stdlib_socket(sock)
        try:
            await tsock.connect(sockaddr)
        except OSError as e:
            tsock.close()
            error = e
            continue
        except BaseException:
            tsock.close()
            raise
        return sock, trio.SocketStream(tsock)  # SocketStream sets TCP_NODELAY
    raise error


class EndpointPool:
    """Connections to one endpoint: bounded, reused, expired when idle too long."""

    __slots__ = ("_idle", "address", "config", "draining", "open")

    def __init__(self, address: Address, config: PoolConfig) -> None:
        self.address = address
        self.config = config
        self._idle: deque[UpstreamConnection] = deque()
        #: connections open (busy and idle)
        self.open = 0
        self.draining = False

    @property
    def idle(self) -> int:
        return len(self._idle)

    async def acquire(self) -> tuple[UpstreamConnection, bool]:
        """A connection and whether it was reused; raises ``UpstreamConnectError``."""
        idle = self._idle
        if idle:
            oldest_ok = trio.current_time() - self.config.idle_timeout
            while idle:
                conn = idle.pop()
                if conn.idle_since >= oldest_ok and conn.is_open():
                    return conn, True
                self.open -= 1
                conn.close()
        if self.open >= self.config.max_connections:
            raise PoolExhausted(f"{self.config.max_connections} connections to {self.address} busy")
        self.open += 1
        try:
            with trio.fail_after(self.config.connect_timeout):
                sock, stream = await _connect(self.address)
        except trio.TooSlowError:
            self.open -= 1
            raise UpstreamConnectError(f"connect to {self.address} timed out") from None
        except OSError as e:
            self.open -= 1
            raise UpstreamConnectError(
                f"connect to {self.address} failed: {e.strerror or e}"
            ) from None
        except BaseException:
            self.open -= 1
            raise
        return UpstreamConnection(sock, stream, self), False

    def release(self, conn: UpstreamConnection, reusable: bool) -> None:
        """Give a connection back; kept only if ``reusable`` and there is room."""
        if reusable and not self.draining and len(self._idle) < self.config.max_idle:
            if conn.parser.broken:
                conn.parser = ResponseParser()
            conn.idle_since = trio.current_time()
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
