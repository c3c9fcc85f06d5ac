"""Access logs: one JSON line per request, written by the listener's own task.

Theory of operation: the data path hands each finished request's ``RequestRecord``
(``gateway.observe.record``) to ``AccessLog.record``, which keeps a tuple of the values
on a list: no formatting, no I/O, no await; the first entry after a flush wakes the
writer. A tuple, not the record: a record kept until the writer's batch keeps its
request head alive, header list and all. ``run_writer`` waits a short moment so entries
gather, takes the whole list, formats it in one loop (one bytes ``%`` into one of four
templates per line, strings JSON-escaped only when they need it, the timestamp's seconds
formatted once per second) and writes the batch. While it is stalled entries pile up to
``buffer_kb`` (each is charged the size of its request head, an upper bound of the bytes
it holds); past that they are dropped and counted in the listener's
``access_log_dropped``, never queued without bound. A write that fails drops its batch,
counted the same way.

Why format in the writer: measured on the whole gateway, formatting each line where the
request ends cost about 3.5 us a request more than formatting the same lines in a batch
(a tight loop keeps the interpreter's caches warm; interleaved with the data path it
pays their misses every time).

Fields, in Envoy's vocabulary (``response_flags`` as ``UF,URX``, ``-`` when none):
``start_time`` (UTC, ms), ``method``, ``path``, ``protocol``, ``response_code`` (0 when
no response was sent), ``response_flags``, ``bytes_received`` / ``bytes_sent`` (body
bytes), ``duration`` (ms, from the request head to the end of the response),
``upstream_service_time`` (ms, from the last attempt's start to the end of its response:
the time ``upstream_rq_time`` records; null when no response came), ``upstream_host``,
``upstream_cluster``, ``request_id``, ``authority``, ``traceparent``.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import time
from typing import TYPE_CHECKING

import trio

from gateway.config import AccessLogConfig

if TYPE_CHECKING:
    from gateway.observe.record import RequestRecord
    from gateway.observe.stats import ListenerStats

log = logging.getLogger("triogate.accesslog")

#: seconds the writer waits after being woken, so that lines gather into one batch
FLUSH_DELAY = 0.1
#: what an entry is charged beyond its request head (the tuple and its small values)
ENTRY_OVERHEAD = 200

# start (perf_counter), method, path, protocol version, status, flags, bytes in, bytes out,
# duration ms, upstream service ms (< 0: none), upstream host and cluster (as JSON strings,
# or null), request id, authority, traceparent (b"" when none; never needs escaping)
Entry = tuple[
    float, bytes, bytes, bytes, int, str, int, int, float, float, bytes, bytes, bytes, bytes, bytes
]


def _template(upstream: bool, trace: bool) -> bytes:
    return (
        b'{"start_time":"%s.%03dZ","method":"%s","path":"%s","protocol":"HTTP/%s",'
        b'"response_code":%d,"response_flags":"%s","bytes_received":%d,"bytes_sent":%d,'
        b'"duration":%.3f,"upstream_service_time":'
        + (b"%.3f" if upstream else b"%snull")
        + b',"upstream_host":%s,"upstream_cluster":%s,"request_id":"%s","authority":"%s",'
        + b'"traceparent":'
        + (b'"%s"' if trace else b"%snull")
        + b"}\n"
    )


#: the line, by 2 * has a traceparent + has an upstream service time
_LINES = tuple(_template(u, t) for t in (False, True) for u in (False, True))
#: bytes that need escaping in a JSON string (control, quote, backslash, non-ASCII)
_UNSAFE = bytes([*range(0x20), 0x22, 0x5C, *range(0x7F, 0x100)])


def _esc(value: bytes) -> bytes:
    """``value`` as the inside of a JSON string (UTF-8, invalid bytes as ``\\xNN``)."""
    if len(value.translate(None, _UNSAFE)) == len(value):
        return value
    return json.dumps(value.decode("utf-8", "backslashreplace"))[1:-1].encode()


class AccessLog:
    """One listener's access log: a bounded buffer of lines and the writer's state."""

    __slots__ = (
        "_reconfigured",
        "config",
        "enabled",
        "limit",
        "pending",
        "pending_bytes",
        "stats",
        "wakeup",
    )

    def __init__(self, config: AccessLogConfig, stats: ListenerStats) -> None:
        self.stats = stats
        self.pending: list[Entry] = []
        self.pending_bytes = 0
        self.wakeup = trio.Event()
        self._reconfigured = False
        self.config = config
        self.enabled = config.enabled
        self.limit = config.buffer_kb * 1024

    def reconfigure(self, config: AccessLogConfig) -> None:
        """Switch on or off, or change the sink; the writer reopens it at its next batch."""
        if config != self.config:
            self._reconfigured = config.path != self.config.path
            self.config = config
            self.enabled = config.enabled
            self.limit = config.buffer_kb * 1024
            self.wakeup.set()

    def record(self, request: RequestRecord) -> None:
        """Hand over a finished request; never blocks (dropped and counted when full)."""
        head = request.head
        size = self.pending_bytes + head.head_size + ENTRY_OVERHEAD
        if size > self.limit:
            self.stats.access_log_dropped += 1
            return
        self.pending_bytes = size
        pending = self.pending
        if not pending:
            self.wakeup.set()
        pending.append(
            (
                request.start,
                head.method,
                head.target,
                head.version,
                request.status,
                request.flags,
                request.bytes_in,
                request.bytes_out,
                request.duration_ms,
                request.upstream_ms,
                request.host,
                request.cluster,
                request.request_id,
                head.host,
                request.traceparent,
            )
        )

    def take(self) -> list[Entry]:
        """Every pending entry, oldest first; the buffer is empty afterwards."""
        batch = self.pending
        self.pending = []
        self.pending_bytes = 0
        return batch

    async def run_writer(self, *, delay: float = FLUSH_DELAY) -> None:
        """Write batches until cancelled; on cancellation, what is pending is written."""
        sink = _Sink()
        try:
            while True:
                await self.wakeup.wait()
                self.wakeup = trio.Event()
                await trio.sleep(delay)
                await self._flush(sink)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await self._flush(sink)
            sink.close()

    async def _flush(self, sink: _Sink) -> None:
        if self._reconfigured:
            self._reconfigured = False
            sink.close()
        batch = self.take()
        if not batch:
            return
        data = format_entries(batch)
        try:
            await sink.write(self.config.path, data)
        except OSError as e:
            self.stats.access_log_dropped += len(batch)
            log.warning("access log %s: %d lines lost: %s", self.config.path, len(batch), e)
            sink.close()
        else:
            self.stats.access_log_written += len(batch)


def format_entries(batch: list[Entry]) -> bytes:
    """The JSON lines of ``batch``."""
    # perf_counter() stamps to wall-clock time; both clocks move together over a batch
    offset = time.time() - time.perf_counter()
    lines = _LINES
    unsafe = _UNSAFE
    esc = _esc
    second = -1
    stamp = b""
    flag_bytes: dict[str, bytes] = {"": b"-"}
    out = []
    for (
        start,
        method,
        path,
        version,
        status,
        flags,
        bytes_in,
        bytes_out,
        duration,
        upstream_ms,
        host,
        cluster,
        request_id,
        authority,
        traceparent,
    ) in batch:
        wall = start + offset
        s = int(wall)
        if s != second:
            second = s
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)).encode()
        # one look at the client's bytes: escaping is rarely needed
        raw = path + request_id + authority
        if len(raw.translate(None, unsafe)) != len(raw):
            path, request_id, authority = esc(path), esc(request_id), esc(authority)
        has_upstream = upstream_ms >= 0
        flag = flag_bytes.get(flags)
        if flag is None:
            flag = flag_bytes[flags] = flags.encode()
        out.append(
            lines[has_upstream + 2 * (traceparent != b"")]
            % (
                stamp,
                int((wall - s) * 1000),
                method,
                path,
                version,
                status,
                flag,
                bytes_in,
                bytes_out,
                duration,
                upstream_ms if has_upstream else b"",
                host,
                cluster,
                request_id,
                authority,
                traceparent,
            )
        )
    return b"".join(out)


class _Sink:
    """Where lines go: a regular file, or stdout, a pipe, a FIFO, a terminal.

    A pipe, FIFO, socket or terminal is written from the event loop, non-blocking (a
    full pipe parks the writer task in ``wait_writable``, never the data path), with no
    thread: handing each batch to a worker thread cost the data path about 1 us a line
    in measurements (the GIL's hand-offs), and stdout is the usual sink in containers.
    A regular file cannot be written without blocking (``O_NONBLOCK`` means nothing to
    it, ``RWF_NOWAIT`` is refused by ext4 here), so it is written from a worker thread.
    stdout is reopened through ``/proc/self/fd/1`` so that its non-blocking mode is its
    own, not the process's ``sys.stdout``'s.
    """

    def __init__(self) -> None:
        self.fd = -1
        self.owned = False
        #: written from the event loop (non-blocking) rather than a worker thread
        self.direct = False
        #: a write is under way in a worker thread (perhaps one abandoned on cancellation)
        self.busy = False

    async def write(self, path: str, data: bytes) -> None:
        if self.fd < 0:
            await trio.to_thread.run_sync(self._open, path)
        if self.direct:
            await self._write_direct(data)
        else:
            # abandoned if cancelled: a stuck disk must not hold up a stop
            await trio.to_thread.run_sync(self._write_blocking, data, abandon_on_cancel=True)

    def _open(self, path: str) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK
        if path == "-":
            try:
                self.fd = os.open("/proc/self/fd/1", flags)
                self.owned = True
            except OSError:
                self.fd, self.owned = 1, False  # shared with sys.stdout: blocking, threaded
        else:
            self.fd = os.open(path, flags | os.O_CREAT, 0o644)
            self.owned = True
        self.direct = self.owned and not stat.S_ISREG(os.fstat(self.fd).st_mode)

    async def _write_direct(self, data: bytes) -> None:
        fd = self.fd
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                await trio.lowlevel.wait_writable(fd)

    def _write_blocking(self, data: bytes) -> None:
        self.busy = True
        try:
            fd = self.fd
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            self.busy = False

    def close(self) -> None:
        # never under a write still running: the descriptor's number could be reused
        if self.fd >= 0 and self.owned and not self.busy:
            if self.direct:
                trio.lowlevel.notify_closing(self.fd)
            os.close(self.fd)
        self.fd = -1
