"""TLS over the data path's own sockets: an ``ssl.SSLObject`` between two memory BIOs.

Why not ``trio.SSLStream``: it wraps any trio stream, but runs every call through its
conflict detectors and an extra layer of coroutines per record; this object reads
ciphertext straight into the incoming BIO and writes what the outgoing BIO holds in one
``send_all``, and keeps ``SocketIO``'s promises: ``receive_some`` is always a checkpoint,
``send_all`` is not when the kernel takes everything at once. (Not measured against
``SSLStream``; what TLS adds to a request over this is in ``bench/bench_tls.py``.)

Errors are translated here as in ``gateway.netio``: an OpenSSL error or a reset is
``trio.BrokenResourceError``; a clean close (``close_notify``) or a TCP close without one
ends the stream (``b""``): HTTP/1.1 frames its own messages, as trio's
``https_compatible`` assumes.
"""

from __future__ import annotations

import socket
import ssl

import trio
from trio.lowlevel import checkpoint

from gateway.netio import SocketIO

#: ciphertext read from the socket per receive
_READ = 65536


class TlsStream(trio.abc.HalfCloseableStream):
    """One TLS connection (either side) over a ``SocketIO``."""

    __slots__ = ("_incoming", "_outgoing", "alpn", "io", "sock", "ssl")

    def __init__(
        self,
        io: SocketIO,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
        session: ssl.SSLSession | None = None,
    ) -> None:
        self.io = io
        #: the socket under the TLS (the pool peeks at it before reusing a connection)
        self.sock: socket.socket = io.sock
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self.ssl = context.wrap_bio(
            self._incoming,
            self._outgoing,
            server_side=server_side,
            server_hostname=server_hostname,
            session=session,
        )
        #: the protocol ALPN settled on (``"http/1.1"``), None when none was
        self.alpn: str | None = None

    async def do_handshake(self) -> None:
        """Run the handshake; raises ``ssl.SSLError`` (OpenSSL's reason), or
        ``trio.BrokenResourceError`` when the peer goes away in the middle of it."""
        sslobj = self.ssl
        while True:
            try:
                sslobj.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._flush()
                data = await self.io.receive_some(_READ)
                if not data:
                    raise trio.BrokenResourceError("peer closed during the TLS handshake") from None
                self._incoming.write(data)
            except ssl.SSLError:
                # an alert for the peer (unknown CA, no shared version) goes out first
                try:
                    await self._flush()
                except trio.BrokenResourceError:
                    pass
                raise
        self.alpn = sslobj.selected_alpn_protocol()
        try:
            await self._flush()  # the last flight (a server's session tickets)
        except trio.BrokenResourceError:
            pass  # done, and the peer gone already: its next read or write says so

    @property
    def session_reused(self) -> bool:
        return self.ssl.session_reused

    def peer_certificate(self) -> bytes | None:
        """The peer's certificate (DER) as verified in the handshake; None if it sent none."""
        return self.ssl.getpeercert(binary_form=True)

    async def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            await self.io.send_all(data)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        size = max_bytes or _READ
        sslobj = self.ssl
        incoming = self._incoming
        if sslobj.pending() or incoming.pending:
            await checkpoint()  # a record already here: still a checkpoint, as SocketIO
            try:
                return sslobj.read(size)
            except ssl.SSLWantReadError:
                pass  # a partial record: read the rest below
            except ssl.SSLZeroReturnError:
                return b""
            except ssl.SSLError as e:
                raise trio.BrokenResourceError(f"TLS: {e}") from e
        while True:
            data = await self.io.receive_some(_READ)
            if not data:
                return b""  # TCP closed without close_notify: the end, as https does
            incoming.write(data)
            try:
                return sslobj.read(size)
            except ssl.SSLWantReadError:
                if self._outgoing.pending:  # post-handshake messages (a key update)
                    await self._flush()
            except ssl.SSLZeroReturnError:
                return b""
            except ssl.SSLError as e:
                raise trio.BrokenResourceError(f"TLS: {e}") from e

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        try:
            self.ssl.write(data)
        except ssl.SSLError as e:
            raise trio.BrokenResourceError(f"TLS: {e}") from e
        await self.io.send_all(self._outgoing.read())

    async def wait_send_all_might_not_block(self) -> None:
        await self.io.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        """Send ``close_notify``: TLS 1.3 lets the peer go on sending (a half-close)."""
        self._shutdown()
        await self._flush()

    def _shutdown(self) -> None:
        try:
            self.ssl.unwrap()
        except (ssl.SSLWantReadError, ssl.SSLError, ValueError):
            pass  # our close_notify is in the outgoing BIO; the peer's is not awaited

    def close(self) -> None:
        """Close now, without waiting for anything (``close_notify`` if it fits)."""
        if not self.io._closed:
            self._shutdown()
            data = self._outgoing.read()
            if data:
                try:
                    self.io.sock.send(data)
                except OSError:
                    pass
        self.io.close()

    async def aclose(self) -> None:
        self.close()
        await checkpoint()

    def peer_ip(self) -> bytes:
        return self.io.peer_ip()
