"""The HTTP/2 reverse proxy: one task per client connection drives the h2 state machine.

Design, and why: the connection task (``Http2Connection.serve``) is the only reader of
the socket and the only one to feed h2; a writer task beside it is the only writer (so
no stream's cancellation can cut a frame in half). Each request stream runs in a task
of its own (``Http2Stream``), because its upstream exchange waits on another socket;
it goes through the SAME proxy core as an HTTP/1.1 request: ``Http2Stream`` *is* an
``HttpConnection`` serving one request, so routing, splits, faults, mirrors, breakers,
retries, outlier reports, stats and the access log are ``gateway.proxy.http``'s code,
not a copy. The request enters that core as the HTTP/1.1 head it translates to
(``gateway.http2.request``: strict validation first, a malformed request is reset and
reaches no upstream), its body as the parser events an HTTP/1.1 body makes. The
response leaves the core as HTTP/1.1 bytes written to the stream's ``_StreamWriter``,
which parses them again (llhttp, as for an upstream's response) and turns them into
HEADERS, DATA and trailers: one parse of the proxy's own output per response, paid
for the one copy of the proxy logic (measured: ``bench/README.md``).

Flow control, bounded both ways: a request body's DATA is acknowledged (the window
given back) only once the stream's task has taken it, so each stream buffers at most
its ``initial_stream_window_kb`` and the connection its connection window; a response
body is sent no faster than the client's windows open, and a stream waits while the
writer has more than ``HIGH_WATER`` bytes queued (a slow reader holds the upstream
read, not the gateway's memory).

Defences (``gateway.http2.defence``): a header block is measured frame by frame before
h2 buffers it (over ``max_header_list_kb``: ``http2.header_overflow``; a CONTINUATION
flood: ``http2.continuation_flood``); resets, PING/SETTINGS and empty DATA frames spend
flood budgets; a spent budget ends the connection with GOAWAY ENHANCE_YOUR_CALM. A
client opening more than ``max_concurrent_streams`` gets h2's GOAWAY PROTOCOL_ERROR
(``http2.too_many_streams``; RFC 9113 5.4.1 lets a stream error be a connection error).

Timeouts: the connection's idle timeout runs while no stream is open; each stream has
the route's timeout as an HTTP/1.1 request has (the listener's timer task). A drain
sends GOAWAY with the last stream id taken, refuses later streams (REFUSED_STREAM),
lets the open ones finish and then closes.

gRPC (``gateway.proxy.grpc``): a stream whose request is a gRPC call answers its local
replies in gRPC's terms (``Http2Stream._reply``: trailers-only), has its deadline
capped by ``grpc-timeout`` (``Http2Stream.deadline``), and reports the response's
``grpc-status`` (seen by its writer) to outlier detection and the breaker
(``Http2Stream._finish``). An HTTP/1.1 connection never runs any of it.
"""

from __future__ import annotations

import logging
from collections import deque
from math import inf
from time import perf_counter

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import trio
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame

from gateway.errors import DownstreamClosed, UpstreamProtocolError
from gateway.http1.events import (
    LENGTH,
    MESSAGE_ENDED,
    NO_BODY,
    DataReceived,
    Event,
    Headers,
    MessageEnded,
    RequestReceived,
    ResponseReceived,
)
from gateway.http1.parse import ResponseParser
from gateway.http2.defence import (
    BlockVerdict,
    HeaderBlockGuard,
    control_budget,
    empty_data_budget,
    reset_budget,
)
from gateway.http2.request import BodyLength, Malformed, request_head, trailer_fields
from gateway.http2.response import end_to_end, response_fields
from gateway.listener.context import ListenerContext
from gateway.observe.record import RequestRecord
from gateway.proxy.grpc import grpc_call, grpc_status_of, reply_fields, timeout_of
from gateway.proxy.http import HttpConnection
from gateway.proxy.outcome import charge_attempt
from gateway.tls import ClientCertHeader
from policies.grpc import grpc_to_http
from policies.retry import RetryRules

