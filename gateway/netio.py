"""Sockets for the data path: trio's readiness waits over plain non-blocking sockets.

Why not ``trio.SocketStream``: every trio socket operation is two scheduler round trips
(a cancellation check and a schedule point) even when the kernel completes it at once,
and a receive always tries the syscall before waiting. On the proxy's path, where every
request is two receives and two sends, that was most of the Python time (profiled with
py-spy; see README). Here:

- ``receive_some`` yields once (a checkpoint: every other ready task runs first), then
  reads, and waits for readiness only when the read finds nothing. Under load, by the
  time a connection's turn comes back its peer has usually answered, so the read
  succeeds without a wait: no ``epoll_ctl`` to re-arm trio's one-shot registration and
  no extra trip through the scheduler (CPU per request -40% on the 2-core bench VM).
  Reading before yielding would be cheaper still but unfair: a connection whose peer
  keeps up would never let the others run. Always a checkpoint, so a connection copying
  a long body still yields on every piece.
- ``send_all`` writes at once and parks only when the kernel buffer is full. It is not
  a checkpoint when the data fits; fairness comes from the receive that always follows.

``SocketIO`` implements ``trio.abc.HalfCloseableStream``, so ``trio.SSLStream`` can wrap
it. Errors are translated at this edge: a reset or a write after close is
``trio.BrokenResourceError``, use after ``aclose`` is ``trio.ClosedResourceError``.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio
from trio.lowlevel import checkpoint, notify_closing, wait_readable, wait_writable


class ByteStream(Protocol):
    """What the data path needs of a connection: ``SocketIO``, or in tests any trio
    half-closeable stream that also closes at once (``close``, as ``SocketIO`` does)."""

    async def receive_some(self, max_bytes: int | None = None) -> bytes: ...

    async def send_all(self, data: bytes | bytearray | memoryview) -> None: ...

    async def send_eof(self) -> None: ...

    async def aclose(self) -> None: ...

    def close(self) -> None: ...


class SocketIO(trio.abc.HalfCloseableStream):
    """A connected TCP socket as a trio stream, tuned for request/response traffic."""

    __slots__ = ("_closed", "sock")

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._closed = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await checkpoint()
        sock = self.sock
        while True:
            try:
                return sock.recv(max_bytes or 65536)
            except BlockingIOError:
                pass  # nothing yet: wait for it below
            except OSError as e:
                raise self._translate(e) from e
            try:
                await wait_readable(sock)
            except trio.ClosedResourceError:
                raise trio.ClosedResourceError("socket closed while reading") from None

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        sock = self.sock
        try:
            sent = sock.send(data)
            if sent == len(data):
                return
            view = memoryview(data)[sent:]
            while view:
                await wait_writable(sock)
                try:
                    sent = sock.send(view)
                except BlockingIOError:
                    continue
                view = view[sent:]
        except BlockingIOError:
            await wait_writable(sock)
            await self.send_all(data)
        except OSError as e:
            raise self._translate(e) from e

    def _translate(self, error: OSError) -> trio.BrokenResourceError | trio.ClosedResourceError:
        """A socket error as trio's stream errors: closed by us, or broken by the peer."""
        if self._closed or error.errno == errno.EBADF:
            return trio.ClosedResourceError("socket was closed")
        return trio.BrokenResourceError(str(error))

    async def wait_send_all_might_not_block(self) -> None:
        await wait_writable(self.sock)

    async def send_eof(self) -> None:
        await trio.lowlevel.checkpoint()
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            raise trio.BrokenResourceError(str(e)) from e

    def close(self) -> None:
        """Close now; never blocks (pending waiters get ``ClosedResourceError``)."""
        if not self._closed:
            self._closed = True
            notify_closing(self.sock)
            self.sock.close()

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()

    def peer_ip(self) -> bytes:
        try:
            return str(self.sock.getpeername()[0]).encode()
        except OSError:
            return b"unknown"


async def open_connection(host: str, port: int) -> SocketIO:
    """Connect to the first address ``host`` resolves to that accepts; raises ``OSError``."""
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    error: OSError = OSError(errno.EHOSTUNREACH, f"{host} resolves to nothing")
    for family, type_, proto, _, sockaddr in infos:
        sock = socket.socket(family, type_, proto)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            code = sock.connect_ex(sockaddr)
            if code == errno.EINPROGRESS:
                await wait_writable(sock)
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise OSError(code, f"connect to {host}:{port}: {errno.errorcode.get(code, code)}")
        except OSError as e:
            sock.close()
            error = e
            continue
        except BaseException:
            sock.close()
            raise
        return SocketIO(sock)
    raise error


def open_listening_sockets(
    host: str | None,
    port: int,
    backlog: int = 1024,
    *,
    listen: bool = True,
    datagram: bool = False,
) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for ``host:port`` (all addresses if None).

    With ``listen`` False the sockets only hold the port (and resolve port 0) for worker
    processes that bind it with ``SO_REUSEPORT``, and the kernel must hand them nothing:
    a TCP socket that never listens gets no connection; a bound UDP socket in the group
    would get its share of the datagrams, so it is connected (to its own port on
    loopback), which takes it out of the kernel's choice for every other sender
    (checked on Linux 6.18: 0 of 200 clients' datagrams). ``datagram``: UDP sockets
    (which never listen).
    """
    kind = socket.SOCK_DGRAM if datagram else socket.SOCK_STREAM
    infos = socket.getaddrinfo(
        host, port, type=kind, flags=socket.AI_PASSIVE | socket.AI_ADDRCONFIG
    )
    sockets: list[socket.socket] = []
    try:
        for family, type_, proto, _, sockaddr in infos:
            sock = socket.socket(family, type_, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # as Envoy's listeners: a listener moving onto a port that another of ours
            # leaves in the same change binds before the other lets go (and N worker
            # processes can share one port); a port held without it still refuses us
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(sockaddr)
            if not datagram and listen:
                sock.listen(backlog)
            elif datagram and not listen:
                loopback = "::1" if family == socket.AF_INET6 else "127.0.0.1"
                sock.connect((loopback, sock.getsockname()[1]))
            sock.setblocking(False)
            if port == 0:
                break  # one socket: each family would get its own random port
    except BaseException:
        for s in sockets:
            s.close()
        raise
    return sockets


async def accept_forever(
    lsock: socket.socket, nursery: trio.Nursery, handler: Callable[[SocketIO], Awaitable[None]]
) -> None:
    """Accept connections on ``lsock`` and start ``handler(SocketIO)`` for each in ``nursery``."""
    while True:
        await wait_readable(lsock)
        # take every pending connection in one wakeup
        while True:
            try:
                conn, _ = lsock.accept()
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    await trio.sleep(0.1)  # out of descriptors: back off, as trio does
                    break
                if e.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                if e.errno == errno.EBADF:
                    # closed while this task was on its way back from the wait (a drain, a
                    # listener disabled): its cancellation comes at the next checkpoint
                    return
                raise
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            nursery.start_soon(handler, SocketIO(conn))
