"""Upstream HTTP/2: many requests multiplexed over few connections to one endpoint.

Theory of operation. A ``protocol: http2`` cluster's endpoint has an ``Http2EndpointPool``
of *sessions* (``Http2Session``: one connection and its ``h2`` state machine). What the
pool lends a request is a *stream* (``Http2UpstreamStream``), which keeps the HTTP/1.1
pool's interface, so the proxy core is the same for both protocols:

- ``take_idle`` lends a new stream of the first session with room (its streams under
  both the cluster's ``http2.max_concurrent_streams`` and the server's
  ``SETTINGS_MAX_CONCURRENT_STREAMS``), connected or still connecting; only when none
  has room does ``open_new`` open another connection (within ``pool.max_connections``).
  A burst of requests at a cold start therefore shares the first connection, as Envoy's
  HTTP/2 pool queues requests on a connecting connection.
- The core writes its HTTP/1.1 request bytes to ``send``; the stream parses them
  (``RequestParser``) into HEADERS, DATA (within the server's windows) and trailers.
  ``read`` turns the server's frames for this stream into the response events the core
  reads from ``parser.events`` (``gateway.http2.response.response_head``: a head, its
  DATA, its trailers).
- ``release`` ends the stream: one not ended cleanly is reset (``RST_STREAM CANCEL``,
  sent at once); a session whose streams have all ended is idle, and is closed after the
  pool's ``idle_timeout`` (or at once when draining, broken or told ``GOAWAY``).

No task per session. The socket is read by whichever stream needs to (``pump``): one
*reader* receives and dispatches every stream's frames, waking only the streams it
brought something (a task switch per stream served, not per stream waiting); when its
round ends, or it is cancelled, it hands the reading on to one of those still waiting. Writes take
the session's ``data_to_send`` under one lock, in order.

Flow control bounds the buffers: a stream's received DATA is acknowledged (its window
reopened) only when the core has taken it (its next ``read``), so a slow client holds an
upstream to ``http2.initial_stream_window_kb`` per stream, not an unbounded buffer.

Errors: a stream the server refused unprocessed (``GOAWAY`` past it, ``REFUSED_STREAM``,
the stream limit reached) raises ``UpstreamStreamRefused``, which the core sends again
on another connection; a reset stream ``UpstreamResetError``; a connection closed or
broken fails each of its streams, ``UpstreamClosedEarly`` before any response byte.

Only the event loop's thread touches a pool: plain attributes suffice.
"""

from __future__ import annotations

import logging
import socket
from collections import deque

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import trio

from gateway.config import Address, Cluster, Http2Settings, PoolConfig
from gateway.errors import (
    DownstreamProtocolError,
    PoolExhausted,
    UpstreamClosedEarly,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamResetError,
    UpstreamStreamRefused,
)
from gateway.http1.events import (
    MESSAGE_ENDED,
    NO_BODY,
    DataReceived,
    Event,
    MessageEnded,
    RequestReceived,
)
from gateway.http1.parse import RequestParser
from gateway.http2.request import CONNECTION_SPECIFIC
from gateway.http2.response import response_head
from gateway.netio import ByteStream, SocketIO
from gateway.tls import TlsOrigin, TlsStream
from gateway.upstream.pool import (
    PEEK_AFTER_IDLE,
    Connector,
    EndpointPool,
    UpstreamConnection,
    open_upstream,
)

__all__ = ["Http2EndpointPool", "Http2Session", "Http2UpstreamStream"]

log = logging.getLogger("triogate.upstream")

READ_SIZE = 65536
#: the connection's receive window: room for a few streams' windows at once
CONNECTION_WINDOW = 16 * 1024 * 1024

_CONFIG = h2.config.H2Configuration(
    client_side=True,
    header_encoding=None,
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
    validate_inbound_headers=False,
)
#: request fields HTTP/2 forbids or carries as pseudo-headers
_DROPPED = CONNECTION_SPECIFIC | {b"host", b"te"}


class ResponseEvents:
    """What the proxy core reads as an HTTP/2 stream's response parser: the events, and
    the two things it asks of a parser (``broken``, ``expect_no_body``)."""

    __slots__ = ("broken", "events", "no_body")

    def __init__(self) -> None:
        self.events: deque[Event] = deque()
        self.broken = False
        self.no_body = False

    def expect_no_body(self) -> None:
        self.no_body = True


