"""Network toxics on the data path: the listener's ``ToxicTable`` and the ``Link`` that
carries one direction of one connection through it (decisions: ``policies.toxics``).

Theory of operation
-------------------
Each listener keeps one ``ToxicTable`` for its life; the listener actor alone updates it
(``update``, on each config change) and each update bumps its ``version`` and cancels
the waits of the links that registered one (``interrupts``). A link (one direction of
one connection: ``upstream`` client to server, ``downstream`` server to client) reads
the version before each chunk and on every interrupted wait, and rebuilds its
``LinkChain`` when it moved, so a toxic added, changed or removed acts on live
connections at once. Nothing held is lost: chunks waiting in the link's queue stay
there, and a plan being carried out when the change comes is planned again, what it had
not written yet going through the new chain.

A link runs in one of two modes:

- *direct* while its chain is empty (no toxic, or none rolled on): read, write, count,
  in the caller's task, as the plain TCP proxy does; only the read registers an
  interrupt (cancelling a read that has not returned loses nothing).
- *queued* once its chain is not empty: a reader task stamps each chunk with the time it
  was read and queues it (``QUEUE_CHUNKS`` at most: backpressure beyond that), and the
  link's task carries out each chunk's plan (``LinkChain.on_chunk``): it sleeps until a
  step's time and writes, in order. So latency is counted from the read, as Toxiproxy
  does, and streamed data does not pile up delay. A link stays queued to its end.

A ``Close`` step, a ``timeout`` toxic's idle timer or the removal of an active
``timeout`` ends the whole connection through ``ToxicConnection.end`` (its owner closes
both sides; with ``reset`` by RST: ``SO_LINGER`` 0 then close, as Toxiproxy's
``reset_peer``). Unlike Toxiproxy, the RST is sent whenever the toxic fires, also when
it was added to a live connection, and a ``reset_peer`` rolled off sends none (its
issue #603).

The client side of an HTTP connection runs under toxics through ``ToxicStream`` (a
stream the HTTP proxy reads and writes as it would the socket, with two links between
it and the socket); only a listener with toxics at the connection's start gets one.

Errors: a link raises what its streams raise (``trio.BrokenResourceError``,
``trio.ClosedResourceError``) and says in ``failing`` which stream it was.
"""

from __future__ import annotations

import math
import random
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

from gateway.config import Toxic
from policies.toxics import (
    Close,
    LinkChain,
    Pacer,
    Stream,
    ToxicSpec,
    Write,
    parse_source,
    slow_open_delay,
)

__all__ = [
    "QUEUE_CHUNKS",
    "READ_SIZE",
    "Link",
    "Meter",
    "ToxicConnection",
    "ToxicStream",
    "ToxicTable",
    "compile_toxic",
    "serve_with_toxics",
    "set_reset_on_close",
]

READ_SIZE = 65536
#: chunks a queued link holds between its reader and its writer
QUEUE_CHUNKS = 256


def compile_toxic(toxic: Toxic) -> ToxicSpec:
    """The config's toxic as the decisions read it (``source`` parsed: validated before)."""
    return ToxicSpec(
        name=toxic.name,
        type=toxic.type,
        stream=toxic.stream,
        toxicity=toxic.toxicity,
        attributes=toxic.attributes,
        source=tuple(parse_source(s) for s in toxic.source),
    )


