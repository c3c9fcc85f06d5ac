"""Faults applied on the data path: a request's delay, abort, truncated or slow response.

The HTTP proxy calls ``choose_fault`` once a request's route and cluster are known,
only when the current ``DataPlane`` has a ``FaultTable``, and ``apply_fault`` only when
a fault was chosen (so a request that gets none pays no coroutine). The first fault that
takes the request decides it (``policies.faults``); a fault with ``headers_enabled``
reads Envoy's ``x-envoy-fault-*`` headers and strips them from the request before it
goes upstream (other faults leave them alone). Then, as in Envoy, the delay first
(``fault.delays_injected``, flag ``DI``; the delay is not part of the route timeout),
then the abort (``fault.aborts_injected``, flag ``FI``):

- ``status``: a local reply with that status, body ``fault filter abort`` (Envoy's);
- ``reset``: ``SO_LINGER`` 0 and close, so the client sees a TCP RST;
- ``empty``: close with no response;
- ``garbage``: ``GARBAGE`` (bytes that are no HTTP response), then close;
- ``truncate``: the request goes upstream; its response head goes to the client with
  that fraction of its body (of the ``Content-Length``; of the first piece of a body
  without one), then the connection closes;

and a ``response_rate_kbps`` (``fault.response_rl_injected``) holds the response body to
that many KiB/s. The last two shape the response through ``ShapedStream``, which stands
in for the client stream until the request ends.

A fault counts as active (the listener's ``fault.active_faults``) from its decision until
it is done: the delay waited, the abort sent, the shaped response over. One that would
take the process past ``max_active_faults`` is skipped and counted
(``fault.faults_overflow``), and not counted for ``first_n``.
"""

from __future__ import annotations

import math
import socket
import struct
from typing import TYPE_CHECKING

import attrs
import trio

from gateway.faults.table import ActiveFaults, FaultTable
from gateway.observe.stats import ListenerStats
from policies.faults import HEADERS, NO_HEADERS, Injection, read_fault_headers
from policies.grpc import grpc_to_http

if TYPE_CHECKING:
    from gateway.http1.events import RequestReceived
    from gateway.listener.context import ListenerContext
    from gateway.observe.record import RequestRecord
    from gateway.proxy.http import HttpConnection
    from gateway.routing import RouteEntry

#: what a ``garbage`` abort sends: not an HTTP status line, not printable
GARBAGE = b"\x00\x8f\xfetriogate fault: this is not HTTP\xff\x00\r\n\r\n"
#: how many times a second a rate-limited body is written
RATE_STEPS_PER_SECOND = 20


class _Slot:
    """One active fault: taken when it is chosen, released once, when it is done."""

    __slots__ = ("active", "stats")

    def __init__(self, active: ActiveFaults, stats: ListenerStats) -> None:
        self.active: ActiveFaults | None = active
        self.stats = stats
        active.count += 1
        stats.fault_active_faults += 1

    def release(self) -> None:
        active = self.active
        if active is not None:
            self.active = None
            active.count -= 1
            self.stats.fault_active_faults -= 1


@attrs.frozen(eq=False)
class Chosen:
    """A fault chosen for one request: what it gets, and its place among the active ones."""

    injection: Injection
    slot: _Slot


def choose_fault(
    table: FaultTable,
    ctx: ListenerContext,
    entry: RouteEntry,
    cluster: str,
    head: RequestReceived,
) -> Chosen | None:
    """The fault this request gets, if any (no await: most requests get none).

    A fault with ``headers_enabled`` that takes the request strips Envoy's fault headers
    from it here, whatever it decides.
    """
    fault = table.taking(ctx.name, entry.route.name, cluster, head.headers)
    if fault is None:
        return None
    rule = fault.rule
    fault_headers = NO_HEADERS
    if rule.headers_enabled:
        fault_headers = read_fault_headers(head.headers)
        head.headers = [h for h in head.headers if h[0].lower() not in HEADERS]
    injection = rule.decide(fault.counter.injected, fault_headers, ctx.rng)
    if injection is None:
        return None
    if table.active.count >= table.max_active:
        ctx.stats.fault_faults_overflow += 1
        return None
    fault.counter.injected += 1
    return Chosen(injection, _Slot(table.active, ctx.stats))


async def apply_fault(http: HttpConnection, chosen: Chosen, record: RequestRecord) -> bool | None:
    """Apply a chosen fault: delay, then abort or shape the response.

    Returns None when the request goes on upstream (a delay alone, or a shaped
    response), else whether the client connection may serve another request.
    """
    slot = chosen.slot
    try:
        return await _apply(http, chosen.injection, record, http.ctx.stats, slot)
    except BaseException:
        slot.release()
        raise