class Http2Session:
    """One HTTP/2 connection to an endpoint and the streams it carries."""

    __slots__ = (
        "broken",
        "by_id",
        "connected",
        "failure",
        "goaway",
        "h2",
        "idle_since",
        "io",
        "max_streams",
        "pool",
        "reading",
        "send_lock",
        "streams",
        "waiters",
        "window_waiters",
    )

    def __init__(self, pool: Http2EndpointPool) -> None:
        self.pool = pool
        settings = pool.http2
        self.h2 = conn = h2.connection.H2Connection(config=_CONFIG)
        conn.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: settings.initial_stream_window_kb
                * 1024,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: settings.max_header_list_kb * 1024,
            },
        )
        conn.initiate_connection()
        conn.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self.max_streams = settings.max_concurrent_streams
        self.io: ByteStream | None = None
        #: set once connected (or failed: then ``failure`` says why)
        self.connected = trio.Event()
        self.failure: UpstreamError | None = None
        #: streams lent and not yet released; ``by_id`` those whose HEADERS went
        self.streams: list[Http2UpstreamStream] = []
        self.by_id: dict[int, Http2UpstreamStream] = {}
        self.send_lock = trio.Lock()
        #: whether a stream is receiving for all of them; the others wait, each for
        #: its own response (``waiters``) or for a window to open (``window_waiters``)
        self.reading = False
        self.waiters: dict[Http2UpstreamStream, trio.Event] = {}
        self.window_waiters: list[trio.Event] = []
        #: no new stream: the connection failed, closed, or broke the protocol ...
        self.broken = False
        #: ... or the server said GOAWAY (streams under its last id finish)
        self.goaway = False
        self.idle_since = 0.0

    # -- room -------------------------------------------------------------------------

    def room(self) -> int:
        """How many more streams this session takes now."""
        if self.broken or self.goaway:
            return 0
        limit = min(self.max_streams, self.h2.remote_settings.max_concurrent_streams)
        return limit - len(self.streams)

    def is_alive(self) -> bool:
        """False if the server closed the connection while it was idle (frames waiting to
        be read, a PING or a GOAWAY, are read by the next stream's reader)."""
        io = self.io
        sock = io.sock if isinstance(io, SocketIO | TlsStream) else None
        if sock is None:
            return True
        try:
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
        except BlockingIOError:
            return True
        except OSError:
            return False

    # -- I/O ----------------------------------------------------------------------------

    async def flush(self) -> None:
        """Send whatever the state machine has to send, in order: the bytes are taken
        under the lock (taken at once when free, so nothing to send costs no wait)."""
        lock = self.send_lock
        if lock.locked():
            async with lock:
                await self._send(self.h2.data_to_send())
            return
        data = self.h2.data_to_send()
        if data:
            async with lock:  # (free: acquired before its checkpoint yields)
                await self._send(data)

    async def _send(self, data: bytes) -> None:
        if not data or self.io is None:
            return
        try:
            await self.io.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
            self.fail(f"upstream {self.pool.address} reset: {e}")

    async def pump(self, waiter: Http2UpstreamStream | None) -> None:
        """Wait for the server's next frames: for ``waiter``'s response, or (None) for a
        window to open. Receive them if no stream is receiving; else wait until that
        stream's receive brings ``waiter`` something, or hands the receiving on."""
        if self.reading:
            await self._wait_for_reader(waiter)
            return
        io = self.io
        assert io is not None
        self.reading = True
        try:
            try:
                data = await io.receive_some(READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
                self.fail(f"upstream {self.pool.address} reset: {e}")
                return
            if not data:
                self.fail(f"upstream {self.pool.address} closed the connection")
                return
            try:
                events = self.h2.receive_data(data)
            except h2.exceptions.ProtocolError as e:
                self.fail(f"upstream {self.pool.address}: {e}", protocol=True)
                return
            for event in events:
                self._dispatch(event)
        finally:
            self.reading = False
            self._hand_on()
        await self.flush()

    async def _wait_for_reader(self, waiter: Http2UpstreamStream | None) -> None:
        wakeup = trio.Event()
        if waiter is None:
            self.window_waiters.append(wakeup)
        else:
            self.waiters[waiter] = wakeup
        try:
            await wakeup.wait()
        except BaseException:
            if waiter is None:
                if wakeup in self.window_waiters:
                    self.window_waiters.remove(wakeup)
            elif self.waiters.get(waiter) is wakeup:
                del self.waiters[waiter]
            if not self.reading:
                self._hand_on()  # (cancelled, perhaps once chosen to read: another is)
            raise

    def _hand_on(self) -> None:
        """No stream is receiving: wake one that waits, to receive for all."""
        if self.waiters:
            self.waiters.popitem()[1].set()
        elif self.window_waiters:
            self.window_waiters.pop().set()

    def _wake(self, stream: Http2UpstreamStream) -> None:
        wakeup = self.waiters.pop(stream, None)
        if wakeup is not None:
            wakeup.set()

    def _wake_senders(self) -> None:
        waiters, self.window_waiters = self.window_waiters, []
        for wakeup in waiters:
            wakeup.set()

    def _dispatch(self, event: h2.events.Event) -> None:
        by_id = self.by_id
        if isinstance(event, h2.events.DataReceived):
            stream = by_id.get(event.stream_id or 0)
            size = event.flow_controlled_length or 0
            if stream is None:
                if size:  # a stream already reset: the connection's window only
                    self.h2.acknowledge_received_data(size, event.stream_id or 0)
                return
            stream.unacked += size
            if event.data:
                stream.parser.events.append(DataReceived(event.data))
                self._wake(stream)
        elif isinstance(
            event, h2.events.ResponseReceived | h2.events.InformationalResponseReceived
        ):
            stream = by_id.get(event.stream_id or 0)
            if stream is not None:
                stream.on_head(event.headers or ())
                self._wake(stream)
        elif isinstance(event, h2.events.TrailersReceived):
            stream = by_id.get(event.stream_id or 0)
            if stream is not None:
                stream.trailers = list(event.headers or ())
        elif isinstance(event, h2.events.StreamEnded):
            stream = by_id.get(event.stream_id or 0)
            if stream is not None:
                stream.ended = True
                trailers = stream.trailers
                stream.parser.events.append(
                    MessageEnded(tuple(trailers)) if trailers else MESSAGE_ENDED
                )
                self._wake(stream)
        elif isinstance(event, h2.events.StreamReset):
            stream = by_id.get(event.stream_id or 0)
            if stream is not None:
                address = self.pool.address
                if event.error_code == h2.errors.ErrorCodes.REFUSED_STREAM:
                    stream.fail(UpstreamStreamRefused(f"upstream {address} refused the stream"))
                else:
                    code = _code_name(event.error_code)
                    stream.fail(UpstreamResetError(f"upstream {address} reset the stream ({code})"))
                self._wake(stream)
                self._wake_senders()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = True
            last = event.last_stream_id or 0
            address = self.pool.address
            for stream_id, stream in by_id.items():
                if stream_id > last:
                    stream.fail(UpstreamStreamRefused(f"upstream {address} sent GOAWAY before it"))
                    self._wake(stream)
            self._wake_senders()
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self._wake_senders()

    def fail(self, reason: str, protocol: bool = False) -> None:
        """The connection is over: each of its streams fails, ``UpstreamProtocolError`` if
        the server broke the protocol, else ``UpstreamClosedEarly`` if it had no response
        yet, ``UpstreamResetError`` if it had begun one."""
        self.broken = True
        for stream in self.streams:
            if protocol:
                stream.fail(UpstreamProtocolError(reason))
            elif stream.responded:
                stream.fail(UpstreamResetError(f"{reason} mid-response"))
            else:
                stream.fail(UpstreamClosedEarly(f"{reason} without responding"))
        waiters, self.waiters = self.waiters, {}
        for wakeup in waiters.values():
            wakeup.set()
        self._wake_senders()

    def close(self) -> None:
        self.broken = True
        if self.io is not None:
            self.io.close()


class Http2UpstreamStream(UpstreamConnection):
    """One request's stream on a session: what the pool lends the proxy core."""

    __slots__ = (
        "ended",
        "error",
        "request",
        "responded",
        "session",
        "stream_id",
        "trailers",
        "unacked",
    )

    pool: Http2EndpointPool

    def __init__(self, session: Http2Session) -> None:
        # not UpstreamConnection's: the connection belongs to the session
        self.session = session
        self.pool = session.pool
        self.parser = ResponseEvents()  # type: ignore[assignment]
        self.idle_since = 0.0
        self.sock = None
        self.request = RequestParser(max_head_bytes=1 << 20, max_headers=1000)
        self.stream_id = 0
        self.trailers: list[tuple[bytes, bytes]] = []
        #: bytes received and not yet acknowledged (taken by the core)
        self.unacked = 0
        #: whether a response head came, and whether the response ended (``END_STREAM``)
        self.responded = False
        self.ended = False
        #: what the next ``read`` raises once the events before it are taken
        self.error: UpstreamError | None = None

    @property
    def events(self) -> deque[Event]:
        parser = self.parser
        assert isinstance(parser, ResponseEvents)
        return parser.events

    def fail(self, error: UpstreamError) -> None:
        """The stream is over: ``error`` is raised once the events before it are taken."""
        if self.error is None and not self.ended:
            self.error = error
            self.parser.broken = True

    def on_head(self, fields: list[tuple[bytes, bytes]] | tuple[()]) -> None:
        parser = self.parser
        assert isinstance(parser, ResponseEvents)
        self.responded = True
        head = response_head(fields, parser.no_body)
        if head is None:
            self.fail(UpstreamProtocolError(f"upstream {self.pool.address}: malformed head"))
            return
        parser.events.append(head)
        if head.status < 200:
            parser.events.append(MESSAGE_ENDED)  # an interim head is a message

    # -- the request ---------------------------------------------------------------------

    async def _wait_connected(self) -> None:
        """Return once the session is connected; raise as its connect failed."""
        session = self.session
        await session.connected.wait()
        failure = session.failure
        if failure is not None:
            raise type(failure)(str(failure))  # (a new one: several tasks raise it)

    async def send(self, data: bytes) -> None:
        session = self.session
        if not session.connected.is_set():
            await self._wait_connected()
        try:
            self.request.feed(data)
        except DownstreamProtocolError as e:  # pragma: no cover - the core's own bytes
            raise UpstreamResetError(f"request not translatable to HTTP/2: {e}") from None
        events = self.request.events
        conn = session.h2
        try:
            while events:
                event = events.popleft()
                if isinstance(event, RequestReceived):
                    self._begin(event)
                elif isinstance(event, DataReceived):
                    await self._send_data(event.data)
                else:
                    assert isinstance(event, MessageEnded)
                    if event.trailers:
                        fields = [(n.lower(), v) for n, v in event.trailers]
                        conn.send_headers(self.stream_id, fields, end_stream=True)
                    else:
                        conn.end_stream(self.stream_id)
        except h2.exceptions.TooManyStreamsError:
            raise UpstreamStreamRefused(f"upstream {self.pool.address}: stream limit") from None
        except h2.exceptions.H2Error as e:
            if self.error is not None:
                raise self.error from None
            raise UpstreamResetError(f"upstream {self.pool.address} stream closed: {e}") from None
        await session.flush()
        if self.error is not None and not self.events:
            raise self.error

    def _begin(self, head: RequestReceived) -> None:
        session = self.session
        if self.error is not None:
            raise self.error
        if session.broken or session.goaway:
            raise UpstreamStreamRefused(f"upstream {self.pool.address} is closing the connection")
        conn = session.h2
        self.stream_id = stream_id = conn.get_next_available_stream_id()
        session.by_id[stream_id] = self
        parser = self.parser
        assert isinstance(parser, ResponseEvents)
        parser.no_body = head.method == b"HEAD"
        fields = [
            (b":method", head.method),
            (b":scheme", self.pool.scheme),
            (b":path", head.target),
            (b":authority", head.host),
            # the gateway relays trailers (gRPC's servers insist on hearing so)
            (b"te", b"trailers"),
        ]
        for name, value in head.headers:
            name = name.lower()
            if name not in _DROPPED:
                fields.append((name, value))
        end = head.framing == NO_BODY
        conn.send_headers(stream_id, fields, end_stream=end)
        if end:
            # a body-less request: its HEADERS ended the stream, its MessageEnded is moot
            self.request.events.clear()

    async def _send_data(self, data: bytes) -> None:
        session = self.session
        conn = session.h2
        view = memoryview(data)
        while view:
            if self.error is not None:
                raise self.error
            window = conn.local_flow_control_window(self.stream_id)
            window = min(window, conn.max_outbound_frame_size)
            if window <= 0:
                await session.flush()
                await session.pump(None)
                continue
            conn.send_data(self.stream_id, view[:window].tobytes())
            view = view[window:]
            await session.flush()

    # -- the response --------------------------------------------------------------------

    async def read(self) -> None:
        """Wait until the response has more events for the core; raise this stream's
        error once the events before it are taken."""
        session = self.session
        if not session.connected.is_set():
            await self._wait_connected()
        if self.unacked:
            self._acknowledge()
            await session.flush()
        events = self.events
        while not events:
            if self.error is not None:
                raise self.error
            await session.pump(self)

    def _acknowledge(self) -> None:
        unacked, self.unacked = self.unacked, 0
        try:
            self.session.h2.acknowledge_received_data(unacked, self.stream_id)
        except h2.exceptions.H2Error:  # pragma: no cover - the connection is closing
            pass

    def is_open(self) -> bool:
        return not self.session.broken

    def close(self) -> None:
        """Nothing: the pool's ``release`` ends a stream (the connection is the session's)."""


class Http2EndpointPool(EndpointPool):
    """HTTP/2 sessions to one endpoint, lending streams (see the module's docstring).

    ``open`` counts connections (sessions), ``connecting`` those being established,
    ``idle`` those carrying no stream, as for the HTTP/1.1 pool.
    """

    __slots__ = ("http2", "scheme", "sessions")

    def __init__(
        self,
        address: Address,
        config: PoolConfig,
        http2: Http2Settings,
        connector: Connector = open_upstream,
        tls: TlsOrigin | None = None,
    ) -> None:
        super().__init__(address, config, connector, tls)
        self.http2 = http2
        self.scheme = b"https" if tls is not None else b"http"
        self.sessions: list[Http2Session] = []

    @property
    def idle(self) -> int:
        return sum(1 for session in self.sessions if not session.streams)

    def serves(self, cluster: Cluster, tls: TlsOrigin | None) -> bool:
        return (
            cluster.protocol == "http2"
            and cluster.pool == self.config
            and cluster.http2 == self.http2
            and tls is self.tls
        )

    def take_idle(self, now: float) -> UpstreamConnection | None:
        """A new stream on the first session with room; None when none has any."""
        for session in self.sessions:
            if session.room() <= 0:
                continue
            if not session.streams and (
                session.idle_since < now - self.config.idle_timeout
                or (now - session.idle_since >= PEEK_AFTER_IDLE and not session.is_alive())
            ):
                self._close(session)
                return self.take_idle(now)
            stream = Http2UpstreamStream(session)
            session.streams.append(stream)
            return stream
        return None

    async def open_new(self) -> UpstreamConnection:
        """A stream on a new connection; ``PoolExhausted`` when ``max_connections`` are
        open, else as ``connect``. Requests arriving meanwhile join it (``take_idle``)."""
        if self.open >= self.config.max_connections:
            raise PoolExhausted(f"{self.config.max_connections} connections to {self.address} busy")
        session = Http2Session(self)
        stream = Http2UpstreamStream(session)
        session.streams.append(stream)
        self.sessions.append(session)
        self.open += 1
        self.connecting += 1
        try:
            session.io = await self.connect()
        except BaseException as e:
            # the requests that joined it fail as it did (a cancelled connect: they are
            # sent again on a connection of their own)
            if isinstance(e, UpstreamError):
                session.failure = e
            else:
                session.failure = UpstreamStreamRefused(f"connect to {self.address} abandoned")
            session.broken = True
            session.streams.remove(stream)
            self._forget(session)
            raise
        finally:
            self.connecting -= 1
            session.connected.set()
        return stream

    def release(self, conn: UpstreamConnection, reusable: bool, now: float) -> None:
        """End a lent stream (reset if unfinished); close its session if that was the
        last stream of one that is over, or idle while the pool drains."""
        assert isinstance(conn, Http2UpstreamStream)
        session = conn.session
        try:
            session.streams.remove(conn)
        except ValueError:  # pragma: no cover - released twice
            return
        stream_id = conn.stream_id
        if stream_id:
            del session.by_id[stream_id]
        if stream_id and not session.broken:
            if not conn.ended or conn.error is not None:
                try:
                    session.h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
                except h2.exceptions.H2Error:
                    pass  # closed already (reset by the server)
                trio.lowlevel.spawn_system_task(_flush_quietly, session)
            if conn.unacked:
                conn._acknowledge()
        if session.streams:
            return
        if session.broken or session.goaway or self.draining:
            if session in self.sessions:
                self._close(session)
            return
        session.idle_since = now

    def expire_idle(self, now: float) -> int:
        oldest_ok = now - self.config.idle_timeout
        closed = 0
        for session in list(self.sessions):
            if not session.streams and (
                session.idle_since < oldest_ok or self.draining or session.broken or session.goaway
            ):
                self._close(session)
                closed += 1
        return closed

    def close_all_idle(self) -> None:
        for session in list(self.sessions):
            if not session.streams:
                self._close(session)

    def _close(self, session: Http2Session) -> None:
        session.close()
        self._forget(session)

    def _forget(self, session: Http2Session) -> None:
        self.sessions.remove(session)
        self.open -= 1


def _code_name(code: int | None) -> str:
    if code is None:
        return "no code"
    try:
        return h2.errors.ErrorCodes(code).name
    except ValueError:
        return str(code)


async def _flush_quietly(session: Http2Session) -> None:
    """Send a released stream's RST_STREAM now (a system task: ``release`` cannot wait)."""
    try:
        await session.flush()
    except Exception:  # a system task must not raise: its error would end the run
        log.exception("upstream %s: sending a stream reset failed", session.pool.address)