class ToxicTable:
    """A listener's toxics, one ``version`` per change; updated by the listener actor only."""

    def __init__(self, toxics: tuple[Toxic, ...] = ()) -> None:
        self.version = 0
        self.specs: tuple[ToxicSpec, ...] = ()
        self.upstream: tuple[ToxicSpec, ...] = ()
        self.downstream: tuple[ToxicSpec, ...] = ()
        self.slow_open: tuple[ToxicSpec, ...] = ()
        #: the pacer of each shared bandwidth toxic, by name
        self.shared: dict[str, Pacer] = {}
        #: the cancel scopes of links waiting (a read, a sleep): an update cancels them
        self.interrupts: set[trio.CancelScope] = set()
        self.update(toxics)

    @property
    def empty(self) -> bool:
        return not self.specs

    def chain(self, stream: Stream) -> tuple[ToxicSpec, ...]:
        return self.upstream if stream == "upstream" else self.downstream

    def update(self, toxics: tuple[Toxic, ...]) -> None:
        """Take the listener's new toxics; live links see them at their next step."""
        specs = tuple(compile_toxic(t) for t in toxics)
        if specs == self.specs:
            return
        self.specs = specs
        self.upstream = tuple(s for s in specs if s.stream == "upstream")
        self.downstream = tuple(s for s in specs if s.stream == "downstream")
        self.slow_open = tuple(s for s in specs if s.type == "slow_open")
        shared: dict[str, Pacer] = {}
        for spec in specs:
            if spec.type == "bandwidth" and spec.attributes.shared:
                pacer = self.shared.get(spec.name)
                shared[spec.name] = (
                    pacer
                    if pacer is not None and pacer.rate == spec.attributes.rate
                    else (Pacer(spec.attributes.rate))
                )
        self.shared = shared
        self.version += 1
        for scope in list(self.interrupts):
            scope.cancel()


class Meter(Protocol):
    """Counts a link's bytes: read from its source, written to its destination."""

    def read(self, size: int) -> None: ...

    def written(self, size: int) -> None: ...


class _NoMeter:
    def read(self, size: int) -> None:
        pass

    def written(self, size: int) -> None:
        pass


NO_METER = _NoMeter()


class Source(Protocol):
    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray: ...


class Sink(Protocol):
    async def send_all(self, data: bytes | bytearray | memoryview) -> None: ...

    async def send_eof(self) -> None: ...


class ToxicConnection:
    """What the links of one client connection share: the table, the client's address,
    the randomness, and ``end`` (close the whole connection; ``reset``: by RST)."""

    __slots__ = ("client_ip", "end", "rng", "table")

    def __init__(
        self,
        table: ToxicTable,
        client_ip: str,
        rng: random.Random,
        end: Callable[[bool], None],
    ) -> None:
        self.table = table
        self.client_ip = client_ip
        self.rng = rng
        self.end = end

    def slow_open_delay(self) -> float:
        """Seconds to wait before the upstream connection (``slow_open`` toxics)."""
        slow_open = self.table.slow_open
        return slow_open_delay(slow_open, self.client_ip, self.rng) if slow_open else 0.0


