"""The HTTP/1.1 reverse proxy: one task per client connection, requests in order.

Per request, the path is: read the head (header timeout from its first byte), take the
current ``DataPlane`` snapshot, match a route, pick a cluster (the route's weighted
split, ``policies.split``) and, from that cluster's snapshot (read once per request), an
endpoint (its balancer), borrow a pooled upstream connection, write the rewritten head
(``gateway.proxy.head``), then stream bodies both ways. Nothing here waits on an actor.

Bodies stream with backpressure and are never buffered whole: a request body is pumped
by a second task only when there is one (the common body-less request takes no
nursery), each piece is written before the next read, and a response piece is written
downstream before the next upstream read. A chunked body's trailers follow its last
chunk (a response's only to an HTTP/1.1 client, which gets it re-chunked). The whole
exchange runs under the route's timeout; a failure before any response byte went
downstream becomes a local reply (502/503/504), after that the client connection is
closed, as Envoy does. Whether a failed or badly answered attempt is tried again is the
route's ``policies.retry.RetryRules``.

Stats and access logs: each request's figures live in its ``RequestRecord``
(``gateway.observe.record``: start, status, flags, bytes, upstream time, cluster and
host), and ``_finish`` closes the request exactly once, however it ended (response
sent, local reply, timeout, client gone): the listener's status class and
``downstream_rq_time``, and the record handed to the listener's ``AccessLog`` without
formatting or I/O. An *attempt* (one try on one endpoint) is charged to its cluster and
endpoint when it ends, by ``gateway.proxy.outcome.charge_attempt``.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections import deque
from collections.abc import Coroutine
from math import inf
from time import perf_counter
from typing import Any

import trio

from gateway.cluster.breaker import ClusterBreaker
from gateway.cluster.snapshot import EndpointRuntime, EndpointState
from gateway.errors import (
    CircuitBreakerOverflow,
    DownstreamClosed,
    DownstreamProtocolError,
    FilterError,
    FilterReplied,
    GatewayError,
    NoHealthyUpstream,
    PoolExhausted,
    RetriableResponse,
    UpstreamClosedEarly,
    UpstreamError,
    UpstreamPerTryTimeout,
    UpstreamResetError,
    UpstreamStreamRefused,
    UpstreamTimeoutError,
)
from gateway.faults.inject import apply_fault, choose_fault
from gateway.filters.api import LocalReply
from gateway.filters.chain import FAULTS, RequestFilters
from gateway.http1.events import (
    CHUNKED,
    LENGTH,
    NO_BODY,
    DataReceived,
    Event,
    Headers,
    MessageEnded,
    RequestReceived,
    ResponseReceived,
)
from gateway.http1.parse import RequestParser
from gateway.http1.serialize import (
    CHUNKED_LINE,
    chunk,
    last_chunk,
    local_reply,
    reply_with_body,
    response_head,
)
from gateway.listener.context import ListenerContext
from gateway.observe.record import RequestRecord
from gateway.observe.stats import BOUNDS_MS, ClusterStats
from gateway.proxy.grpc import retried
from gateway.proxy.head import VIA_LINE, given_request_id, request_id, upstream_head
from gateway.proxy.outcome import charge_attempt, charge_opened, failure_of
from gateway.tls import ClientCertHeader
from gateway.upstream.pool import EndpointPool, UpstreamConnection
from policies.breaker import Permit
from policies.grpc import grpc_to_http
from policies.retry import RETRY_200, Decision, Failure, RetryRules, retry_stale

log = logging.getLogger("triogate.proxy")

#: the local replies of a circuit breaker: a threshold reached (Envoy's header), or the
#: classic breaker open
_OVERLOADED: Headers = [(b"x-envoy-overloaded", b"true")]
_BREAKER_OPEN: Headers = [(b"x-triogate-breaker", b"open")]


async def _open_new(
    pool: EndpointPool, cluster_stats: ClusterStats, members: tuple[EndpointState, ...]
) -> UpstreamConnection:
    """A new connection from ``pool``, counted as pending while it connects, unless the
    cluster's ``circuit_breakers.max_pending_requests`` are waiting already, or its
    ``max_connections`` are open over all its endpoints (``members``: counted only when
    a connection is to be opened, never for a pooled one)."""
    thresholds = cluster_stats.thresholds
    if sum(m.runtime.pool.open for m in members) >= thresholds.max_connections:
        raise PoolExhausted(f"cluster {cluster_stats.name!r} at circuit_breakers.max_connections")
    if cluster_stats.rq_connecting >= thresholds.max_pending_requests:
        cluster_stats.upstream_rq_pending_overflow += 1
        raise CircuitBreakerOverflow(
            f"cluster {cluster_stats.name!r} at circuit_breakers.max_pending_requests"
        )
    cluster_stats.rq_connecting += 1
    try:
        return await pool.open_new()
    finally:
        cluster_stats.rq_connecting -= 1


READ_SIZE = 65536

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
        "_figures",
        "body_events",
        "breaker_result",
        "client_cert",
        "client_ip",
        "ctx",
        "deadline",
        "filters",
        "keep_after_local",
        "parser",
        "permit",
        "phase",
        "record",
        "scope",
        "stream",
        "try_scope",
    )

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
        #: a TLS connection's ``x-forwarded-client-cert`` rule; None in cleartext
        self.client_cert = client_cert
        cfg = ctx.config
        self.parser = RequestParser(
            max_head_bytes=cfg.max_request_headers_kb * 1024,
            max_headers=cfg.max_request_headers_count,
        )
        #: where a request body's pieces and end arrive (``_more_body`` adds to it)
        self.body_events: deque[Event] = self.parser.events
        self.phase = _IDLE
        self.scope = trio.CancelScope()
        self.deadline = inf
        #: this connection's record, begun again for each request
        self._figures = RequestRecord(NO_REQUEST, 0.0)
        #: the request in progress: ``_figures`` while there is one, None between requests
        self.record: RequestRecord | None = None
        #: whether the connection may serve another request after a local reply
        self.keep_after_local = False
        #: the cluster's breaker and its permit for the request in progress (only for a
        #: cluster with ``breaker``), and what to record when it ends if not its status
        self.permit: tuple[ClusterBreaker, Permit] | None = None
        self.breaker_result: int | Failure | None = None
        #: the cancel scope of the try in progress under a ``per_try_timeout``
        self.try_scope: trio.CancelScope | None = None
        #: the HTTP filters of the request in progress; None without any
        self.filters: RequestFilters | None = None

    async def serve(self, initial: bytes = b"") -> None:
        """Serve requests until the client closes, errs, times out or the listener drains.

        ``initial``: bytes already read from the client (to tell HTTP/2 from HTTP/1.1).
        """
        self.ctx.connections.add(self)
        try:
            # a head begun in ``initial``: the rest of it within the header timeout
            begun = False
            if initial:
                self.parser.feed(initial)
                begun = not self.parser.events
            # (the request loop runs in this frame, not one below: every frame between
            # the task and the socket is resumed at each of a request's two checkpoints)
            while True:
                self.scope = scope = trio.CancelScope()
                with scope:
                    while not self.ctx.draining:
                        head = await self._read_head(begun)
                        begun = False
                        if head is None or not await self._handle(head):
                            break
                if not scope.cancelled_caught or not await self._after_timeout():
                    break
        except DownstreamProtocolError as e:
            self.ctx.stats.downstream_cx_protocol_error += 1
            record = self.record
            if record is None:  # a malformed head is a request answered 400
                self.record = record = self._figures
                record.begin(NO_REQUEST, perf_counter())
            record.add_flag("DPE")
            if not record.head_sent:
                record.status = e.status_hint
            await self._send_quietly(local_reply(e.status_hint, e.reason, close=True))
        except DownstreamClosed:
            self._client_gone()
        except BaseException:  # cancelled: a drain's grace ran out, or the gateway stops
            self._cut_short()
            raise
        finally:
            self._finish()
            self.ctx.connections.discard(self)
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await self.stream.aclose()

    def _client_gone(self) -> None:
        """The client went away (or reset its stream) during the request in progress."""
        record = self.record
        if record is not None:
            record.add_flag("DC")
            if not record.head_sent:
                record.status = 0

    def _cut_short(self) -> None:
        """The request in progress was cancelled: no status unless one was sent."""
        record = self.record
        if record is not None and not record.head_sent:
            record.status = 0

    async def _more_body(self) -> None:
        """Wait for more of the request body in ``body_events``; ``DownstreamClosed``
        if the client closed first."""
        data = await self._receive()
        if not data:
            raise DownstreamClosed
        self.parser.feed(data)

    async def _after_timeout(self) -> bool:
        """The connection's scope fired; True if the connection goes on (under a new one)."""
        if self.phase == _HEAD:
            self.record = record = self._figures
            record.begin(NO_REQUEST, perf_counter())
            self.ctx.stats.downstream_rq_header_timeout += 1
            record.status = 408
            await self._send_quietly(local_reply(408, "request headers timed out", close=True))
            self._finish()
            return False
        current = self.record
        if self.phase == _EXCHANGE and current is not None:
            # the route timeout fired: the exchange was cancelled where it stood
            error = UpstreamTimeoutError("upstream request timed out")
            return await self._fail(current, error, error.flag)
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

    async def _read_head(self, begun: bool = False) -> RequestReceived | None:
        """The next request's head; None when the client closed cleanly. ``begun``: its
        first bytes were read already (its header timeout runs from now)."""
        parser = self.parser
        events = parser.events
        if not events:
            ctx = self.ctx
            if begun:
                self.phase = _HEAD
                self.deadline = ctx.now + ctx.config.header_timeout
            else:
                self.phase = _IDLE
                self.deadline = ctx.now + ctx.config.idle_timeout
            stream = self.stream
            while True:
                # (the stream itself, not ``_receive``: one coroutine less per request)
                try:
                    data = await stream.receive_some(READ_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    raise DownstreamClosed from None
                if not data:
                    parser.feed_eof()
                    return None
                first = self.phase == _IDLE
                self.phase = _HEAD
                parser.feed(data)  # type: ignore[arg-type]  # sockets (and SSLStream) give bytes
                if events:
                    break
                if first:
                    # from the first byte on, the whole head must come within header_timeout
                    self.deadline = ctx.now + ctx.config.header_timeout
        head = events.popleft()
        assert isinstance(head, RequestReceived)
        if head.framing == NO_BODY:
            events.popleft()  # a body-less request's end, from the same parse step
        return head

    # -- one request --------------------------------------------------------------------

    def _finish(self) -> None:
        """The request in progress is over: its status class, its time, its log entry."""
        record = self.record
        if record is None:
            return
        self.record = None
        ctx = self.ctx
        stats = ctx.stats
        status = record.status
        ms = (perf_counter() - record.start) * 1000.0
        record.duration_ms = ms
        stats.downstream_rq_xx[status // 100] += 1  # status 0 (no response): slot 0
        hist = stats.downstream_rq_time  # Histogram.record, inlined
        hist.counts[bisect_left(BOUNDS_MS, ms)] += 1
        hist.sum += ms
        answered = record.answered
        if answered is not None:
            # the first attempt answered: it started with the request and ended with it
            # (nothing awaits in between), so its time is the request's
            cluster_stats, endpoint_stats = answered
            charge_attempt(cluster_stats, endpoint_stats, status, ms)
            record.upstream_ms = ms
        held = self.permit
        if held is not None:
            self.permit = None
            result = self.breaker_result
            self.breaker_result = None
            held[0].record(held[1], status if result is None else result, ctx.now)
        watch = record.watch
        if watch is not None:
            watch.record(status, ms)
        access_log = ctx.access_log
        if access_log.enabled:
            access_log.record(record)
        filters = self.filters
        if filters is not None:  # the on_log hooks run in the listener's task
            self.filters = None
            ctx.filter_log.offer(filters, record)

    async def _handle(self, head: RequestReceived) -> bool:
        """Proxy one request; True if the connection may serve another."""
        ctx = self.ctx
        self.record = record = self._figures
        record.begin(head, perf_counter())
        client_cert = self.client_cert
        if client_cert is not None:  # TLS: settled before routes match on it
            client_cert.apply(head.headers)
        dp = ctx.dataplane.current
        listener = ctx.name
        entry = dp.routes[listener].match(head)
        keep_alive = head.keep_alive and not ctx.draining
        # after a local reply, a request body we did not read would be taken for the
        # next request: keep the connection only for body-less requests
        self.keep_after_local = keep_alive and head.framing == NO_BODY
        faults = dp.faults
        chains = dp.chains
        if chains:  # HTTP filters (gateway.filters.chain): off unless configured
            chain = chains.get(listener)
            if chain is not None:
                filters = chain.begin(entry, head, self.client_ip)
                if filters is not None:
                    self.filters = filters
                    try:
                        reply = await filters.request_headers(head, ctx.scheme)
                    except FilterError as e:
                        record.add_flag(e.flag)
                        record.request_id = given_request_id(head) or request_id(ctx.rng)
                        return await self._reply(record, e.status_hint, str(e))
                    if reply is not None:
                        record.request_id = given_request_id(head) or request_id(ctx.rng)
                        return await self._local_reply(record, reply)
                    if filters.rerouted:  # Envoy's clearRouteCache: the route again
                        entry = dp.routes[listener].match(head)
                    if filters.takes_request_body and head.framing != NO_BODY:
                        _rechunk_request(head)
        if entry is None:
            record.flags = "NR"
            record.request_id = given_request_id(head) or request_id(ctx.rng)
            return await self._reply(record, 404, f"no route for {head.target.decode('latin-1')}")
        name = (
            entry.split.pick(ctx.rng)
            if entry.split_key is None
            else entry.sticky_cluster(head.headers, ctx.rng)
        )
        handle = dp.clusters.get(name)
        if handle is None:  # pragma: no cover - validation forbids routes to unknown clusters
            return await self._reply(record, 503, "cluster not found")
        cluster_stats = ctx.cluster_stats.get(name) or ctx.registry.cluster(name)
        record.cluster = cluster_stats.quoted
        if entry.watch is not None:  # a rollout watches the route (gateway.control.rollouts)
            record.watch = entry.watch.get(name)
        # the faults filter, the chain's last (gateway.faults): off unless configured
        if faults is not None and FAULTS not in entry.route.disabled_filters:
            chosen = choose_fault(faults, ctx, entry, name, head)
            if chosen is not None:
                ended = await apply_fault(self, chosen, record)
                if ended is not None:
                    return ended
        guard = cluster_stats.breaker
        if guard is not None:  # the classic breaker: off unless configured
            permit = guard.allow(ctx.now)
            if permit is None:
                cluster_stats.breaker_rq_rejected += 1
                record.flags = "UO"
                record.request_id = given_request_id(head) or request_id(ctx.rng)
                return await self._reply(
                    record, 503, f"circuit breaker open for cluster {name!r}", _BREAKER_OPEN
                )
            self.permit = (guard, permit)
        up_head, record.request_id, record.traceparent = upstream_head(
            head,
            self.client_ip,
            ctx.scheme,
            ctx.rng,
            ctx.start_traceparent,
            ctx.traceparent_sampled,
        )
        route = entry.route
        rules = entry.retry
        self.phase = _EXCHANGE
        self.deadline = ctx.now + route.timeout if route.timeout > 0 else inf
        streamed = head.framing != NO_BODY
        tries = 1
        held = b""  # a body held for every try (framed as it goes upstream)
        if rules.tries > 1:  # a route that retries: can this request be sent again?
            if not streamed:
                tries = rules.tries
            elif self._may_hold_body(head, rules) and (
                self.filters is None or not self.filters.takes_request_body
            ):  # (a body the filters see streams: it is not held for retries)
                body = await self._hold_body(record, head, rules.buffer_limit)
                if body is not None:
                    held, streamed, tries = body, False, rules.tries
        mirror = route.mirror
        if mirror is not None:  # fire and forget: never waits (gateway.proxy.mirror)
            ctx.mirror.offer(mirror.percent, ctx.rng, up_head, held, head, mirror.cluster)
        snapshot = handle.snapshot  # the first try's; a retry reads the cluster's latest
        affinity = (
            entry.hash_key(head.headers, self.client_ip)
            if route.hash_policy and snapshot.uses_hash
            else None
        )
        per_try = rules.per_try_timeout
        error: GatewayError
        attempt = 0
        tried: list[str] = []  # the endpoints tried, by address
        retrying = False  # whether this request holds one of the cluster's retry slots
        try:
            while True:
                endpoint = snapshot.pick(ctx.now, affinity)
                if endpoint is not None:
                    if attempt:
                        endpoint = snapshot.another(endpoint, tried, ctx.now)
                    outcomes = cluster_stats.outcomes
                    if outcomes is not None and outcomes.suspects:
                        # at the outlier detector's threshold, its verdict not in yet
                        endpoint = snapshot.another(endpoint, outcomes.suspects, ctx.now)
                if endpoint is None:
                    cluster_stats.upstream_cx_none_healthy += 1
                    error = NoHealthyUpstream(f"no healthy endpoint in cluster {handle.name!r}")
                    flags = error.flag
                    break
                if attempt:
                    cluster_stats.upstream_rq_retry += 1
                # the first attempt starts with the request (routing takes microseconds)
                start = perf_counter() if attempt else record.start
                # a response with one of these statuses is retried, not relayed (for a
                # request with one try, nothing: no call for the common case)
                statuses = _NO_STATUSES
                if attempt + 1 < tries and (retrying or _retry_admitted(cluster_stats)):
                    statuses = rules.relay_statuses
                exchange = self._exchange(
                    record,
                    head,
                    # Envoy's attempt count, on every try of a route that retries
                    _with_attempt_count(up_head, attempt + 1) + held
                    if rules.tries > 1
                    else up_head,
                    streamed,
                    endpoint,
                    keep_alive,
                    cluster_stats,
                    snapshot.all_endpoints,
                    start,
                    statuses,
                )
                try:
                    keep = await (exchange if not per_try else self._per_try(per_try, exchange))
                except RetriableResponse:
                    pass  # dropped before any of it went downstream: the next try
                except FilterError as e:  # a filter failed or replied (body, response)
                    if isinstance(e, FilterReplied) and not record.head_sent:
                        return await self._local_reply(record, e.reply)  # type: ignore[arg-type]
                    error, flags = e, e.flag
                    break
                except UpstreamError as e:
                    error, flags = e, e.flag
                    if record.head_sent or isinstance(e, CircuitBreakerOverflow):
                        break
                    decision = rules.after_failure(failure_of(e), attempt, tries)
                    if decision is Decision.EXHAUSTED:
                        cluster_stats.upstream_rq_retry_limit_exceeded += 1
                        flags += ",URX"  # Envoy's: the last try failed the way retries are for
                        break
                    if decision is Decision.FINAL:
                        break
                    if not (retrying or _retry_admitted(cluster_stats)):
                        cluster_stats.upstream_rq_retry_overflow += 1
                        break
                else:
                    if (
                        attempt + 1 < tries
                        and statuses is _NO_STATUSES
                        and record.status in rules.statuses
                    ):  # a retry the cluster's threshold refused
                        cluster_stats.upstream_rq_retry_overflow += 1
                    if attempt:
                        decision = rules.after_response(record.status, attempt, tries)
                        if decision is Decision.EXHAUSTED:
                            cluster_stats.upstream_rq_retry_limit_exceeded += 1
                            record.add_flag("URX")
                        elif decision is Decision.FINAL:
                            cluster_stats.upstream_rq_retry_success += 1
                    self._finish()
                    return keep
                # try again: after a back-off, on another endpoint if there is one
                if not retrying:
                    retrying = True
                    cluster_stats.rq_retry_active += 1
                await trio.sleep(rules.backoff.delay(attempt, ctx.rng))
                tried.append(endpoint.key)
                snapshot = handle.snapshot
                attempt += 1
        finally:
            if retrying:
                cluster_stats.rq_retry_active -= 1
        return await self._fail(record, error, flags)

    @staticmethod
    def _may_hold_body(head: RequestReceived, rules: RetryRules) -> bool:
        """Whether to hold this request's body so that it can be retried: an idempotent
        method, a body that fits (a chunked one's size is known only at its end), and a
        client that is not waiting for ``100 Continue`` before it sends the body."""
        length = head.content_length if head.framing == LENGTH else None
        if not rules.may_hold_body(head.method, length):
            return False
        return not any(
            name.lower() == b"expect" and value.lower() == b"100-continue"
            for name, value in head.headers
        )

    async def _hold_body(
        self, record: RequestRecord, head: RequestReceived, limit: int
    ) -> bytes | None:
        """Read the whole request body if it is at most ``limit`` bytes, and return it
        framed as it goes upstream; None if it is larger, its pieces then left in the
        parser's events to be streamed (once) as any other body."""
        events = self.body_events
        seen = size = 0  # events looked at, and the body bytes among them
        while True:
            while seen < len(events):
                event = events[seen]
                if not isinstance(event, DataReceived):
                    break  # the body's end
                size += len(event.data)
                seen += 1
            if size > limit:
                return None
            if seen < len(events):
                break
            await self._more_body()
        chunked = head.framing == CHUNKED
        out: list[bytes] = []
        for _ in range(seen):
            event = events.popleft()
            assert isinstance(event, DataReceived)
            out.append(chunk(event.data) if chunked else event.data)
        end = events.popleft()
        assert isinstance(end, MessageEnded)
        if chunked:
            out.append(last_chunk(end.trailers))
        record.bytes_in += size
        return b"".join(out)

    async def _per_try(self, seconds: float, exchange: Coroutine[Any, Any, bool]) -> bool:
        """Run one try (``exchange``, not yet started) under the route's ``per_try_timeout``."""
        with trio.move_on_after(seconds) as scope:
            self.try_scope = scope
            try:
                return await exchange
            finally:
                self.try_scope = None
        raise UpstreamPerTryTimeout(f"no response within per_try_timeout ({seconds:g} s)")

    async def _fail(self, record: RequestRecord, error: GatewayError, flags: str) -> bool:
        """The request failed: a local reply if no response byte went out, else close."""
        record.add_flag(flags)
        overloaded = isinstance(error, CircuitBreakerOverflow | PoolExhausted)
        if self.permit is not None and isinstance(error, UpstreamError):
            # the breaker judges the upstream: the gateway's own limits say nothing of it
            self.breaker_result = 0 if overloaded else failure_of(error)
        if record.head_sent:
            log.info("closing client connection after upstream failure mid-response: %s", error)
            self._finish()
            return False
        return await self._reply(
            record, error.status_hint, str(error), _OVERLOADED if overloaded else None
        )

    async def _reply(
        self,
        record: RequestRecord,
        status: int,
        text: str,
        headers: Headers | None = None,
        grpc_status: int | None = None,
    ) -> bool:
        """End the request with a local reply; True if the connection may serve another.

        ``grpc_status``: a gRPC call's status, for a reply that sets it (a fault's abort;
        a gRPC call is an HTTP/2 stream, whose ``_reply`` answers in gRPC's terms).
        """
        keep = self.keep_after_local
        record.status = status
        record.bytes_out = len(text.encode()) + 1  # the body: the text and a newline
        await self._send(local_reply(status, text, close=not keep, extra_headers=headers))
        self._finish()
        return keep

    async def _local_reply(self, record: RequestRecord, reply: LocalReply) -> bool:
        """End the request with a filter's ``LocalReply``; True if the connection may
        serve another."""
        keep = self.keep_after_local
        body = reply.body_bytes()
        record.status = reply.status
        record.bytes_out = len(body)
        await self._send(reply_with_body(reply.status, body, reply.header_fields(), close=not keep))
        record.head_sent = True
        self._finish()
        return keep

    # -- one attempt --------------------------------------------------------------------

    async def _exchange(
        self,
        record: RequestRecord,
        head: RequestReceived,
        payload: bytes,
        streamed: bool,
        endpoint: EndpointRuntime,
        keep_alive: bool,
        cluster_stats: ClusterStats,
        members: tuple[EndpointState, ...],
        start: float,
        retry_statuses: frozenset[int],
    ) -> bool:
        """One try against one endpoint; returns whether the client connection stays open.

        ``payload`` is what goes upstream first: the rewritten head, and the whole body
        when one is held for retries; a ``streamed`` body follows from the client.

        The attempt is charged exactly once: when it fails here (an ``UpstreamError``, the
        route timeout cancelling it, the client going away), when its response is
        complete (here, or in ``_finish`` for the first attempt: it ends with the
        request). A response whose status is in ``retry_statuses`` is not relayed: it
        raises ``RetriableResponse``.
        """
        ctx = self.ctx
        pool = endpoint.pool
        key = endpoint.key
        endpoint_stats = cluster_stats.endpoints.get(key) or cluster_stats.endpoint(key)
        record.host = endpoint_stats.quoted
        if cluster_stats.rq_in_flight >= cluster_stats.thresholds.max_requests:
            cluster_stats.upstream_rq_pending_overflow += 1
            raise CircuitBreakerOverflow(
                f"cluster {cluster_stats.name!r} at circuit_breakers.max_requests"
            )
        # in flight from the pick on, connect included: least_request must see a request
        # that is still opening its connection (Envoy counts pending requests too)
        endpoint.active += 1
        cluster_stats.rq_in_flight += 1
        conn: UpstreamConnection | None = None
        reusable = False
        try:
            conn = pool.take_idle(ctx.now)
            reused = conn is not None
            if conn is None:
                conn = await _open_new(pool, cluster_stats, members)
                charge_opened(cluster_stats, endpoint_stats)
            if streamed:
                keep_alive, reusable = await self._exchange_with_body(
                    record, head, payload, conn, keep_alive
                )
            else:
                try:
                    await conn.send(payload)
                    keep_alive, reusable = await self._relay_response(
                        record, conn, head, keep_alive, retry_statuses
                    )
                except UpstreamClosedEarly as e:
                    refused = isinstance(e, UpstreamStreamRefused)  # (HTTP/2: never processed)
                    if not (refused or retry_stale(head.method, reused)):
                        raise
                    # a pooled connection the upstream closed while it was idle: the
                    # request was not taken, so one fresh connection gets it
                    pool.release(conn, False, ctx.now)
                    conn = pool.take_idle(ctx.now)
                    if conn is None:
                        conn = await _open_new(pool, cluster_stats, members)
                        charge_opened(cluster_stats, endpoint_stats)
                    await conn.send(payload)
                    keep_alive, reusable = await self._relay_response(
                        record, conn, head, keep_alive, retry_statuses
                    )
        except RetriableResponse as e:
            charge_attempt(cluster_stats, endpoint_stats, e.status, _ms_since(start))
            raise
        except UpstreamError as e:
            charge_attempt(cluster_stats, endpoint_stats, e)
            raise
        except BaseException:
            # cut short: by the try's or the route's timeout (a 504, as Envoy charges
            # it), or by the client going away or a drain (not the endpoint's fault)
            try_scope = self.try_scope
            if try_scope is not None and try_scope.cancel_called:
                cut: int | UpstreamError = UpstreamPerTryTimeout("per try timeout")
            elif self.scope.cancel_called:
                cut = UpstreamTimeoutError("route timeout")
            else:
                cut = 0
            charge_attempt(cluster_stats, endpoint_stats, cut)
            raise
        finally:
            endpoint.active -= 1
            cluster_stats.rq_in_flight -= 1
            if conn is not None:
                pool.release(conn, reusable, ctx.now)
        if start == record.start:
            record.answered = (cluster_stats, endpoint_stats)  # charged by _finish
        else:
            ms = _ms_since(start)
            charge_attempt(cluster_stats, endpoint_stats, record.status, ms)
            record.upstream_ms = ms
        return keep_alive

    async def _exchange_with_body(
        self,
        record: RequestRecord,
        head: RequestReceived,
        up_head: bytes,
        conn: UpstreamConnection,
        keep_alive: bool,
    ) -> tuple[bool, bool]:
        """The body goes up while the response comes down (an upstream may answer early).

        Returns (client keep-alive, upstream reusable), as ``_relay_response`` does.
        """
        body = _BodyPump(self, record, conn, head.framing)
        relay_error: Exception | None = None
        reusable = False
        async with trio.open_nursery() as nursery:
            nursery.start_soon(body.run, up_head, nursery.cancel_scope)
            try:
                keep_alive, reusable = await self._relay_response(
                    record, conn, head, keep_alive, _NO_STATUSES
                )
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
            if record.head_sent:
                raise DownstreamClosed from body.failed
            raise body.failed
        if relay_error is not None:
            raise relay_error
        return keep_alive, reusable

    async def _relay_response(
        self,
        record: RequestRecord,
        conn: UpstreamConnection,
        head: RequestReceived,
        keep_alive: bool,
        retry_statuses: frozenset[int],
    ) -> tuple[bool, bool]:
        """Stream the upstream's response down; returns (client keep-alive, upstream reusable)."""
        parser = conn.parser
        events = parser.events
        if head.method == b"HEAD":
            parser.expect_no_body()
        http10_client = head.version == b"1.0"
        # the head, after any 1xx interim responses
        while True:
            while not events:
                await conn.read()
            resp = events.popleft()
            if not isinstance(resp, ResponseReceived):
                raise UpstreamResetError("upstream sent a body without a head")
            if resp.status >= 200:
                break
            while not events:
                await conn.read()
            events.popleft()  # the 1xx's MessageEnded
            if resp.status != 101 and not http10_client:
                await self._send(
                    response_head(resp.status, resp.reason, resp.headers, resp.connection, b"")
                )
        status = resp.status
        if status in retry_statuses:
            if status != 200 or RETRY_200 in retry_statuses:
                raise RetriableResponse(status)
            # a route retrying gRPC statuses: the call's status, if in the head
            grpc_status = retried(resp.headers, retry_statuses)
            if grpc_status is not None:
                raise RetriableResponse(grpc_to_http(grpc_status))
        filters = self.filters
        if filters is not None and filters.takes_response:
            reply = await filters.response_headers(resp)
            if reply is not None:
                raise FilterReplied(reply)
            if resp.status != status:
                status = resp.status
                resp.reason = b""
            if filters.takes_response_body and resp.framing != NO_BODY:
                record.status = status
                return await self._relay_filtered(record, conn, resp, filters, keep_alive, head)
        record.status = status
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
                    record.bytes_out += len(data)
                    out.append(chunk(data) if rechunk else data)
                else:
                    done = True
                    if rechunk:
                        assert isinstance(ev, MessageEnded)
                        out.append(last_chunk(ev.trailers))
                    break
            if out:
                await self._send(b"".join(out) if len(out) > 1 else out[0])
                record.head_sent = True
                out = []
            if done:
                break
            await conn.read()
        # llhttp's keep_alive already accounts for "Connection: close" and HTTP/1.0
        return keep_alive, resp.keep_alive and not parser.broken

    async def _relay_filtered(
        self,
        record: RequestRecord,
        conn: UpstreamConnection,
        resp: ResponseReceived,
        filters: RequestFilters,
        keep_alive: bool,
        head: RequestReceived,
    ) -> tuple[bool, bool]:
        """``_relay_response``'s body part when filters see the response body: each piece
        through their body hooks, the body re-framed (chunked; close-delimited for an
        HTTP/1.0 client) as its length may change, the head held until the first byte
        of body the filters pass on (so a body over the buffer limit is still a 500)."""
        parser = conn.parser
        events = parser.events
        resp.headers = [h for h in resp.headers if h[0].lower() != b"content-length"]
        if head.version == b"1.0":
            keep_alive, rechunk, extra = False, False, b"connection: close\r\n"
        else:
            rechunk, extra = True, CHUNKED_LINE
            if not keep_alive:
                extra += b"connection: close\r\n"
        out = [
            response_head(resp.status, resp.reason, resp.headers, resp.connection, VIA_LINE + extra)
        ]
        done = False
        while True:
            while events:
                ev = events.popleft()
                if isinstance(ev, DataReceived):
                    data = await filters.response_body(ev.data, False)
                else:
                    assert isinstance(ev, MessageEnded)
                    data = await filters.response_body(b"", True)
                    done = True
                if data:
                    record.bytes_out += len(data)
                    out.append(chunk(data) if rechunk else data)
                if done:
                    if rechunk:
                        assert isinstance(ev, MessageEnded)
                        out.append(last_chunk(await filters.response_trailers(ev.trailers)))
                    break
            if out and (done or len(out) > 1 or record.head_sent):
                await self._send(b"".join(out))
                record.head_sent = True
                out = []
            if done:
                break
            await conn.read()
        return keep_alive, resp.keep_alive and not parser.broken


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

_NO_STATUSES: frozenset[int] = frozenset()


def _rechunk_request(head: RequestReceived) -> None:
    """``head``'s body goes upstream chunked: filters may change its length."""
    head.framing = CHUNKED
    head.headers = [h for h in head.headers if h[0].lower() != b"content-length"]


def _ms_since(start: float) -> float:
    return (perf_counter() - start) * 1000.0


def _with_attempt_count(up_head: bytes, attempt: int) -> bytes:
    """``up_head`` with Envoy's ``x-envoy-attempt-count`` (the first try is 1), in place
    of any the client sent."""
    given = up_head.lower().find(b"\r\nx-envoy-attempt-count:")
    if given >= 0:
        end = up_head.index(b"\r\n", given + 2)
        up_head = up_head[:given] + up_head[end:]
    return b"%sx-envoy-attempt-count: %d\r\n\r\n" % (up_head[:-2], attempt)


def _retry_admitted(cluster_stats: ClusterStats) -> bool:
    """Whether the cluster's ``max_retries`` (or retry budget) admits one more request
    being retried (``policies.limits``; a request holds its slot until it ends)."""
    return cluster_stats.thresholds.retry_allowed(
        cluster_stats.rq_in_flight, cluster_stats.rq_retry_active
    )


class _BodyPump:
    """Copies a request body from the client to the upstream, piece by piece."""

    __slots__ = ("conn", "done", "failed", "framing", "http", "record")

    def __init__(
        self, http: HttpConnection, record: RequestRecord, conn: UpstreamConnection, framing: int
    ) -> None:
        self.http = http
        self.record = record
        self.conn = conn
        self.framing = framing
        self.done = False
        self.failed: BaseException | None = None

    async def run(self, up_head: bytes, scope: trio.CancelScope) -> None:
        chunked = self.framing == CHUNKED
        http = self.http
        record = self.record
        events = http.body_events
        filters = http.filters
        if filters is not None and not filters.takes_request_body:
            filters = None
        out = [up_head]
        try:
            while True:
                while events:
                    ev = events.popleft()
                    if isinstance(ev, DataReceived):
                        data = ev.data
                        record.bytes_in += len(data)
                        if filters is not None:  # (the body was re-framed chunked)
                            data = await filters.request_body(data, False)
                            if not data:
                                continue
                        out.append(chunk(data) if chunked else data)
                        continue
                    assert isinstance(ev, MessageEnded)
                    trailers = ev.trailers
                    if filters is not None:
                        tail = await filters.request_body(b"", True)
                        if tail:
                            out.append(chunk(tail))
                        trailers = await filters.request_trailers(trailers)
                    if chunked:
                        out.append(last_chunk(trailers))
                    await self.conn.send(b"".join(out))
                    self.done = True
                    return
                if out:
                    await self.conn.send(b"".join(out))
                    out = []
                    if events:
                        # (an HTTP/2 stream's body arrives while we send: take it first)
                        continue
                await http._more_body()
        except UpstreamResetError:
            # the upstream stopped reading; its response (or the reset) tells the rest
            return
        except (DownstreamClosed, DownstreamProtocolError, FilterError) as e:
            # the client broke off or sent a malformed body, or a filter failed on it
            # (or replied): the exchange is over
            self.failed = e
            scope.cancel()
