"""The HTTP/1.1 reverse proxy: one task per client connection, requests in order.

Per request, the path is: read the head (header timeout from its first byte), take the
current ``DataPlane`` snapshot, match a route, pick a cluster (weighted split) and an
endpoint (the cluster snapshot's balancer), borrow a pooled upstream connection, write
the rewritten head, then stream bodies both ways. Nothing here waits on an actor.

Bodies stream with backpressure and are never buffered whole: a request body is pumped
by a second task only when there is one (the common body-less request takes no
nursery), each piece is written before the next read, and a response piece is written
downstream before the next upstream read. The whole exchange runs under the route's
timeout; a failure before any response byte went downstream becomes a local reply
(502/503/504), after that the client connection is closed, as Envoy does.

Stats and access logs: the connection keeps the figures of the request it is on in its
own slots (``rq_*``: start, status, flags, bytes, upstream time, endpoint), increments
the listener's, cluster's and endpoint's stats as things happen (plain attribute
increments; see ``gateway.stats``), and ``_finish`` closes the request exactly once,
however it ended (response sent, local reply, timeout, client gone): the listener's
status class and ``downstream_rq_time``, and one access log entry handed to the
listener's ``AccessLog`` without formatting or I/O. An *attempt* (one try on one
endpoint) is charged to its cluster and endpoint when it ends: a response (its status
class, ``upstream_rq_time``), a failure (the status of the local reply it maps to), or
the route timeout (``upstream_rq_timeout``, 504).
"""

from __future__ import annotations

import logging
import random
from bisect import bisect_left
from collections import deque
from math import inf
from time import perf_counter

import trio

from gateway.cluster.snapshot import EndpointRuntime
from gateway.errors import (
    DownstreamProtocolError,
    GatewayError,
    NoHealthyUpstream,
    UpstreamConnectError,
    UpstreamError,
    UpstreamResetError,
)
from gateway.http1.events import (
    CHUNKED,
    LENGTH,
    NO_BODY,
    DataReceived,
    Event,
    MessageEnded,
    RequestReceived,
    ResponseReceived,
)
from gateway.http1.parse import RequestParser
from gateway.http1.serialize import (
    CHUNKED_LINE,
    HOP_BY_HOP,
    LAST_CHUNK,
    chunk,
    local_reply,
    response_head,
)
from gateway.listener.context import ListenerContext
from gateway.observe.stats import (
    BOUNDS_MS,
    ClusterStats,
    EndpointStats,
)
from gateway.observe.tracing import new_traceparent, valid_traceparent
from gateway.routing import RouteEntry
from gateway.upstream.pool import PoolExhausted, UpstreamConnection, UpstreamConnectTimeout

log = logging.getLogger("triogate.proxy")

READ_SIZE = 65536
VIA_LINE = b"via: 1.1 triogate\r\n"


#: methods a proxy may send again after the upstream closed without answering
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})


class UpstreamClosedEarly(UpstreamResetError):
    """The upstream closed the connection before sending any byte of a response."""


class DownstreamClosed(Exception):
    """The client went away; nothing more can be written to it."""


def _request_id(rng: random.Random) -> bytes:
    """A UUID4 string, as Envoy generates for ``x-request-id``."""
    h = rng.getrandbits(128).to_bytes(16, "big").hex().encode()
    # version 4, and the variant's two bits 10 (the 17th hex digit is one of 8, 9, a, b)
    return b"%s-%s-4%s-%c%s-%s" % (h[:8], h[8:12], h[13:16], _VARIANT[h[16] & 15], h[17:20], h[20:])


_VARIANT = b"89ab" * 4


_IDLE, _HEAD, _EXCHANGE = 0, 1, 2