class Link:
    """One direction of one connection under the listener's toxics (module docstring)."""

    def __init__(
        self,
        conn: ToxicConnection,
        stream: Stream,
        src: Source,
        dst: Sink,
        meter: Meter = NO_METER,
    ) -> None:
        self.conn = conn
        self.stream = stream
        self.src = src
        self.dst = dst
        self.meter = meter
        #: the stream whose failure ended the link (src or dst); None while none did
        self.failing: Source | Sink | None = None
        self._version = -1
        self._chain: LinkChain | None = None
        self._read_error: Exception | None = None
        #: set when the link ended the connection (a Close step, a timeout)
        self.ended = False

    async def run(self) -> None:
        """Copy until the source ends (its end passed on) or the connection is ended."""
        table = self.conn.table
        src, dst, meter = self.src, self.dst, self.meter
        interrupts = table.interrupts
        while True:
            if table.version != self._version:
                chain = self._refresh()
                if chain is None:
                    return
                if not chain.empty:
                    await self._run_queued()
                    return
            scope = trio.CancelScope()
            interrupts.add(scope)
            try:
                with scope:
                    self.failing = src
                    data = await src.receive_some(READ_SIZE)
            finally:
                interrupts.discard(scope)
            if scope.cancelled_caught:
                continue
            self.failing = dst
            if not data:
                await dst.send_eof()
                self.failing = None
                return
            size = len(data)
            meter.read(size)
            await dst.send_all(data)
            meter.written(size)

    def _refresh(self) -> LinkChain | None:
        """The chain for the table's current version; None if that ended the connection."""
        table = self.conn.table
        self._version = table.version
        specs = table.chain(self.stream)
        now = trio.current_time()
        if self._chain is None:
            chain = LinkChain.build(specs, self.conn.client_ip, self.conn.rng, now, table.shared)
        else:
            chain = self._chain.rebuilt(specs, self.conn.client_ip, now, table.shared)
        self._chain = chain
        if chain.closes:
            self._end(reset=False)
            return None
        return chain

    def _end(self, *, reset: bool) -> None:
        self.ended = True
        self.failing = None
        self.conn.end(reset)

    async def _run_queued(self) -> None:
        send, recv = trio.open_memory_channel[tuple[bytes, float]](QUEUE_CHUNKS)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read_into, send)
            try:
                await self._write_from(recv)
            finally:
                nursery.cancel_scope.cancel()

    async def _read_into(self, send: trio.MemorySendChannel[tuple[bytes, float]]) -> None:
        src, meter = self.src, self.meter
        async with send:
            try:
                while True:
                    data = bytes(await src.receive_some(READ_SIZE))
                    meter.read(len(data))
                    await send.send((data, trio.current_time()))
                    if not data:
                        return
            except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
                self._read_error = e  # raised by the writer, after what was queued

    async def _write_from(self, recv: trio.MemoryReceiveChannel[tuple[bytes, float]]) -> None:
        table = self.conn.table
        while True:
            chain = self._chain if table.version == self._version else self._refresh()
            if chain is None:
                return
            deadline = chain.close_deadline()
            scope = trio.CancelScope(deadline=math.inf if deadline is None else deadline)
            table.interrupts.add(scope)
            try:
                with scope:
                    item = await recv.receive()
            except trio.EndOfChannel:
                if self._read_error is not None:
                    self.failing = self.src
                    raise self._read_error from None
                return
            finally:
                table.interrupts.discard(scope)
            if scope.cancelled_caught:
                if table.version == self._version:  # the timeout toxic's idle timer
                    self._end(reset=False)
                    return
                continue
            data, stamp = item
            now = trio.current_time()
            if not data:
                await trio.sleep_until(chain.on_eof(now))
                self.failing = self.dst
                await self.dst.send_eof()
                self.failing = None
                return
            if not await self._carry_out(chain.on_chunk(data, stamp, now), stamp):
                return

    async def _carry_out(self, plan: list[Write | Close], stamp: float) -> bool:
        """Sleep and write as ``plan`` says; False if it ended the connection.

        A change of the toxics during a sleep plans what is left again, with the new
        chain (bytes not written yet; a pending close is asked for again)."""
        dst, meter = self.dst, self.meter
        index = 0
        while index < len(plan):
            step = plan[index]
            if step.at > trio.current_time() and not await self._sleep_until(step.at):
                before = self._chain
                chain = self._refresh()
                if chain is None:
                    return False
                if before is None or chain.stages != before.stages:
                    rest = plan[index:]
                    data = b"".join(s.data for s in rest if isinstance(s, Write))
                    closing = any(isinstance(s, Close) for s in rest)
                    now = trio.current_time()
                    plan = chain.on_chunk(data, stamp, now) if data or closing else []
                    index = 0
                continue
            if isinstance(step, Close):
                self._end(reset=step.reset)
                return False
            self.failing = dst
            await dst.send_all(step.data)
            self.failing = None
            meter.written(len(step.data))
            index += 1

        return True

    async def _sleep_until(self, at: float) -> bool:
        """Sleep until ``at``; False if a change of the toxics woke it first."""
        interrupts = self.conn.table.interrupts
        scope = trio.CancelScope()
        interrupts.add(scope)
        try:
            with scope:
                await trio.sleep_until(at)
        finally:
            interrupts.discard(scope)
        return not scope.cancelled_caught


