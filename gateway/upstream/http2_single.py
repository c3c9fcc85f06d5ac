"""Upstream HTTP/2, one stream at a time per connection: a STOPGAP for gRPC's tests.

Branch ``http2`` is building the real upstream HTTP/2 pools (many streams multiplexed
over few connections); until they land, a ``protocol: http2`` cluster's pool lends
these connections instead, so that gRPC (which needs HTTP/2 to its servers) can be
proxied and tested end to end. Replace this module with theirs when it comes.

It keeps the HTTP/1.1 pool's interface, as ``Http2Stream`` keeps the proxy core's on
the downstream side: the proxy core writes its HTTP/1.1 request bytes to ``send``,
which parses them (``RequestParser``) and turns them into HEADERS, DATA (within the
server's windows) and trailers on a new stream of this connection; ``read`` turns the
server's frames into the response events the core reads from ``parser.events``
(``gateway.http2.response.response_head``: a head, its DATA, its trailers). A
connection carries one request at a time and is reused for the next one (a new stream
id), so a pool of N connections carries N requests at once.

Two tasks may use one connection at once (the core's body pump sends while its relay
reads): writes to the socket go through one lock, and a ``send`` waiting for a window
reads the socket itself only when no ``read`` is under way.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import trio

from gateway.errors import (
    DownstreamProtocolError,
    UpstreamClosedEarly,
    UpstreamProtocolError,
    UpstreamResetError,
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
from gateway.netio import ByteStream
from gateway.upstream.pool import UpstreamConnection

if TYPE_CHECKING:
    from gateway.upstream.pool import EndpointPool

__all__ = ["Http2UpstreamConnection"]

_CONFIG = h2.config.H2Configuration(
    client_side=True,
    header_encoding=None,
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
    validate_inbound_headers=False,
)
_DROPPED = CONNECTION_SPECIFIC | {b"host", b"te"}


class _Events:
    """What the proxy core reads as the response parser: the events and two flags."""

    __slots__ = ("broken", "events", "no_body")

    def __init__(self) -> None:
        self.events: deque[Event] = deque()
        self.broken = False
        self.no_body = False

    def expect_no_body(self) -> None:
        self.no_body = True


class Http2UpstreamConnection(UpstreamConnection):
    """One HTTP/2 connection to an endpoint, one request stream at a time."""

    __slots__ = ("h2", "reading", "request", "send_lock", "stream_id", "trailers", "window")

    def __init__(self, io: ByteStream, pool: EndpointPool) -> None:
        super().__init__(io, pool)
        self.parser = _Events()  # type: ignore[assignment]
        self.h2 = h2.connection.H2Connection(config=_CONFIG)
        self.h2.initiate_connection()
        self.request = RequestParser(max_head_bytes=1 << 20, max_headers=1000)
        self.stream_id = 0
        self.trailers: list[tuple[bytes, bytes]] = []
        self.send_lock = trio.Lock()
        self.reading = False
        self.window = trio.Event()

    # -- the request ---------------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        try:
            self.request.feed(data)
        except DownstreamProtocolError as e:  # pragma: no cover - the core's own bytes
            raise UpstreamResetError(f"request not translatable to HTTP/2: {e}") from None
        events = self.request.events
        h2c = self.h2
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
                        h2c.send_headers(self.stream_id, fields, end_stream=True)
                    else:
                        h2c.end_stream(self.stream_id)
        except h2.exceptions.H2Error as e:
            raise UpstreamResetError(f"upstream {self.pool.address} stream closed: {e}") from None
        await self._flush()

    def _begin(self, head: RequestReceived) -> None:
        h2c = self.h2
        self.stream_id = stream_id = h2c.get_next_available_stream_id()
        self.trailers = []
        parser = self.parser
        assert isinstance(parser, _Events)
        parser.events.clear()
        parser.no_body = head.method == b"HEAD"
        fields = [
            (b":method", head.method),
            (b":scheme", b"http"),
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
        h2c.send_headers(stream_id, fields, end_stream=end)
        if end:
            # a body-less request: its HEADERS ended the stream, its MessageEnded is moot
            self.request.events.clear()

    async def _send_data(self, data: bytes) -> None:
        h2c = self.h2
        view = memoryview(data)
        while view:
            window = min(h2c.local_flow_control_window(self.stream_id), h2c.max_outbound_frame_size)
            if window <= 0:
                await self._flush()
                await self._wait_window()
                continue
            h2c.send_data(self.stream_id, view[:window].tobytes())
            view = view[window:]
            await self._flush()

    async def _wait_window(self) -> None:
        if self.reading:
            self.window = trio.Event()
            await self.window.wait()
        else:
            await self._receive()

    async def _flush(self) -> None:
        data = self.h2.data_to_send()
        if not data:
            return
        async with self.send_lock:
            try:
                await self.io.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
                raise UpstreamResetError(f"upstream {self.pool.address} reset: {e}") from None

    # -- the response --------------------------------------------------------------------

    async def read(self) -> None:
        self.reading = True
        try:
            await self._receive()
        finally:
            self.reading = False
            self.window.set()

    async def _receive(self) -> None:
        """Receive once and turn the frames into response events (``parser.events``)."""
        try:
            data = await self.io.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
            raise UpstreamResetError(f"upstream {self.pool.address} reset: {e}") from None
        parser = self.parser
        assert isinstance(parser, _Events)
        if not data:
            parser.broken = True
            if not parser.events:
                raise UpstreamClosedEarly(f"upstream {self.pool.address} closed without responding")
            raise UpstreamResetError(f"upstream {self.pool.address} closed mid-response")
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            parser.broken = True
            raise UpstreamProtocolError(f"upstream {self.pool.address}: {e}") from None
        for event in events:
            self._on_event(event, parser)
        self.window.set()
        await self._flush()

    def _on_event(self, event: h2.events.Event, parser: _Events) -> None:
        mine = getattr(event, "stream_id", None) == self.stream_id
        if isinstance(event, h2.events.ResponseReceived | h2.events.InformationalResponseReceived):
            if not mine:
                return
            head = response_head(event.headers or (), parser.no_body)
            if head is None:
                parser.broken = True
                raise UpstreamProtocolError(f"upstream {self.pool.address}: malformed head")
            parser.events.append(head)
            if head.status < 200:
                parser.events.append(MESSAGE_ENDED)  # an interim head is a message
        elif isinstance(event, h2.events.DataReceived):
            size = event.flow_controlled_length or 0
            if size and event.stream_id is not None:
                try:
                    self.h2.acknowledge_received_data(size, event.stream_id)
                except h2.exceptions.H2Error:
                    pass
            if mine and event.data:
                parser.events.append(DataReceived(event.data))
        elif isinstance(event, h2.events.TrailersReceived):
            if mine:
                self.trailers = list(event.headers or ())
        elif isinstance(event, h2.events.StreamEnded):
            if mine:
                trailers = self.trailers
                parser.events.append(MessageEnded(tuple(trailers)) if trailers else MESSAGE_ENDED)
        elif isinstance(event, h2.events.StreamReset):
            if mine:
                parser.broken = True
                raise UpstreamResetError(
                    f"upstream {self.pool.address} reset the stream ({event.error_code!r})"
                )
        elif isinstance(event, h2.events.ConnectionTerminated):
            parser.broken = True  # GOAWAY: no new stream on this connection
            last = event.last_stream_id
            if last is not None and self.stream_id > last:
                raise UpstreamResetError(f"upstream {self.pool.address} refused the stream")