log = logging.getLogger("triogate.proxy.http2")

#: the client connection preface (RFC 9113 3.4)
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
READ_SIZE = 65536
#: response bytes queued for the writer above which a stream sending a body waits
HIGH_WATER = 256 * 1024
#: the connection's receive window, in stream windows (bounded: 16 MiB at most)
CONNECTION_WINDOWS = 16
_MAX_CONNECTION_WINDOW = 16 * 1024 * 1024


async def sniff(stream: trio.abc.Stream) -> tuple[bytes, bool] | None:
    """A new connection's first bytes, and whether they begin with the HTTP/2 preface;
    None if the client closed first."""
    data = b""
    while True:
        try:
            piece = await stream.receive_some(READ_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return None
        if not piece:
            return None
        data += piece
        if len(data) >= len(PREFACE) or not PREFACE.startswith(data):
            return data, data.startswith(PREFACE)


async def serve_http(
    stream: trio.abc.Stream,
    ctx: ListenerContext,
    client_ip: bytes,
    alpn: str | None = None,
    client_cert: ClientCertHeader | None = None,
) -> None:
    """Serve one client connection of an ``http`` listener: HTTP/2 if it negotiated
    ``h2`` by ALPN or opens with the preface (prior knowledge), else HTTP/1.1.

    Telling them apart costs one receive per connection, none per request; a client
    that sends nothing within the idle timeout is closed.
    """
    if alpn == "h2":
        await Http2Connection(stream, ctx, client_ip, client_cert).serve(b"")
        return
    sniffed = None
    with trio.move_on_after(ctx.config.idle_timeout):
        sniffed = await sniff(stream)
    if sniffed is None:
        return
    initial, is_h2 = sniffed
    if is_h2:
        await Http2Connection(stream, ctx, client_ip, client_cert).serve(initial)
    else:
        await HttpConnection(stream, ctx, client_ip, client_cert).serve(initial)


class _ServerConnection(h2.connection.H2Connection):
    """h2's server side, with the body length checked by the gateway instead.

    h2 treats a ``content-length`` that disagrees with the DATA as a connection error;
    RFC 9113 8.1.1 makes it a stream error, which ``BodyLength`` turns it into.
    """

    def _begin_new_stream(self, stream_id: int, allowed_ids: object) -> h2.stream.H2Stream:
        stream = super()._begin_new_stream(stream_id, allowed_ids)  # type: ignore[arg-type]
        stream._initialize_content_length = _no_length  # type: ignore[method-assign]
        return stream


def _no_length(headers: object) -> None:
    return None


_H2_CONFIG = h2.config.H2Configuration(
    client_side=False,
    header_encoding=None,
    validate_inbound_headers=False,  # gateway.http2.request: a stream error, not h2's GOAWAY
    normalize_inbound_headers=False,
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
)


class Http2Connection:
    """One HTTP/2 client connection: the state machine, its streams, its writer."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        ctx: ListenerContext,
        client_ip: bytes,
        client_cert: ClientCertHeader | None = None,
    ) -> None:
        self.stream = stream
        self.ctx = ctx
        self.client_ip = client_ip
        #: a TLS connection's ``x-forwarded-client-cert`` rule, for each stream
        self.client_cert = client_cert
        settings = ctx.config.http2
        self.h2 = _ServerConnection(config=_H2_CONFIG)
        self.stream_window = settings.initial_stream_window_kb * 1024
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: settings.max_concurrent_streams,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: settings.max_header_list_kb * 1024,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            },
        )
        self.h2.decoder.max_header_list_size = settings.max_header_list_kb * 1024
        self.guard = HeaderBlockGuard(settings.max_header_list_kb * 1024)
        now = trio.current_time()
        self.resets = reset_budget(now)
        self.control = control_budget(now)
        self.empty_data = empty_data_budget(now)
        self.streams: dict[int, Http2Stream] = {}
        #: the connection's cancel scope (the read loop) and deadline: the listener's
        #: timers fire it when idle, a drain with no open stream too
        self.scope = trio.CancelScope()
        self.deadline = inf
        #: the last stream id a graceful GOAWAY promised to serve; None before a drain
        self.goaway_last: int | None = None
        self.nursery: trio.Nursery | None = None
        #: raw frames to send before h2's (a graceful GOAWAY, which h2 cannot send
        #: without closing its state machine to the open streams)
        self.extra_out = b""
        self._wake = trio.Event()
        self.progress = trio.Event()
        #: bytes handed to h2 not yet taken by the writer, and taken but not yet sent
        self.unsent = 0
        self.in_flight = 0
        self.broken = False

    # -- the connection task ------------------------------------------------------------

    async def serve(self, initial: bytes) -> None:
        """Serve streams until the client closes, errs, idles out, or a drain is done."""
        ctx = self.ctx
        h2c = self.h2
        h2c.initiate_connection()
        # a second SETTINGS: a smaller window than the default must wait for the ACK
        # (data the client sent before it is within the old one)
        h2c.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: self.stream_window})
        extra = min(self.stream_window * CONNECTION_WINDOWS, _MAX_CONNECTION_WINDOW) - 65535
        if extra > 0:
            h2c.increment_flow_control_window(extra)
        ctx.connections.add(self)
        self.deadline = ctx.now + ctx.config.idle_timeout
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                nursery.start_soon(self._write_loop)
                with self.scope:
                    await self._read_loop(initial)
                nursery.cancel_scope.cancel()
        finally:
            ctx.connections.discard(self)
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                if not self.broken:
                    if h2c.state_machine.state != h2.connection.ConnectionState.CLOSED:
                        h2c.close_connection(last_stream_id=self._last_taken())
                        ctx.stats.http2_goaway_sent += 1
                    data = self.extra_out + h2c.data_to_send()
                    if data:
                        try:
                            await self.stream.send_all(data)
                        except (trio.BrokenResourceError, trio.ClosedResourceError):
                            pass
                await self.stream.aclose()

    async def _read_loop(self, data: bytes) -> None:
        guard_data = data[len(PREFACE) :]
        h2c = self.h2
        stats = self.ctx.stats
        while True:
            if data:
                verdict = self.guard.feed(guard_data)
                if verdict is not None:
                    if verdict is BlockVerdict.OVERSIZED:
                        stats.http2_header_overflow += 1
                    else:
                        stats.http2_continuation_flood += 1
                    self._calm_down()
                    return
                try:
                    events = h2c.receive_data(data)
                except h2.exceptions.TooManyStreamsError:
                    stats.http2_too_many_streams += 1
                    stats.http2_goaway_sent += 1
                    return
                except h2.exceptions.DenialOfServiceError:
                    stats.http2_header_overflow += 1
                    stats.http2_goaway_sent += 1
                    return
                except h2.exceptions.ProtocolError as e:
                    log.debug("HTTP/2 protocol error from %s: %s", self.client_ip, e)
                    stats.http2_goaway_sent += 1
                    return
                if not self._on_events(events):
                    return
                self.kick()
            try:
                data = await self.stream.receive_some(READ_SIZE)  # type: ignore[assignment]
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                self.broken = True
                return
            guard_data = data

    def _on_events(self, events: list[h2.events.Event]) -> bool:
        """Act on h2's events; False when the connection is to end."""
        stats = self.ctx.stats
        streams = self.streams
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                self._begin_stream(ev)
            elif isinstance(ev, h2.events.DataReceived):
                stream_id = ev.stream_id
                assert stream_id is not None
                stream = streams.get(stream_id)
                data = ev.data or b""
                if (
                    not data
                    and ev.stream_ended is None
                    and not self.empty_data.spend(trio.current_time())
                ):
                    stats.http2_empty_frames_flood += 1
                    self._calm_down()
                    return False
                if stream is None or stream.length is None:
                    # a stream already over (reset, answered): the window goes back
                    self._acknowledge(ev.flow_controlled_length or 0, stream_id)
                    continue
                if not stream.length.add(len(data)):
                    self._refuse(stream_id, "DATA beyond content-length")
                    stream.malformed()
                    continue
                if data:
                    stream.body_events.append(DataReceived(data))
                stream.unacked += ev.flow_controlled_length or 0
                stream.wake()
            elif isinstance(ev, h2.events.StreamEnded):
                stream = streams.get(ev.stream_id or 0)
                if stream is not None and stream.length is not None:
                    if not stream.length.ended():
                        self._refuse(stream.stream_id, "DATA short of content-length")
                        stream.malformed()
                        continue
                    trailers = stream.trailers
                    stream.body_events.append(MessageEnded(trailers) if trailers else MESSAGE_ENDED)
                    stream.length = None
                    stream.wake()
            elif isinstance(ev, h2.events.TrailersReceived):
                stream = streams.get(ev.stream_id or 0)
                if stream is not None and stream.length is not None:
                    fields = trailer_fields(ev.headers or ())
                    if isinstance(fields, Malformed):
                        self._refuse(stream.stream_id, fields.reason)
                        stream.malformed()
                        continue
                    stats.http2_trailers += 1
                    stream.trailers = fields
            elif isinstance(ev, h2.events.StreamReset):
                stats.http2_rx_reset += 1
                stream = streams.get(ev.stream_id or 0)
                if stream is not None:
                    stream.reset_by_client()
                if not self.resets.spend(trio.current_time()):
                    stats.http2_rapid_reset += 1
                    self._calm_down()
                    return False
            elif isinstance(ev, h2.events.WindowUpdated):
                if ev.stream_id:
                    stream = streams.get(ev.stream_id)
                    if stream is not None:
                        stream.writer.window_opened()
                else:
                    for stream in streams.values():
                        stream.writer.window_opened()
            elif isinstance(ev, h2.events.RemoteSettingsChanged | h2.events.PingReceived):
                if not self.control.spend(trio.current_time()):
                    stats.http2_control_flood += 1
                    self._calm_down()
                    return False
                for stream in streams.values():
                    stream.writer.window_opened()
            elif isinstance(ev, h2.events.ConnectionTerminated):
                return False
        return True

    def _begin_stream(self, ev: h2.events.RequestReceived) -> None:
        stream_id = ev.stream_id
        assert stream_id is not None
        ctx = self.ctx
        if self.goaway_last is not None and stream_id > self.goaway_last:
            self._reset(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        head = request_head(ev.headers or (), ev.stream_ended is not None)
        if isinstance(head, Malformed):
            self._refuse(stream_id, head.reason)
            return
        stream = Http2Stream(self, stream_id, head)
        self.streams[stream_id] = stream
        ctx.stats.http2_streams_active += 1
        self.deadline = inf  # a stream is open: its route's timeout governs
        assert self.nursery is not None
        self.nursery.start_soon(stream.run, head)

    def _refuse(self, stream_id: int, reason: str) -> None:
        """A malformed request: RST_STREAM PROTOCOL_ERROR, nothing forwarded."""
        log.debug("HTTP/2 stream %d from %s malformed: %s", stream_id, self.client_ip, reason)
        self.ctx.stats.http2_rx_messaging_error += 1
        self._reset(stream_id, ErrorCodes.PROTOCOL_ERROR)

    def _reset(self, stream_id: int, code: ErrorCodes) -> None:
        try:
            self.h2.reset_stream(stream_id, code)
        except h2.exceptions.H2Error:
            return  # already closed
        self.ctx.stats.http2_tx_reset += 1

    def _acknowledge(self, size: int, stream_id: int) -> None:
        if size:
            try:
                self.h2.acknowledge_received_data(size, stream_id)
            except h2.exceptions.H2Error:
                pass

    def _calm_down(self) -> None:
        """A flood: GOAWAY ENHANCE_YOUR_CALM, and the connection ends."""
        log.info("HTTP/2 flood from %s: GOAWAY ENHANCE_YOUR_CALM", self.client_ip)
        self.h2.close_connection(ErrorCodes.ENHANCE_YOUR_CALM, last_stream_id=self._last_taken())
        self.ctx.stats.http2_goaway_sent += 1

    def _last_taken(self) -> int:
        if self.goaway_last is not None:
            return self.goaway_last
        return self.h2.highest_inbound_stream_id

    # -- the writer ---------------------------------------------------------------------

    def kick(self) -> None:
        """Frames are waiting in h2: wake the writer (never waits)."""
        self._wake.set()

    async def _write_loop(self) -> None:
        h2c = self.h2
        while True:
            data = h2c.data_to_send()
            if self.extra_out:
                data, self.extra_out = self.extra_out + data, b""
            if not data:
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            self.in_flight = len(data)
            self.unsent = 0
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.broken = True
                self.scope.cancel()
                for stream in list(self.streams.values()):
                    stream.reset_by_client()
                return
            finally:
                self.in_flight = 0
                self.progress.set()
                self.progress = trio.Event()

    async def drained(self) -> None:
        """Wait while more than ``HIGH_WATER`` bytes are queued for the client."""
        while self.unsent + self.in_flight > HIGH_WATER and not self.broken:
            self.kick()
            await self.progress.wait()

    # -- timers and drain ---------------------------------------------------------------

    def cancel_if_idle(self) -> None:
        """The listener drains: GOAWAY now; the connection ends once its streams have."""
        if self.goaway_last is None:
            self.goaway_last = last = self.h2.highest_inbound_stream_id
            self.extra_out += GoAwayFrame(0, last_stream_id=last, error_code=0).serialize()
            self.ctx.stats.http2_goaway_sent += 1
            self.kick()
        if not self.streams:
            self.scope.cancel()

    def stream_done(self, stream: Http2Stream) -> None:
        """A stream's task ended: reset it if its response is not whole, give its
        unread window back."""
        stream_id = stream.stream_id
        del self.streams[stream_id]
        ctx = self.ctx
        ctx.stats.http2_streams_active -= 1
        if not stream.writer.ended and not stream.writer.broken:
            self._reset(stream_id, ErrorCodes.INTERNAL_ERROR)
        elif stream.length is not None and not stream.writer.broken and stream.length.short():
            # answered before the whole request body came: no more of it is wanted
            self._reset(stream_id, ErrorCodes.NO_ERROR)
        self._acknowledge(stream.unacked, stream_id)
        self.kick()
        if not self.streams:
            if self.goaway_last is not None:
                self.scope.cancel()
            else:
                self.deadline = ctx.now + ctx.config.idle_timeout


class _StreamWriter(trio.abc.Stream):
    """Where the proxy core writes one stream's HTTP/1.1 response: it becomes frames.

    The bytes are parsed as an upstream's response is (``ResponseParser``), and each
    event goes out as HEADERS (1xx and final), DATA (within the client's windows) or
    trailers. ``BrokenResourceError`` once the stream or the connection is gone.
    """

    def __init__(
        self, conn: Http2Connection, stream_id: int, head_request: bool, grpc: bool = False
    ) -> None:
        self.conn = conn
        self.stream_id = stream_id
        #: a gRPC call's: the ``grpc-status`` of its response (headers or trailers)
        self.grpc = grpc
        self.grpc_status: int | None = None
        self.parser = ResponseParser()
        if head_request:
            self.parser.expect_no_body()
        self.broken = False
        self.ended = False
        self.interim = False
        self._window = trio.Event()

    def window_opened(self) -> None:
        self._window.set()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.broken or self.conn.broken:
            raise trio.BrokenResourceError("stream reset")
        try:
            self.parser.feed(bytes(data))
        except UpstreamProtocolError as e:
            # not HTTP (a fault's garbage): the stream is reset
            raise trio.BrokenResourceError(str(e)) from None
        conn = self.conn
        h2c = conn.h2
        stream_id = self.stream_id
        events = self.parser.events
        try:
            while events:
                ev = events.popleft()
                if isinstance(ev, ResponseReceived):
                    fields = response_fields(ev)
                    if ev.status < 200:
                        self.interim = True
                        if ev.status != 101:
                            h2c.send_headers(stream_id, fields)
                        continue
                    if self.grpc:
                        self.grpc_status = grpc_status_of(ev.headers)
                    # a head with nothing after it (no body, no trailers) ends the stream
                    # in one frame: gRPC's trailers-only response, as grpc clients want
                    end = bool(events) and events[0] is MESSAGE_ENDED
                    if end:
                        events.popleft()
                        self.ended = True
                    h2c.send_headers(stream_id, fields, end_stream=end)
                    conn.unsent += 64
                elif isinstance(ev, DataReceived):
                    await self._send_data(ev.data)
                else:
                    assert isinstance(ev, MessageEnded)
                    if self.interim:
                        self.interim = False
                        continue
                    if ev.trailers:
                        if self.grpc:
                            self.grpc_status = grpc_status_of(ev.trailers)
                        h2c.send_headers(
                            stream_id, end_to_end(ev.trailers, frozenset()), end_stream=True
                        )
                    else:
                        h2c.end_stream(stream_id)
                    self.ended = True
        except h2.exceptions.H2Error as e:
            self.broken = True
            raise trio.BrokenResourceError(f"stream closed: {e}") from None
        conn.kick()

    async def _send_data(self, data: bytes) -> None:
        conn = self.conn
        h2c = conn.h2
        stream_id = self.stream_id
        view = memoryview(data)
        while view:
            window = min(h2c.local_flow_control_window(stream_id), h2c.max_outbound_frame_size)
            if window <= 0:
                self._window = trio.Event()
                conn.kick()
                await self._window.wait()
                if self.broken or conn.broken:
                    raise trio.BrokenResourceError("stream reset")
                continue
            piece = view[:window]
            h2c.send_data(stream_id, piece.tobytes())
            view = view[window:]
            conn.unsent += len(piece)
            if conn.unsent + conn.in_flight > HIGH_WATER:
                await conn.drained()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        raise trio.ClosedResourceError("an HTTP/2 stream's body arrives as events")

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


class Http2Stream(HttpConnection):
    """One request stream, served by the HTTP/1.1 proxy core (see the module docstring)."""

    __slots__ = (
        "conn",
        "grpc",
        "grpc_deadline",
        "length",
        "peer_reset",
        "stream_id",
        "trailers",
        "unacked",
        "wakeup",
        "writer",
    )

    def __init__(self, conn: Http2Connection, stream_id: int, head: RequestReceived) -> None:
        #: whether the request is a gRPC call, and the deadline its ``grpc-timeout`` sets
        self.grpc = grpc_call(head.headers)
        self.grpc_deadline = inf
        if self.grpc:
            seconds = timeout_of(head.headers)
            if seconds is not None:
                self.grpc_deadline = conn.ctx.now + seconds
        writer = _StreamWriter(conn, stream_id, head.method == b"HEAD", self.grpc)
        super().__init__(writer, conn.ctx, conn.client_ip, conn.client_cert)
        self.conn = conn
        self.stream_id = stream_id
        self.writer = writer
        self.body_events: deque[Event] = deque()
        #: the request body against its content-length; None once it has ended (or
        #: there is none)
        self.length: BodyLength | None = None
        if head.framing != NO_BODY:
            self.length = BodyLength(head.content_length if head.framing == LENGTH else None)
        self.trailers: tuple[tuple[bytes, bytes], ...] = ()
        #: window taken by DATA the task has not consumed yet
        self.unacked = 0
        self.wakeup = trio.Event()
        self.peer_reset = False

    async def run(self, head: RequestReceived) -> None:
        """Proxy the stream's one request; the stream is reset if its response is not
        whole when this ends."""
        ctx = self.ctx
        ctx.connections.add(self)
        try:
            with self.scope:
                await self._handle(head)
            if self.scope.cancelled_caught:
                if self.peer_reset:
                    self._client_gone()
                else:
                    await self._after_timeout()
        except DownstreamClosed:
            self._client_gone()
        except BaseException:
            self._cut_short()
            raise
        finally:
            self._finish()
            ctx.connections.discard(self)
            self.conn.stream_done(self)

    def cancel_if_idle(self) -> None:
        """A stream is never idle: the connection answers the drain."""

    # -- gRPC (gateway.proxy.grpc) --------------------------------------------------------

    @property
    def deadline(self) -> float:
        return _DEADLINE_SLOT.__get__(self)  # type: ignore[no-any-return]

    @deadline.setter
    def deadline(self, value: float) -> None:
        # a gRPC call's grpc-timeout caps every deadline the proxy core sets (route
        # timeout included: the smaller wins)
        grpc_deadline = self.grpc_deadline
        _DEADLINE_SLOT.__set__(self, value if value < grpc_deadline else grpc_deadline)

    async def _reply(
        self,
        record: RequestRecord,
        status: int,
        text: str,
        headers: Headers | None = None,
        grpc_status: int | None = None,
    ) -> bool:
        """A local reply; a gRPC call's is trailers-only, with its ``grpc-status``."""
        if not self.grpc:
            return await super()._reply(record, status, text, headers, grpc_status)
        fields = reply_fields(status, text, record.flags, headers, grpc_status)
        if self.permit is not None and self.breaker_result is None:
            self.breaker_result = status  # the breaker judges what HTTP would have said
        record.status = 200
        record.bytes_out = 0
        writer = self.writer
        if writer.broken or self.conn.broken:
            raise DownstreamClosed
        try:
            self.conn.h2.send_headers(self.stream_id, fields, end_stream=True)
        except h2.exceptions.H2Error:
            writer.broken = True
            raise DownstreamClosed from None
        writer.ended = True
        record.head_sent = True
        self.conn.kick()
        self._finish()
        return False

    def _may_hold_body(self, head: RequestReceived, rules: RetryRules) -> bool:  # type: ignore[override]
        """As the proxy core's; a gRPC call may be held on a route retrying gRPC statuses."""
        if self.grpc and rules.grpc:
            length = head.content_length if head.framing == LENGTH else None
            return rules.may_hold_body(head.method, length, grpc_call=True)
        return HttpConnection._may_hold_body(head, rules)

    def _finish(self) -> None:
        """As the proxy core's; a gRPC call's attempt is charged (outlier detection)
        and its breaker told with the HTTP status its ``grpc-status`` maps to."""
        record = self.record
        grpc_status = self.writer.grpc_status
        if record is not None and grpc_status:
            mapped = grpc_to_http(grpc_status)
            answered = record.answered
            if answered is not None:
                record.answered = None
                ms = (perf_counter() - record.start) * 1000.0
                charge_attempt(answered[0], answered[1], mapped, ms)
                record.upstream_ms = ms
            if self.permit is not None and self.breaker_result is None:
                self.breaker_result = mapped
        super()._finish()

    def wake(self) -> None:
        self.wakeup.set()

    def reset_by_client(self) -> None:
        """The client reset the stream (or the connection broke): stop serving it."""
        self.peer_reset = True
        self.writer.broken = True
        self.writer.window_opened()
        self.wakeup.set()
        self.length = None
        self.scope.cancel()

    def malformed(self) -> None:
        """The body broke its stream's rules (already reset): the request ends unanswered."""
        self.reset_by_client()

    async def _more_body(self) -> None:
        if self.unacked:
            size, self.unacked = self.unacked, 0
            self.conn._acknowledge(size, self.stream_id)
            self.conn.kick()
        events = self.body_events
        before = len(events)
        while len(events) == before:
            if self.peer_reset:
                raise DownstreamClosed
            self.wakeup = trio.Event()
            await self.wakeup.wait()


#: the proxy core's own ``deadline`` slot, under ``Http2Stream.deadline``
_DEADLINE_SLOT = HttpConnection.__dict__["deadline"]

__all__ = ["PREFACE", "Http2Connection", "Http2Stream", "serve_http", "sniff"]