async def _apply(
    http: HttpConnection,
    injection: Injection,
    record: RequestRecord,
    stats: ListenerStats,
    slot: _Slot,
) -> bool | None:
    if injection.delay > 0:
        stats.fault_delays_injected += 1
        record.add_flag("DI")
        # the connection's deadline is the header timeout's until the exchange begins
        # (which sets the route's): the delay is neither, as in Envoy
        http.deadline = math.inf
        await trio.sleep(injection.delay)
    abort = injection.abort
    truncate = None
    if abort is not None:
        stats.fault_aborts_injected += 1
        record.add_flag("FI")
        truncate = abort.truncate
        if truncate is None:
            try:
                return await _abort(http, record, abort.kind, abort.status, abort.grpc_status)
            finally:
                slot.release()
    if injection.rate_kbps:
        stats.fault_response_rl_injected += 1
    if truncate is None and not injection.rate_kbps:
        slot.release()
        return None
    http.stream = ShapedStream(http, truncate, injection.rate_kbps * 1024.0, slot)
    return None


async def _abort(
    http: HttpConnection,
    record: RequestRecord,
    kind: str,
    status: int | None,
    grpc_status: int | None = None,
) -> bool:
    if kind == "status":
        assert status is not None
        return await http._reply(record, status, "fault filter abort")
    if kind == "grpc_status":
        # a gRPC call gets that status; any other request the HTTP status it maps to
        assert grpc_status is not None
        return await http._reply(
            record, grpc_to_http(grpc_status), "fault filter abort", grpc_status=grpc_status
        )
    record.status = 0  # no response
    if kind == "reset":
        sock = getattr(http.stream, "sock", None)
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    elif kind == "garbage":
        await http._send_quietly(GARBAGE)
    return False  # the connection closes (a reset: with an RST, the linger being 0)


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return int(value.strip())
    return None


class ShapedStream(trio.abc.Stream):
    """The client stream of one request whose response a fault truncates or slows.

    It stands in for the connection's stream from the fault's decision until the
    request ends; the first call after that puts the connection's own stream back and
    passes through. ``truncate``: the body bytes after the response head are cut at
    that fraction of the ``Content-Length`` (or of the first piece when there is none)
    and the write fails as a broken connection, which closes it. ``rate``: bytes per
    second of body, written in ``RATE_STEPS_PER_SECOND`` pieces a second.
    """

    def __init__(
        self, http: HttpConnection, truncate: float | None, rate: float, slot: _Slot
    ) -> None:
        self.http = http
        self.inner = http.stream
        self.truncate = truncate
        self.rate = rate
        self.slot = slot
        self.head_sent = False
        #: body bytes still to send before the cut (truncate), once the head is known
        self.left: int | None = None

    def _over(self) -> bool:
        """Whether the request ended; if so, the connection gets its stream back."""
        if self.http.record is not None:
            return False
        self.slot.release()
        if self.http.stream is self:
            self.http.stream = self.inner
        return True

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._over():
            return await self.inner.send_all(data)
        body = bytes(data)
        if not self.head_sent:
            if body[9:10] == b"1":  # an interim 1xx head, whole in one write
                return await self.inner.send_all(body)
            end = body.find(b"\r\n\r\n") + 4
            head, body = body[:end], body[end:]
            self.head_sent = True
            if self.truncate is not None:
                length = _content_length(head)
                self.left = int((len(body) if length is None else length) * self.truncate)
            await self.inner.send_all(head)
        cut = self.left is not None and len(body) >= self.left
        if self.left is not None:
            body = body[: self.left]
            self.left -= len(body)
        await self._trickle(body)
        if cut:
            self.slot.release()
            record = self.http.record
            if record is not None:
                record.head_sent = True  # (the proxy notes it only after a write)
            raise trio.BrokenResourceError("fault: response truncated")

    async def _trickle(self, body: bytes) -> None:
        if not self.rate:
            if body:
                await self.inner.send_all(body)
            return
        step = max(1, int(self.rate / RATE_STEPS_PER_SECOND))
        for start in range(0, len(body), step):
            piece = body[start : start + step]
            await self.inner.send_all(piece)
            await trio.sleep(len(piece) / self.rate)

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        self._over()
        return await self.inner.receive_some(max_bytes)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        self.slot.release()
        await self.inner.aclose()