class HttpConnection:
    """One client connection: reads requests, proxies them, writes responses.

    One cancel scope covers the connection, and ``deadline`` (a plain float) moves with
    the phase: the idle timeout between requests, the header timeout from a head's first
    byte, the route timeout during an exchange. The listener's timer task cancels the
    scope of a connection past its deadline (see ``ListenerContext.run_timers``): moving
    a trio deadline three times per request cost ~10% of the request rate. When the
    scope fires, ``phase`` says which timeout it was; a fired scope is replaced only if
    the connection goes on.
    """

    __slots__ = (
        "_keep_after_local",
        "client_ip",
        "ctx",
        "deadline",
        "head_sent",
        "parser",
        "phase",
        "request_id",
        "rq_bytes_in",
        "rq_bytes_out",
        "rq_cluster",
        "rq_cs",
        "rq_flags",
        "rq_head",
        "rq_host",
        "rq_start",
        "rq_status",
        "rq_traceparent",
        "rq_upstream_ms",
        "scope",
        "stream",
    )

    # set by _begin for every request (declared here for the type checker)
    rq_head: RequestReceived | None
    rq_start: float
    rq_status: int
    rq_flags: str
    rq_cluster: bytes
    rq_host: bytes
    rq_upstream_ms: float
    rq_bytes_in: int
    rq_bytes_out: int
    rq_traceparent: bytes
    request_id: bytes
    head_sent: bool

    def __init__(self, stream: trio.abc.Stream, ctx: ListenerContext, client_ip: bytes) -> None:
        self.stream = stream
        self.ctx = ctx
        self.client_ip = client_ip
        cfg = ctx.config
        self.parser = RequestParser(
            max_head_bytes=cfg.max_request_headers_kb * 1024,
            max_headers=cfg.max_request_headers_count,
        )
        self.phase = _IDLE
        self.scope = trio.CancelScope()
        self.deadline = inf
        self._keep_after_local = False
        #: the cluster whose first attempt answered: _finish charges it the request's time
        self.rq_cs: ClusterStats | None = None
        self._begin(None)

    async def serve(self) -> None:
        """Serve requests until the client closes, errs, times out or the listener drains."""
        self.ctx.connections.add(self)
        try:
            while await self._serve_until_timeout():
                pass
        except DownstreamProtocolError as e:
            self.ctx.stats.downstream_cx_protocol_error += 1
            if self.rq_head is None:
                self._begin(NO_REQUEST)  # a malformed head is a request answered 400
            self.rq_flags = _add_flag(self.rq_flags, "DPE")
            if not self.head_sent:
                self.rq_status = e.status_hint
            await self._send_quietly(local_reply(e.status_hint, e.reason, close=True))
        except DownstreamClosed:
            if self.rq_head is not None:
                self.rq_flags = _add_flag(self.rq_flags, "DC")
                if not self.head_sent:
                    self.rq_status = 0
        except BaseException:  # cancelled: a drain's grace ran out, or the gateway stops
            if self.rq_head is not None and not self.head_sent:
                self.rq_status = 0
            raise
        finally:
            self._finish()
            self.ctx.idle.discard(self)
            self.ctx.connections.discard(self)
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await self.stream.aclose()

    async def _serve_until_timeout(self) -> bool:
        """Serve requests under one scope; True if a timeout fired and the connection goes on."""
        self.scope = scope = trio.CancelScope()
        with scope:
            while not self.ctx.draining:
                head = await self._read_head()
                if head is None or not await self._handle(head):
                    return False
            return False
        if self.phase == _HEAD:
            self._begin(NO_REQUEST)
            self.ctx.stats.downstream_rq_header_timeout += 1
            self.rq_status = 408
            await self._send_quietly(local_reply(408, "request headers timed out", close=True))
            self._finish()
            return False
        if self.phase == _EXCHANGE and self.rq_head is not None:
            self.rq_flags = _add_flag(self.rq_flags, "UT")
            keep = False
            if not self.head_sent:
                keep = await self._local(504, "upstream request timed out")
            self._finish()
            return keep
        return False  # idle timeout, drain, or a timeout after the response began

    def cancel_if_idle(self) -> None:
        """Called on drain: a connection waiting for its next request closes now."""
        if self.phase == _IDLE:
            self.scope.cancel()

    async def _send(self, data: bytes) -> None:
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise DownstreamClosed from None

    async def _send_quietly(self, data: bytes) -> None:
        try:
            with trio.move_on_after(1):
                await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def _receive(self) -> bytes:
        try:
            # sockets (and SSLStream) return bytes; the Stream ABC also allows bytearray
            return await self.stream.receive_some(READ_SIZE)  # type: ignore[return-value]
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise DownstreamClosed from None

    async def _read_head(self) -> RequestReceived | None:
        """The next request's head; None when the client closed cleanly."""
        parser = self.parser
        events = parser.events
        if not events:
            cfg = self.ctx.config
            self.phase = _IDLE
            self.deadline = self.ctx.now + cfg.idle_timeout
            idle = self.ctx.idle
            idle.add(self)
            try:
                data = await self._receive()
            finally:
                idle.discard(self)
            self.phase = _HEAD
            # from the first byte on, the whole head must come within header_timeout
            if data:
                parser.feed(data)
            if not events:
                self.deadline = self.ctx.now + cfg.header_timeout
                while not events:
                    if not data:
                        parser.feed_eof()
                        return None
                    data = await self._receive()
                    if data:
                        parser.feed(data)
        return _take_head(events)

    # -- one request --------------------------------------------------------------------

    def _begin(self, head: RequestReceived | None) -> None:
        """A request starts (None: none yet): clear the figures of the previous one.

        For a new connection and a request without a valid head (400, 408); ``_handle``,
        the hot path, inlines the part of it a routed request needs: keep the two in step.
        """
        #: the request in progress (None between requests), and its figures so far
        self.rq_head = head
        self.rq_start = perf_counter()
        self.rq_status = 0
        self.rq_flags = ""
        #: the upstream cluster and host as JSON strings (``null`` when none), for the log
        self.rq_cluster = b"null"
        self.rq_host = b"null"
        self.rq_upstream_ms = -1.0
        self.rq_bytes_in = 0
        self.rq_bytes_out = 0
        #: the traceparent sent upstream; b"" when none (or an invalid one passed on)
        self.rq_traceparent = b""
        self.request_id = b""
        #: whether any byte of the current response has gone to the client
        self.head_sent = False

    def _finish(self) -> None:
        """The request in progress is over: its status class, its time, its log entry."""
        head = self.rq_head
        if head is None:
            return
        self.rq_head = None
        ctx = self.ctx
        stats = ctx.stats
        status = self.rq_status
        slot = status // 100  # status 0 (no response) lands in slot 0: not a class
        stats.downstream_rq_xx[slot] += 1
        start = self.rq_start
        ms = (perf_counter() - start) * 1000.0
        bucket = bisect_left(BOUNDS_MS, ms)
        hist = stats.downstream_rq_time  # Histogram.record, inlined
        hist.counts[bucket] += 1
        hist.sum += ms
        cs = self.rq_cs
        if cs is not None:
            # the first attempt answered: it started with the request and ended with it
            # (nothing awaits in between), so its figures are the request's
            self.rq_cs = None
            cs.upstream_rq_xx[slot] += 1
            hist = cs.upstream_rq_time
            hist.counts[bucket] += 1
            hist.sum += ms
            self.rq_upstream_ms = ms
        access_log = ctx.access_log
        if access_log.enabled:
            access_log.record(self, head, status, ms)

    async def _handle(self, head: RequestReceived) -> bool:
        """Proxy one request; True if the connection may serve another."""
        ctx = self.ctx
        # _begin(head), inlined; what it leaves out is set on every path before _finish
        # reads it: rq_cluster, rq_host, rq_traceparent and request_id below, rq_status
        # with the response (or 0 in serve() when none was sent), rq_bytes_in by the body
        # pump (and read only for requests with a body)
        self.rq_head = head
        self.rq_start = perf_counter()
        self.rq_flags = ""
        self.rq_upstream_ms = -1.0
        self.rq_bytes_out = 0
        self.head_sent = False
        dp = ctx.dataplane.current
        entry = dp.routes[ctx.name].match(head.host, head.target)
        keep_alive = head.keep_alive and not ctx.draining
        # after a local reply, a request body we did not read would be taken for the
        # next request: keep the connection only for body-less requests
        self._keep_after_local = keep_alive and head.framing == NO_BODY
        if entry is None:
            self.rq_flags = "NR"
            self.rq_cluster = self.rq_host = b"null"
            self.rq_traceparent = b""
            self.request_id = _given_request_id(head) or _request_id(ctx.rng)
            keep = await self._local(404, f"no route for {head.target.decode('latin-1')}")
            self._finish()
            return keep
        name = entry.pick_cluster(ctx.rng)
        handle = dp.clusters.get(name)
        if handle is None:  # pragma: no cover - validation forbids routes to unknown clusters
            self.rq_cluster = self.rq_host = b"null"
            self.rq_traceparent = self.request_id = b""
            keep = await self._local(503, "cluster not found")
            self._finish()
            return keep
        cs = ctx.cluster_stats.get(name) or ctx.registry.cluster(name)
        self.rq_cluster = cs.quoted
        up_head = self._upstream_head(head)
        route = entry.route
        attempts = 1 + route.retry.attempts if head.framing == NO_BODY else 1
        self.phase = _EXCHANGE
        self.deadline = ctx.now + route.timeout if route.timeout > 0 else inf
        error: GatewayError | None = None
        snapshot = handle.snapshot
        affinity = (
            entry.hash_key(head.headers, self.client_ip)
            if snapshot.uses_hash and route.hash_policy
            else None
        )
        attempt = 0
        for attempt in range(attempts):
            endpoint = handle.snapshot.pick(ctx.now, affinity)
            if endpoint is None:
                cs.upstream_cx_none_healthy += 1
                if not attempt:
                    self.rq_host = b"null"
                error = NoHealthyUpstream(f"no healthy endpoint in cluster {handle.name!r}")
                break
            if attempt:
                cs.upstream_rq_retry += 1
            # the first attempt starts with the request (routing takes microseconds)
            start = perf_counter() if attempt else self.rq_start
            try:
                keep = await self._exchange(head, up_head, endpoint, keep_alive, cs, start)
            except UpstreamError as e:
                error = e
                if self.head_sent or not _retriable(entry, e, attempt, attempts):
                    break
            else:
                self._finish()
                return keep
        assert error is not None
        flags = error.flag
        if attempt and attempt + 1 == attempts and _retry_on(entry, error):
            flags += ",URX"  # Envoy's: the last try failed the way retries are for
        self.rq_flags = flags
        if self.head_sent:
            log.info("closing client connection after upstream failure mid-response: %s", error)
            self._finish()
            return False
        keep = await self._local(error.status_hint, str(error))
        self._finish()
        return keep

    async def _local(self, status: int, text: str) -> bool:
        keep = self._keep_after_local
        reply = local_reply(status, text, close=not keep)
        self.rq_status = status
        self.rq_bytes_out = len(text.encode()) + 1  # the body: the text and a newline
        await self._send(reply)
        return keep

    def _upstream_head(self, head: RequestReceived) -> bytes:
        """The request head for the upstream: end-to-end headers plus the proxy's own."""
        parts = [head.method, b" ", head.target, b" HTTP/1.1\r\n"]
        forwarded_for = b""
        request_id = b""
        trace: list[tuple[bytes, bytes]] | None = None
        connection = head.connection
        special = _SPECIAL
        for name, value in head.headers:
            n = name.lower()
            if n in connection:
                continue
            kind = special.get(n)
            if kind is None:
                parts += (name, b": ", value, b"\r\n")
            elif kind == _XFF:
                forwarded_for = forwarded_for + b", " + value if forwarded_for else value
            elif kind == _REQUEST_ID:
                request_id = value
                parts += (name, b": ", value, b"\r\n")
            elif kind == _TRACE:
                if trace is None:
                    trace = []
                trace.append((name, value))
            # else hop-by-hop, or x-forwarded-proto (replaced: this hop's scheme)
        ip = self.client_ip
        parts += (
            b"x-forwarded-for: ",
            forwarded_for + b", " + ip if forwarded_for else ip,
            b"\r\n",
        )
        ctx = self.ctx
        parts += (b"x-forwarded-proto: ", ctx.scheme, b"\r\n")
        own_id = not request_id
        if own_id:
            request_id = _request_id(ctx.rng)
            parts += (b"x-request-id: ", request_id, b"\r\n")
        self.request_id = request_id
        if trace is None and not ctx.start_traceparent:
            self.rq_traceparent = b""  # the common case: nothing to pass on or start
        else:
            self.rq_traceparent = self._trace_context(parts, trace, request_id, own_id)
        parts.append(b"via: 1.1 triogate\r\n")
        if head.framing == CHUNKED:
            parts.append(CHUNKED_LINE)
        parts.append(b"\r\n")
        return b"".join(parts)

    def _trace_context(
        self,
        parts: list[bytes],
        trace: list[tuple[bytes, bytes]] | None,
        request_id: bytes,
        own_id: bool,
    ) -> bytes:
        """Append the trace context headers; returns the ``traceparent`` to log (or b"")."""
        ctx = self.ctx
        if trace is not None:
            parents = [v for n, v in trace if n.lower() == b"traceparent"]
            valid = len(parents) == 1 and valid_traceparent(parents[0])
            if valid or not ctx.start_traceparent:  # passed on untouched
                for name, value in trace:
                    parts += (name, b": ", value, b"\r\n")
                # logged only when valid: the log's writer never escapes it
                return parents[0] if valid else b""
        # none, or an invalid one: a new trace, and its tracestate (if any) dropped; a
        # trace started with our own request id takes it as its trace id
        trace_id = request_id.replace(b"-", b"") if own_id else None
        traceparent = new_traceparent(ctx.rng, ctx.traceparent_sampled, trace_id)
        parts += (b"traceparent: ", traceparent, b"\r\n")
        return traceparent

    # -- one attempt --------------------------------------------------------------------

    async def _exchange(
        self,
        head: RequestReceived,
        up_head: bytes,
        endpoint: EndpointRuntime,
        keep_alive: bool,
        cs: ClusterStats,
        start: float,
    ) -> bool:
        """One try against one endpoint; returns whether the client connection stays open.

        The attempt is charged to ``cs`` and the endpoint here, exactly once: when its
        response is complete (status class, ``upstream_rq_time`` from ``start``), on an
        ``UpstreamError`` (the status of the local reply it maps to), or when the route
        timeout (this connection's scope) cancels it (504). An attempt cut short by the
        client going away is counted in slot 0 of ``upstream_rq_xx`` (no response).
        """
        pool = endpoint.pool
        key = endpoint.key
        es = cs.endpoints.get(key) or cs.endpoint(key)
        self.rq_host = es.quoted
        # in flight from the pick on, connect included: least_request must see a request
        # that is still opening its connection (Envoy counts pending requests too)
        endpoint.active += 1
        try:
            conn, reused = await pool.acquire()
        except UpstreamConnectError as e:
            endpoint.active -= 1
            _charge_failure(cs, es, e)
            raise
        except BaseException:
            endpoint.active -= 1
            _charge_abort(cs, es, self.scope.cancel_called)
            raise
        if not reused:
            cs.upstream_cx_total += 1
            es.cx_total += 1
        reusable = False
        try:
            if head.framing == NO_BODY:
                try:
                    await conn.send(up_head)
                    reusable, keep_alive = await self._relay_response(conn, head, keep_alive)
                except UpstreamClosedEarly:
                    if not reused or head.method not in IDEMPOTENT:
                        raise
                    # a pooled connection the upstream closed while it was idle (the race
                    # every keep-alive client has): the request was not taken, so one fresh
                    # connection gets it, as browsers and Go's transport do
                    pool.release(conn, False)
                    conn, reused = await pool.acquire()
                    if not reused:
                        cs.upstream_cx_total += 1
                        es.cx_total += 1
                    await conn.send(up_head)
                    reusable, keep_alive = await self._relay_response(conn, head, keep_alive)
            else:
                keep_alive, reusable = await self._exchange_with_body(
                    head, up_head, conn, keep_alive
                )
            # the response is complete: charge the attempt
            status = self.rq_status
            es.rq_total += 1
            if status >= 500:
                es.rq_error += 1
            if start == self.rq_start:
                self.rq_cs = cs  # the first attempt: _finish charges it, with one clock read
            else:
                cs.upstream_rq_xx[status // 100] += 1
                ms = (perf_counter() - start) * 1000.0
                cs.upstream_rq_time.record(ms)
                self.rq_upstream_ms = ms
            return keep_alive
        except UpstreamError as e:
            _charge_failure(cs, es, e)
            raise
        except BaseException:
            _charge_abort(cs, es, self.scope.cancel_called)
            raise
        finally:
            endpoint.active -= 1
            pool.release(conn, reusable)

    async def _exchange_with_body(
        self,
        head: RequestReceived,
        up_head: bytes,
        conn: UpstreamConnection,
        keep_alive: bool,
    ) -> tuple[bool, bool]:
        """The body goes up while the response comes down (an upstream may answer early).

        Returns (client keep-alive, upstream reusable).
        """
        body = _BodyPump(self, conn, head.framing)
        relay_error: Exception | None = None
        reusable = False
        async with trio.open_nursery() as nursery:
            nursery.start_soon(body.run, up_head, nursery.cancel_scope)
            try:
                reusable, keep_alive = await self._relay_response(conn, head, keep_alive)
            except Exception as e:  # kept out of the nursery: callers see it unwrapped
                relay_error = e
                nursery.cancel_scope.cancel()
            else:
                if not body.done:
                    # the upstream answered before taking the whole body (413, 401...):
                    # neither connection is in a known state for another request
                    nursery.cancel_scope.cancel()
                    reusable = keep_alive = False
        if body.failed is not None:
            if self.head_sent:
                raise DownstreamClosed from body.failed
            raise body.failed
        if relay_error is not None:
            raise relay_error
        return keep_alive, reusable

    async def _relay_response(
        self,
        conn: UpstreamConnection,
        head: RequestReceived,
        keep_alive: bool,
    ) -> tuple[bool, bool]:
        """Stream the upstream's response down; returns (upstream reusable, client keep-alive)."""
        parser = conn.parser
        events = parser.events
        if head.method == b"HEAD":
            parser.expect_no_body()
        http10_client = head.version == b"1.0"
        # the head, after any 1xx interim responses
        while True:
            resp = await _next_event(conn)
            if not isinstance(resp, ResponseReceived):
                raise UpstreamResetError("upstream sent a body without a head")
            if resp.status >= 200:
                break
            await _next_event(conn)  # the 1xx's MessageEnded
            if resp.status != 101 and not http10_client:
                await self._send(
                    response_head(resp.status, resp.reason, resp.headers, resp.connection, b"")
                )
        status = resp.status
        self.rq_status = status
        rechunk = False
        if resp.framing == LENGTH or resp.framing == NO_BODY:
            extra = b""
        elif http10_client:
            extra = b""
            keep_alive = False  # close-delimited for an HTTP/1.0 client
        else:
            extra = CHUNKED_LINE
            rechunk = True
        if http10_client and keep_alive:
            extra += b"connection: keep-alive\r\n"
        elif not keep_alive:
            extra += b"connection: close\r\n"
        out = [response_head(status, resp.reason, resp.headers, resp.connection, VIA_LINE + extra)]
        # send the head together with whatever of the body has already arrived
        done = False
        while True:
            while events:
                ev = events.popleft()
                if isinstance(ev, DataReceived):
                    data = ev.data
                    self.rq_bytes_out += len(data)
                    out.append(chunk(data) if rechunk else data)
                else:
                    done = True
                    if rechunk:
                        out.append(LAST_CHUNK)
                    break
            if out:
                await self._send(b"".join(out) if len(out) > 1 else out[0])
                self.head_sent = True
                out = []
            if done:
                break
            data = await conn.receive()
            if data:
                parser.feed(data)
            else:
                parser.feed_eof()
        # llhttp's keep_alive already accounts for "Connection: close" and HTTP/1.0
        reusable = resp.keep_alive and not parser.broken
        return reusable, keep_alive


#: what stands in for the head of a request that never had a valid one (400, 408)
NO_REQUEST = RequestReceived(
    method=b"-",
    target=b"-",
    version=b"1.1",
    headers=[],
    keep_alive=False,
    framing=NO_BODY,
    content_length=0,
    host=b"",
    head_size=0,
)

# request headers the proxy treats specially, by lower-case name
_HOP, _XFF, _XFP, _REQUEST_ID, _TRACE = range(5)
_SPECIAL: dict[bytes, int] = {
    **dict.fromkeys(HOP_BY_HOP, _HOP),
    b"x-forwarded-for": _XFF,
    b"x-forwarded-proto": _XFP,
    b"x-request-id": _REQUEST_ID,
    b"traceparent": _TRACE,
    b"tracestate": _TRACE,
}


def _charge_failure(cs: ClusterStats, es: EndpointStats, error: UpstreamError) -> None:
    """An attempt failed with ``error``: the status class of its local reply, and why."""
    cs.upstream_rq_xx[error.status_hint // 100] += 1
    if isinstance(error, PoolExhausted):
        cs.upstream_cx_overflow += 1  # the gateway's limit, not the endpoint's failure
        return
    es.rq_total += 1
    es.rq_error += 1
    if isinstance(error, UpstreamConnectError):
        cs.upstream_cx_total += 1
        cs.upstream_cx_connect_fail += 1
        es.cx_total += 1
        es.cx_connect_fail += 1
        if isinstance(error, UpstreamConnectTimeout):
            cs.upstream_cx_connect_timeout += 1


def _charge_abort(cs: ClusterStats, es: EndpointStats, timed_out: bool) -> None:
    """An attempt was cut short: by the route timeout (a 504, as Envoy charges it), or by
    the client going away or a drain (slot 0: no response, not the endpoint's fault)."""
    if not timed_out:
        cs.upstream_rq_xx[0] += 1
        return
    cs.upstream_rq_timeout += 1
    cs.upstream_rq_xx[5] += 1
    es.rq_total += 1
    es.rq_error += 1
    es.rq_timeout += 1


def _add_flag(flags: str, flag: str) -> str:
    return f"{flags},{flag}" if flags else flag


def _given_request_id(head: RequestReceived) -> bytes:
    for name, value in head.headers:
        if name.lower() == b"x-request-id":
            return value
    return b""


def _take_head(events: deque[Event]) -> RequestReceived:
    """Pop a request head; a body-less request's end (same parse step) goes with it."""
    head = events.popleft()
    assert isinstance(head, RequestReceived)
    if head.framing == NO_BODY:
        end = events.popleft()
        assert isinstance(end, MessageEnded)
    return head


async def _next_event(conn: UpstreamConnection) -> Event:
    events = conn.parser.events
    while not events:
        data = await conn.receive()
        if data:
            conn.parser.feed(data)
        else:
            conn.parser.feed_eof()
            if not events:
                raise UpstreamClosedEarly(f"upstream {conn.pool.address} closed without responding")
    return events.popleft()


def _retry_on(entry: RouteEntry, error: GatewayError) -> bool:
    """Whether the route's ``retry_on`` covers ``error``."""
    on = entry.route.retry.retry_on
    if isinstance(error, UpstreamConnectError):
        return "connect-failure" in on or "gateway-error" in on
    if isinstance(error, UpstreamResetError):
        return "reset" in on or "gateway-error" in on
    return False


def _retriable(entry: RouteEntry, error: GatewayError, attempt: int, attempts: int) -> bool:
    return attempt + 1 < attempts and _retry_on(entry, error)


class _BodyPump:
    """Copies a request body from the client to the upstream, piece by piece."""

    __slots__ = ("conn", "done", "failed", "framing", "http")

    def __init__(self, http: HttpConnection, conn: UpstreamConnection, framing: int) -> None:
        http.rq_bytes_in = 0
        self.http = http
        self.conn = conn
        self.framing = framing
        self.done = False
        self.failed: BaseException | None = None

    async def run(self, up_head: bytes, scope: trio.CancelScope) -> None:
        chunked = self.framing == CHUNKED
        http = self.http
        events: deque[Event] = http.parser.events
        out = [up_head]
        try:
            while True:
                while events:
                    ev = events.popleft()
                    if isinstance(ev, DataReceived):
                        http.rq_bytes_in += len(ev.data)
                        out.append(chunk(ev.data) if chunked else ev.data)
                        continue
                    assert isinstance(ev, MessageEnded)
                    if chunked:
                        out.append(LAST_CHUNK)
                    await self.conn.send(b"".join(out))
                    self.done = True
                    return
                if out:
                    await self.conn.send(b"".join(out))
                    out = []
                data = await http._receive()
                if not data:
                    raise DownstreamClosed
                http.parser.feed(data)
        except UpstreamResetError:
            # the upstream stopped reading; its response (or the reset) tells the rest
            return
        except (DownstreamClosed, DownstreamProtocolError) as e:
            # the client broke off or sent a malformed body: the exchange is over
            self.failed = e
            scope.cancel()