def set_reset_on_close(sock: socket.socket) -> None:
    """Make ``sock``'s close an RST (``SO_LINGER`` on, 0 s), as Toxiproxy's reset_peer."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass  # already closed: nothing to reset


class _Pipe:
    """One way between a link and the HTTP proxy: bounded chunks of bytes (backpressure)."""

    def __init__(self, size: int = 16) -> None:
        self.tx, self.rx = trio.open_memory_channel[bytes](size)
        self.pending = b""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        try:
            await self.tx.send(bytes(data))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise trio.BrokenResourceError("the connection was closed") from None

    async def send_eof(self) -> None:
        self.tx.close()
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data = self.pending
        if not data:
            try:
                data = await self.rx.receive()
            except trio.EndOfChannel:
                return b""
            except trio.ClosedResourceError:
                raise trio.ClosedResourceError("the connection was closed") from None
        else:
            await trio.lowlevel.checkpoint()
        if max_bytes is not None and len(data) > max_bytes:
            data, self.pending = data[:max_bytes], data[max_bytes:]
        else:
            self.pending = b""
        return data

    def close(self) -> None:
        self.tx.close()
        self.rx.close()


class ToxicStream(trio.abc.HalfCloseableStream):
    """The client side of an HTTP connection as its proxy sees it, with the listener's
    toxics between it and the socket: what the proxy reads came through the upstream
    link, what it writes goes through the downstream link.

    ``aclose`` passes on what was written first (through the toxics), then closes.
    """

    def __init__(self, incoming: _Pipe, outgoing: _Pipe, flushed: trio.Event) -> None:
        self.incoming = incoming
        self.outgoing = outgoing
        self._flushed = flushed
        self.closed = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self.incoming.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.outgoing.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def send_eof(self) -> None:
        await self.outgoing.send_eof()

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            self.outgoing.tx.close()
            await self._flushed.wait()
            self.incoming.close()
        await trio.lowlevel.checkpoint()

    def close(self) -> None:
        self.closed = True
        self.incoming.close()
        self.outgoing.close()


class _SocketLike(Protocol):
    sock: socket.socket

    async def receive_some(self, max_bytes: int | None = None) -> bytes: ...

    async def send_all(self, data: bytes | bytearray | memoryview) -> None: ...

    async def send_eof(self) -> None: ...

    def close(self) -> None: ...


async def serve_with_toxics(
    io: _SocketLike,
    table: ToxicTable,
    client_ip: str,
    rng: random.Random,
    serve: Callable[[ToxicStream], Awaitable[None]],
) -> None:
    """Run ``serve`` (an HTTP connection) on ``io`` with the listener's toxics between."""
    incoming, outgoing = _Pipe(), _Pipe()
    flushed = trio.Event()
    stream = ToxicStream(incoming, outgoing, flushed)

    async with trio.open_nursery() as nursery:

        def end(reset: bool) -> None:
            if reset:
                set_reset_on_close(io.sock)
            io.close()
            stream.close()
            flushed.set()
            nursery.cancel_scope.cancel()

        conn = ToxicConnection(table, client_ip, rng, end)
        delay = conn.slow_open_delay()
        if delay:
            await trio.sleep(delay)
        up = Link(conn, "upstream", io, incoming)
        down = Link(conn, "downstream", outgoing, io)

        async def run_up() -> None:
            try:
                await up.run()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                incoming.tx.close()  # the proxy reads the end of the client's stream

        async def run_down() -> None:
            try:
                await down.run()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                outgoing.rx.close()  # the proxy's next write fails
            finally:
                flushed.set()

        nursery.start_soon(run_up)
        nursery.start_soon(run_down)
        try:
            await serve(stream)
            await stream.aclose()
        finally:
            io.close()
            nursery.cancel_scope.cancel()
