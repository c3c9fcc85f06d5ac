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

import socket
from collections import deque

import trio

from gateway.config import Address, PoolConfig
from gateway.errors import UpstreamConnectError, UpstreamResetError
from gateway.http1.parse import ResponseParser
from gateway.netio import SocketIO, open_connection

#: seconds idle after which a pooled connection is checked before reuse
PEEK_AFTER_IDLE = 1.0


class PoolExhausted(UpstreamConnectError):
    """``max_connections`` are open and busy."""

    status_hint = 503
    flag = "UO"


class UpstreamConnectTimeout(UpstreamConnectError):
    """The connection was not established within ``connect_timeout``."""


class UpstreamConnection:
    """One connection to an endpoint, with the parser of its responses."""

    __slots__ = ("idle_since", "io", "parser", "pool")

    def __init__(self, io: SocketIO, pool: EndpointPool) -> None:
        self.io = io
        self.pool = pool
        self.parser = ResponseParser()
        self.idle_since = 0.0

    async def send(self, data: bytes) -> None:
        try:
            await self.io.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
            raise UpstreamResetError(f"upstream {self.pool.address} reset: {e}") from None

    async def receive(self) -> bytes:
        try:
            return await self.io.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
            raise UpstreamResetError(f"upstream {self.pool.address} reset: {e}") from None

    def is_open(self) -> bool:
        """False if the peer has closed (or sent unsolicited bytes) while idle."""
        try:
            self.io.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return True
        except OSError:
            return False
        return False  # closed (b"") or unsolicited bytes: either way not reusable

    def close(self) -> None:
        self.io.close()


class EndpointPool:
    """Connections to one endpoint: bounded, reused, expired when idle too long."""

    __slots__ = ("_idle", "address", "config", "connecting", "draining", "open")

    def __init__(self, address: Address, config: PoolConfig) -> None:
        self.address = address
        self.config = config
        self._idle: deque[UpstreamConnection] = deque()
        #: connections open (busy and idle)
        self.open = 0
        #: connections being established (requests waiting for one: Envoy's "pending")
        self.connecting = 0
        self.draining = False

    @property
    def idle(self) -> int:
        return len(self._idle)

    async def acquire(self) -> tuple[UpstreamConnection, bool]:
        """A connection and whether it was reused; raises ``UpstreamConnectError``."""
        idle = self._idle
        if idle:
            now = trio.current_time()
            oldest_ok = now - self.config.idle_timeout
            while idle:
                conn = idle.pop()
                # a connection idle for a moment is taken as is (the peek is a syscall on
                # every request); a close that races with reuse is retried by the caller
                if conn.idle_since >= oldest_ok and (
                    now - conn.idle_since < PEEK_AFTER_IDLE or conn.is_open()
                ):
                    return conn, True
                self.open -= 1
                conn.close()
        if self.open >= self.config.max_connections:
            raise PoolExhausted(f"{self.config.max_connections} connections to {self.address} busy")
        self.open += 1
        self.connecting += 1
        try:
            with trio.fail_after(self.config.connect_timeout):
                io = await open_connection(self.address.host, self.address.port)
        except trio.TooSlowError:
            self.open -= 1
            raise UpstreamConnectTimeout(f"connect to {self.address} timed out") from None
        except OSError as e:
            self.open -= 1
            raise UpstreamConnectError(
                f"connect to {self.address} failed: {e.strerror or e}"
            ) from None
        except BaseException:
            self.open -= 1
            raise
        finally:
            self.connecting -= 1
        return UpstreamConnection(io, self), False

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
