"""The proxy-wasm host: one module instance run by wasmtime, its contexts, its hostcalls.

Theory of operation. ``WasmFilterHost.load`` compiles a module once per process (the
compiled ``wasmtime.Module`` is cached by path, size and mtime), instantiates it in a
store of its own with the filter's memory limit, and brings up its root context:
``_initialize``/``_start``, ``proxy_on_context_create(1, 0)``, ``proxy_on_vm_start``,
``proxy_on_configure``. Each request (connection) is then a stream context of that
instance (``new_http_context``/``new_network_context``), whose methods are the ABI's
callbacks. Every call into the module is synchronous and runs on the caller's thread
(the trio thread); ``max_ms_per_call`` bounds how long one may hold it.

Hostcalls find their context as the module's ``effective`` context: the one being
called back, or the one ``proxy_set_effective_context`` named (how a tick resumes a
paused request). A header map or buffer is reachable only while the context holds it:
request headers from ``on_request_headers`` on, a body chunk from its ``on_*_body``.

Failure. A callback that traps, runs past ``max_ms_per_call`` (wasmtime's epoch
interruption: a daemon thread advances the engine's epoch every ``EPOCH_TICK_S`` while
a call is running, and each call gets a deadline of that many ticks), or fails after
its memory was refused growth past ``max_memory_mb`` raises ``WasmTrap``,
``WasmTimeout`` or ``WasmOutOfMemory`` and is counted (``wasm.trap``, ``wasm.timeout``,
``wasm.oom``). Its context is failed; the instance is marked failed too, since a trap
can leave the module's heap half-updated, and the next new context gets a fresh
instance (``reinstantiations`` counts them). Contexts already on the failed instance
keep it until they end, so one failing request never fails another in flight.

wasmtime's C API does not say that a ``memory.grow`` was refused, so a trap is taken
for out-of-memory when the instance's memory had reached half of ``max_memory_mb``
(allocators grow by doubling, and the module's own abort follows a refused grow).
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import struct
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, TypeAlias

import attrs
import trio
import wasmtime

from gateway.errors import (
    WasmError,
    WasmLoadError,
    WasmOutOfMemory,
    WasmTimeout,
    WasmTrap,
)
from gateway.filters.api import HeaderMap, LocalReply
from gateway.filters.wasm._calls import Export, MemoryView, StoreContext, define, store_context
from gateway.filters.wasm.abi import (
    Action,
    BufferType,
    LogLevel,
    MapType,
    MetricKind,
    PeerType,
    Status,
    StreamType,
    decode_pairs,
    encode_pairs,
)
from gateway.filters.wasm.metrics import DictMetricsSink, MetricsSink

__all__ = [
    "EPOCH_TICK_S",
    "HttpContext",
    "NetworkContext",
    "WasmFilterHost",
    "WasmLimits",
    "WasmLog",
    "compile_module",
    "http_properties",
    "provided_imports",
]

#: how often the engine's epoch advances while a module runs: ``max_ms_per_call``'s grain
EPOCH_TICK_S: Final = 0.001

#: a module's log line, at its level (the default writes to ``logging``)
WasmLog: TypeAlias = Callable[[LogLevel, str], None]

_LOGGER = logging.getLogger("gateway.filters.wasm")
_LOGGING_LEVELS = {
    LogLevel.TRACE: 5,
    LogLevel.DEBUG: logging.DEBUG,
    LogLevel.INFO: logging.INFO,
    LogLevel.WARN: logging.WARNING,
    LogLevel.ERROR: logging.ERROR,
    LogLevel.CRITICAL: logging.CRITICAL,
}
_ROOT_ID: Final = 1
_U32_MASK: Final = 0xFFFF_FFFF
_U64_MASK: Final = 0xFFFF_FFFF_FFFF_FFFF
_PAGE: Final = 65536
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_OK: Final = int(Status.OK)
_NOT_FOUND: Final = int(Status.NOT_FOUND)
_BAD_ARGUMENT: Final = int(Status.BAD_ARGUMENT)
_INVALID_MEMORY: Final = int(Status.INVALID_MEMORY_ACCESS)
_CAS_MISMATCH: Final = int(Status.CAS_MISMATCH)
_UNIMPLEMENTED: Final = int(Status.UNIMPLEMENTED)
# WASI's errno values
_ESUCCESS: Final = 0
_EBADF: Final = 8
_EFAULT: Final = 21
_ENOTSUP: Final = 58

#: functions some SDKs import that triogate does not provide yet: a module importing one
#: does not load (the error says which, and that it is not implemented)
NOT_IMPLEMENTED: Final = frozenset(
    {
        "proxy_http_call",
        "proxy_grpc_call",
        "proxy_grpc_stream",
        "proxy_grpc_send",
        "proxy_grpc_cancel",
        "proxy_grpc_close",
        "proxy_get_status",
        "proxy_register_shared_queue",
        "proxy_resolve_shared_queue",
        "proxy_enqueue_shared_queue",
        "proxy_dequeue_shared_queue",
        "proxy_call_foreign_function",
        "proxy_clear_route_cache",
        "proxy_get_configuration",
        "proxy_continue_request",
        "proxy_continue_response",
    }
)

#: per process, as Envoy keeps it per VM id: ``(vm_id, key) -> (value, cas)``
_SHARED_DATA: dict[tuple[str, bytes], tuple[bytes, int]] = {}


@attrs.frozen
class WasmLimits:
    """What one filter's module may use: memory in all, and time per callback."""

    max_memory_mb: int = attrs.field(default=64, validator=attrs.validators.gt(0))
    max_ms_per_call: float = attrs.field(default=50.0, validator=attrs.validators.gt(0))

    @property
    def memory_bytes(self) -> int:
        return self.max_memory_mb * 1024 * 1024

    @property
    def deadline_ticks(self) -> int:
        """Epoch ticks a call may run: its milliseconds, and one for the tick under way."""
        return math.ceil(self.max_ms_per_call / 1000 / EPOCH_TICK_S) + 1


def http_properties(
    *,
    path: str = "",
    method: str = "",
    host: str = "",
    source_address: str = "",
    route_name: str = "",
    cluster_name: str = "",
    protocol: str = "",
) -> dict[str, bytes]:
    """A request's properties under Envoy's names (``request.path``, ``source.address`` as
    ``ip:port``, ``route_name`` and ``xds.route_name``...), for ``new_http_context``."""
    values = {
        "request.path": path,
        "request.url_path": path.partition("?")[0],
        "request.method": method,
        "request.host": host,
        "request.protocol": protocol,
        "source.address": source_address,
        "route_name": route_name,
        "xds.route_name": route_name,
        "cluster_name": cluster_name,
        "xds.cluster_name": cluster_name,
    }
    return {name: value.encode() for name, value in values.items() if value}


# -- the engine: one per process, with the thread that makes deadlines -------------------


class _Runtime:
    """The process's engine (epoch interruption on), its compiled modules, its ticker."""

    def __init__(self) -> None:
        config = wasmtime.Config()
        config.epoch_interruption = True
        self.engine = wasmtime.Engine(config)
        self.modules: dict[tuple[str, int, int], wasmtime.Module] = {}
        self._armed = threading.Event()
        self._thread: threading.Thread | None = None

    def arm(self) -> None:
        """The epoch advances from now until ``disarm`` (no wake-ups while no module runs)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._tick, name="wasm-epoch", daemon=True)
            self._thread.start()
        self._armed.set()

    def disarm(self) -> None:
        self._armed.clear()

    def _tick(self) -> None:
        # ticks kept to the clock, not one per sleep: a sleep overshoots (by ~25% at 1 ms,
        # more when the GIL is busy), which would stretch every deadline as much
        next_at = time.monotonic()
        while True:
            if not self._armed.is_set():
                self._armed.wait()
                next_at = time.monotonic()
            next_at += EPOCH_TICK_S
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.engine.increment_epoch()


_runtimes: dict[int, _Runtime] = {}


def _runtime() -> _Runtime:
    # keyed by process: a forked worker has none of its parent's threads
    pid = os.getpid()
    runtime = _runtimes.get(pid)
    if runtime is None:
        runtime = _runtimes[pid] = _Runtime()
    return runtime


def compile_module(path: str | os.PathLike[str]) -> wasmtime.Module:
    """``path`` compiled (binary ``.wasm`` or ``.wat`` text), once per process and version
    of the file; raises ``WasmLoadError`` when it cannot be read or does not compile."""
    runtime = _runtime()
    file = Path(path)
    try:
        stat = file.stat()
        key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns)
        module = runtime.modules.get(key)
        if module is None:
            module = wasmtime.Module(runtime.engine, file.read_bytes())
            runtime.modules[key] = module
    except OSError as exc:
        raise WasmLoadError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    except wasmtime.WasmtimeError as exc:
        raise WasmLoadError(f"{path}: does not compile: {_first_line(exc)}") from exc
    return module


def _first_line(exc: BaseException) -> str:
    """What went wrong, in a line: wasmtime puts the cause last, after a backtrace."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    last = lines[-1]
    number, _, rest = last.partition(": ")
    return rest if number.isdigit() and rest else last


# -- contexts ------------------------------------------------------------------------------


class _ProcExit(Exception):
    """The module called WASI's ``proc_exit`` (the SDKs' abort): a trap."""

    def __init__(self, code: int) -> None:
        super().__init__(f"proc_exit({code})")


class _HostcallRefused(Exception):
    """A hostcall from the module's start function, which runs before any context."""


class _BadMemory(Exception):
    """A pointer out of the module's memory: the hostcall answers INVALID_MEMORY_ACCESS."""


class _Context:
    """What a hostcall can reach from a context: maps, buffers, properties."""

    def __init__(self, context_id: int, properties: Mapping[str, bytes]) -> None:
        self.context_id = context_id
        #: the context's properties (``proxy_get_property``; ``proxy_set_property`` adds)
        self.properties: dict[str, bytes] = dict(properties)
        self._maps: dict[int, HeaderMap] = {}
        self._buffers: dict[int, bytearray] = {}

    def _local_reply(self, reply: LocalReply, details: str) -> bool:
        return False

    def _continue(self, stream: StreamType) -> int:
        return _UNIMPLEMENTED

    def _close(self, stream: StreamType) -> int:
        return _UNIMPLEMENTED


class _Vm:
    """One instance of the module: its store, memory, exports and contexts."""

    def __init__(
        self,
        store: wasmtime.Store,
        instance: wasmtime.Instance,
        memory: wasmtime.Memory,
        allocate: Export,
        callbacks: dict[str, Export],
    ) -> None:
        self.store = store
        self.context = store_context(store)
        self.instance = instance
        self.memory = memory
        self.view = MemoryView(memory)
        self.allocate = allocate
        self.callbacks = callbacks
        self.root = _Context(_ROOT_ID, {})
        self.contexts: dict[int, _Context] = {_ROOT_ID: self.root}
        self.effective: _Context = self.root
        self.next_id = _ROOT_ID + 1
        self.failed = False
        self.tick_period: float | None = None
        self.next_tick: float | None = None
        #: the module's last ERROR/CRITICAL log line: an SDK logs why before it aborts
        self.last_error = ""

    def streams(self) -> int:
        return len(self.contexts) - 1

    # -- memory, as seen from inside a hostcall (``store``: the store's context) --

    def _span(self, store: StoreContext, ptr: int, size: int) -> int:
        address = self.view.address(store, ptr & _U32_MASK, size)
        if address is None:
            raise _BadMemory
        return address

    def read(self, store: StoreContext, ptr: int, size: int) -> bytes:
        size &= _U32_MASK
        if size == 0:
            return b""
        return ctypes.string_at(self._span(store, ptr, size), size)

    def write(self, store: StoreContext, ptr: int, data: bytes) -> None:
        if data:
            ctypes.memmove(self._span(store, ptr, len(data)), data, len(data))

    def put_u32(self, store: StoreContext, ptr: int, value: int) -> None:
        self.write(store, ptr, _U32.pack(value & _U32_MASK))

    def put_u64(self, store: StoreContext, ptr: int, value: int) -> None:
        self.write(store, ptr, _U64.pack(value & _U64_MASK))

    def copy_out(
        self,
        store: StoreContext,
        data: bytes,
        ptr_ptr: int,
        size_ptr: int,
        always: bool = False,
    ) -> None:
        """``data`` into memory the module allocates; its address and size at the pointers
        (an empty value is address 0, unless ``always``)."""
        address = 0
        if data or always:
            address = (self.allocate(store, len(data)) or 0) & _U32_MASK
            if address == 0 and data:
                raise _BadMemory
            self.write(store, address, data)
        self.put_u32(store, ptr_ptr, address)
        self.put_u32(store, size_ptr, len(data))


class _StreamContext(_Context):
    """What HTTP and network contexts share: calling back, pausing, ending."""

    _streams: tuple[StreamType, StreamType]

    def __init__(
        self, host: WasmFilterHost, vm: _Vm, context_id: int, properties: Mapping[str, bytes]
    ) -> None:
        super().__init__(context_id, properties)
        self._host = host
        self._vm = vm
        #: the module's own answer (``proxy_send_local_response``): check it first
        self.local_reply: LocalReply | None = None
        #: the module's ``response_code_details`` with its local reply
        self.local_reply_details = ""
        #: the module asked to close or reset the stream (``proxy_close_stream``)
        self.closed = False
        self.failed = False
        self._resumed: dict[StreamType, trio.Event] = {}
        self._done = False
        self._logged = False
        self._deleted = False

    def _event(self, stream: StreamType) -> trio.Event:
        event = self._resumed.get(stream)
        if event is None:
            event = self._resumed[stream] = trio.Event()
            event.set()
        return event

    def _call(self, name: str, *args: int) -> int | None:
        if self.failed:
            raise WasmTrap(f"{self._host.name}: an earlier callback of this context failed")
        func = self._vm.callbacks.get(name)
        if func is None:
            return None
        try:
            return self._host._invoke(self._vm, self, name, func, self.context_id, *args)
        except WasmError:
            self.failed = True
            raise

    def _on(self, name: str, stream: StreamType, *args: int) -> Action:
        result = self._call(name, *args)
        if not result and self.local_reply is None and not self.closed:
            return Action.CONTINUE
        # a local reply stops the stream here, as in Envoy, whatever the module returned
        if self.local_reply is None and not self.closed:
            self._resumed[stream] = trio.Event()
        return Action.PAUSE

    def _continue(self, stream: StreamType) -> int:
        if stream not in self._streams:
            return _UNIMPLEMENTED
        self._event(stream).set()
        return _OK

    def _close(self, stream: StreamType) -> int:
        self.closed = True
        for event in self._resumed.values():
            event.set()
        return _OK

    def _local_reply(self, reply: LocalReply, details: str) -> bool:
        self.local_reply = reply
        self.local_reply_details = details
        for event in self._resumed.values():
            event.set()
        return True

    def on_done(self) -> bool:
        """``proxy_on_done``: whether the module is done with the context."""
        self._done = True
        result = self._call("proxy_on_done")
        return result is None or result != 0

    def on_log(self) -> None:
        """``proxy_on_log``: the request's (connection's) last word, for access logs."""
        self._logged = True
        self._call("proxy_on_log")

    def delete(self) -> None:
        """The context ends: ``proxy_on_done`` and ``proxy_on_log`` if they were not called,
        then ``proxy_on_delete``. Idempotent; never raises (a failure here is counted and
        logged, and a failed context is not called again)."""
        if self._deleted:
            return
        self._deleted = True
        try:
            if not self.failed:
                if not self._done:
                    self.on_done()
                if not self._logged:
                    self.on_log()
                self._call("proxy_on_delete")
        except WasmError as exc:
            _LOGGER.warning("%s", exc)
        finally:
            self._maps.clear()
            self._buffers.clear()
            self._host._forget(self._vm, self)


class HttpContext(_StreamContext):
    """One request through the filter. Call its ``on_*`` methods in the request's order;
    each returns the module's ``Action``. After ``Action.PAUSE``, await
    ``request_resumed`` (or ``response_resumed``), then look at ``local_reply`` and
    ``closed``; a header map or body handed in stays the module's to edit (in place) until
    then. ``delete()`` when the request is over."""

    _streams = (StreamType.HTTP_REQUEST, StreamType.HTTP_RESPONSE)

    @property
    def request_resumed(self) -> trio.Event:
        """Set when a paused request may go on (``proxy_continue_stream``, a local reply,
        ``proxy_close_stream``); already set when the request is not paused."""
        return self._event(StreamType.HTTP_REQUEST)

    @property
    def response_resumed(self) -> trio.Event:
        return self._event(StreamType.HTTP_RESPONSE)

    def on_request_headers(self, headers: HeaderMap, end_of_stream: bool) -> Action:
        self._maps[MapType.HTTP_REQUEST_HEADERS] = headers
        return self._on(
            "proxy_on_request_headers",
            StreamType.HTTP_REQUEST,
            len(headers.fields),
            int(end_of_stream),
        )

    def on_request_body(self, body: bytearray, end_of_stream: bool) -> Action:
        """``body`` is the chunk (or, paused, all the host kept back): the module may
        replace any of it in place (``proxy_set_buffer_bytes``)."""
        self._buffers[BufferType.HTTP_REQUEST_BODY] = body
        return self._on(
            "proxy_on_request_body", StreamType.HTTP_REQUEST, len(body), int(end_of_stream)
        )

    def on_request_trailers(self, trailers: HeaderMap) -> Action:
        self._maps[MapType.HTTP_REQUEST_TRAILERS] = trailers
        return self._on("proxy_on_request_trailers", StreamType.HTTP_REQUEST, len(trailers.fields))

    def on_response_headers(self, headers: HeaderMap, end_of_stream: bool) -> Action:
        self._maps[MapType.HTTP_RESPONSE_HEADERS] = headers
        return self._on(
            "proxy_on_response_headers",
            StreamType.HTTP_RESPONSE,
            len(headers.fields),
            int(end_of_stream),
        )

    def on_response_body(self, body: bytearray, end_of_stream: bool) -> Action:
        self._buffers[BufferType.HTTP_RESPONSE_BODY] = body
        return self._on(
            "proxy_on_response_body", StreamType.HTTP_RESPONSE, len(body), int(end_of_stream)
        )

    def on_response_trailers(self, trailers: HeaderMap) -> Action:
        self._maps[MapType.HTTP_RESPONSE_TRAILERS] = trailers
        return self._on(
            "proxy_on_response_trailers", StreamType.HTTP_RESPONSE, len(trailers.fields)
        )


class NetworkContext(_StreamContext):
    """One TCP connection through the filter: downstream (client) and upstream data, each
    a ``bytearray`` the module may rewrite in place, and the two closes."""

    _streams = (StreamType.DOWNSTREAM, StreamType.UPSTREAM)

    @property
    def downstream_resumed(self) -> trio.Event:
        return self._event(StreamType.DOWNSTREAM)

    @property
    def upstream_resumed(self) -> trio.Event:
        return self._event(StreamType.UPSTREAM)

    def on_new_connection(self) -> Action:
        return self._on("proxy_on_new_connection", StreamType.DOWNSTREAM)

    def on_downstream_data(self, data: bytearray, end_of_stream: bool) -> Action:
        self._buffers[BufferType.DOWNSTREAM_DATA] = data
        return self._on(
            "proxy_on_downstream_data", StreamType.DOWNSTREAM, len(data), int(end_of_stream)
        )

    def on_upstream_data(self, data: bytearray, end_of_stream: bool) -> Action:
        self._buffers[BufferType.UPSTREAM_DATA] = data
        return self._on(
            "proxy_on_upstream_data", StreamType.UPSTREAM, len(data), int(end_of_stream)
        )

    def on_downstream_close(self, peer: PeerType = PeerType.REMOTE) -> None:
        self._call("proxy_on_downstream_connection_close", int(peer))

    def on_upstream_close(self, peer: PeerType = PeerType.REMOTE) -> None:
        self._call("proxy_on_upstream_connection_close", int(peer))


# -- the host --------------------------------------------------------------------------------

#: the callbacks the host makes, with their (parameters, results), all i32
_CALLBACKS: Final = {
    "_initialize": (0, 0),
    "_start": (0, 0),
    "main": (2, 1),
    "proxy_on_context_create": (2, 0),
    "proxy_on_vm_start": (2, 1),
    "proxy_on_configure": (2, 1),
    "proxy_on_tick": (1, 0),
    "proxy_on_done": (1, 1),
    "proxy_on_log": (1, 0),
    "proxy_on_delete": (1, 0),
    "proxy_on_request_headers": (3, 1),
    "proxy_on_request_body": (3, 1),
    "proxy_on_request_trailers": (2, 1),
    "proxy_on_response_headers": (3, 1),
    "proxy_on_response_body": (3, 1),
    "proxy_on_response_trailers": (2, 1),
    "proxy_on_new_connection": (1, 1),
    "proxy_on_downstream_data": (3, 1),
    "proxy_on_upstream_data": (3, 1),
    "proxy_on_downstream_connection_close": (2, 0),
    "proxy_on_upstream_connection_close": (2, 0),
}
_ALLOCATORS: Final = ("proxy_on_memory_allocate", "malloc")
_ABI_MARKERS: Final = ("proxy_abi_version_0_2_1", "proxy_abi_version_0_2_0")

_I = "i32"
_L = "i64"
#: (module, name) -> (params, results, WasmFilterHost method)
_IMPORTS: Final[dict[tuple[str, str], tuple[str, str, str]]] = {
    ("env", "proxy_log"): (_I * 3, _I, "_proxy_log"),
    ("env", "proxy_get_log_level"): (_I, _I, "_proxy_get_log_level"),
    ("env", "proxy_set_tick_period_milliseconds"): (_I, _I, "_proxy_set_tick_period"),
    ("env", "proxy_get_current_time_nanoseconds"): (_I, _I, "_proxy_get_time"),
    ("env", "proxy_get_property"): (_I * 4, _I, "_proxy_get_property"),
    ("env", "proxy_set_property"): (_I * 4, _I, "_proxy_set_property"),
    ("env", "proxy_continue_stream"): (_I, _I, "_proxy_continue_stream"),
    ("env", "proxy_close_stream"): (_I, _I, "_proxy_close_stream"),
    ("env", "proxy_send_local_response"): (_I * 8, _I, "_proxy_send_local_response"),
    ("env", "proxy_set_effective_context"): (_I, _I, "_proxy_set_effective_context"),
    ("env", "proxy_done"): ("", _I, "_proxy_done"),
    ("env", "proxy_get_header_map_value"): (_I * 5, _I, "_proxy_get_header_map_value"),
    ("env", "proxy_add_header_map_value"): (_I * 5, _I, "_proxy_add_header_map_value"),
    ("env", "proxy_replace_header_map_value"): (_I * 5, _I, "_proxy_replace_header_map_value"),
    ("env", "proxy_remove_header_map_value"): (_I * 3, _I, "_proxy_remove_header_map_value"),
    ("env", "proxy_get_header_map_pairs"): (_I * 3, _I, "_proxy_get_header_map_pairs"),
    ("env", "proxy_set_header_map_pairs"): (_I * 3, _I, "_proxy_set_header_map_pairs"),
    ("env", "proxy_get_header_map_size"): (_I * 2, _I, "_proxy_get_header_map_size"),
    ("env", "proxy_get_buffer_bytes"): (_I * 5, _I, "_proxy_get_buffer_bytes"),
    ("env", "proxy_set_buffer_bytes"): (_I * 5, _I, "_proxy_set_buffer_bytes"),
    ("env", "proxy_get_buffer_status"): (_I * 3, _I, "_proxy_get_buffer_status"),
    ("env", "proxy_define_metric"): (_I * 4, _I, "_proxy_define_metric"),
    ("env", "proxy_increment_metric"): (_I + _L, _I, "_proxy_increment_metric"),
    ("env", "proxy_record_metric"): (_I + _L, _I, "_proxy_record_metric"),
    ("env", "proxy_get_metric"): (_I * 2, _I, "_proxy_get_metric"),
    ("env", "proxy_get_shared_data"): (_I * 5, _I, "_proxy_get_shared_data"),
    ("env", "proxy_set_shared_data"): (_I * 5, _I, "_proxy_set_shared_data"),
}
for _wasi in ("wasi_unstable", "wasi_snapshot_preview1"):
    _IMPORTS[(_wasi, "proc_exit")] = (_I, "", "_wasi_proc_exit")
    _IMPORTS[(_wasi, "fd_write")] = (_I * 4, _I, "_wasi_fd_write")
    _IMPORTS[(_wasi, "clock_time_get")] = (_I + _L + _I, _I, "_wasi_clock_time_get")
    _IMPORTS[(_wasi, "random_get")] = (_I * 2, _I, "_wasi_random_get")
    _IMPORTS[(_wasi, "environ_sizes_get")] = (_I * 2, _I, "_wasi_sizes_get")
    _IMPORTS[(_wasi, "environ_get")] = (_I * 2, _I, "_wasi_nothing")
    _IMPORTS[(_wasi, "args_sizes_get")] = (_I * 2, _I, "_wasi_sizes_get")
    _IMPORTS[(_wasi, "args_get")] = (_I * 2, _I, "_wasi_nothing")
    _IMPORTS[(_wasi, "sched_yield")] = ("", _I, "_wasi_sched_yield")


def provided_imports() -> list[str]:
    """Every function triogate provides a module, as ``module.name``."""
    return sorted(f"{module}.{name}" for module, name in _IMPORTS)


def _valtypes(spec: str) -> list[wasmtime.ValType]:
    return [
        wasmtime.ValType.i32() if spec[i : i + 3] == _I else wasmtime.ValType.i64()
        for i in range(0, len(spec), 3)
    ]


def _signature(params: list[wasmtime.ValType], results: list[wasmtime.ValType]) -> str:
    return f"({', '.join(map(str, params))}) -> ({', '.join(map(str, results))})"


class WasmFilterHost:
    """A proxy-wasm module loaded for one filter config: its instance, root context, ticks.

    Build it with ``load``. A new config (``path``, ``config``) is a new host: the adapter
    swaps which host new requests get, and ``close()``s the old one, which finishes the
    contexts it has (``serve_ticks`` keeps ticking them) and then lets its instance go.
    """

    def __init__(
        self,
        module: wasmtime.Module,
        *,
        name: str,
        config: bytes,
        limits: WasmLimits,
        metrics: MetricsSink,
        log: WasmLog,
        log_level: LogLevel,
        root_id: str,
        vm_id: str,
        vm_config: bytes,
    ) -> None:
        self.name = name
        self.config = config
        self.limits = limits
        self.metrics = metrics
        self._log = log
        self._log_level = int(log_level)
        self.vm_id = vm_id
        self.vm_config = vm_config
        self._module = module
        self._runtime = _runtime()
        self._deadline_ticks = limits.deadline_ticks
        self._failure_metrics = {
            WasmTrap: metrics.define(MetricKind.COUNTER, "wasm.trap"),
            WasmTimeout: metrics.define(MetricKind.COUNTER, "wasm.timeout"),
            WasmOutOfMemory: metrics.define(MetricKind.COUNTER, "wasm.oom"),
        }
        self.properties: dict[str, bytes] = {
            "plugin_root_id": root_id.encode(),
            "plugin_name": name.encode(),
            "plugin_vm_id": vm_id.encode(),
        }
        #: times a fresh instance replaced one that failed, and the last one's seconds
        self.reinstantiations = 0
        self.last_instantiation_s = 0.0
        self._closed = False
        self._ticks_changed = trio.Event()
        self._calling: _Vm | None = None
        self._linker = self._make_linker(module)
        self._vm = self._instantiate()
        self._vms = [self._vm]

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        config: bytes = b"",
        *,
        limits: WasmLimits | None = None,
        metrics: MetricsSink | None = None,
        log: WasmLog | None = None,
        log_level: LogLevel = LogLevel.INFO,
        root_id: str = "",
        vm_id: str = "",
        vm_config: bytes = b"",
    ) -> WasmFilterHost:
        """The module at ``path`` compiled (once per process), instantiated, its root
        context started and configured with ``config``.

        ``root_id`` is Envoy's: the SDKs pick their root context by it (the AssemblyScript
        SDK refuses to start without a registered one). Raises ``WasmLoadError`` naming
        what failed: reading, compiling, an import triogate does not provide, a trap or
        ``false`` from ``proxy_on_vm_start``/``proxy_on_configure``.
        """
        module = compile_module(path)
        return cls(
            module,
            name=str(path),
            config=bytes(config),
            limits=limits if limits is not None else WasmLimits(),
            metrics=metrics if metrics is not None else DictMetricsSink(),
            log=log if log is not None else _log_to_logging,
            log_level=log_level,
            root_id=root_id,
            vm_id=vm_id,
            vm_config=bytes(vm_config),
        )

    # -- contexts --

    def new_http_context(self, properties: Mapping[str, bytes] | None = None) -> HttpContext:
        """A stream context for one request (``proxy_on_context_create``); ``properties``
        answer ``proxy_get_property`` (see ``http_properties``)."""
        vm = self._vm_for_new_context()
        context = HttpContext(self, vm, vm.next_id, properties or {})
        self._create(vm, context)
        return context

    def new_network_context(self, properties: Mapping[str, bytes] | None = None) -> NetworkContext:
        """A stream context for one TCP connection; call ``on_new_connection`` first."""
        vm = self._vm_for_new_context()
        context = NetworkContext(self, vm, vm.next_id, properties or {})
        self._create(vm, context)
        return context

    def _create(self, vm: _Vm, context: _StreamContext) -> None:
        vm.next_id += 1
        vm.contexts[context.context_id] = context
        create = vm.callbacks.get("proxy_on_context_create")
        if create is not None:
            try:
                self._invoke(
                    vm, context, "proxy_on_context_create", create, context.context_id, _ROOT_ID
                )
            except WasmError:
                context.failed = True
                context.delete()
                raise

    def _vm_for_new_context(self) -> _Vm:
        if self._closed:
            raise RuntimeError(f"{self.name}: the host is closed; new contexts go to its successor")
        self.renew()
        return self._vm

    def renew(self) -> bool:
        """A fresh instance in place of a failed one, now (whether one was made): an
        adapter calls it at the end of the request that failed, so that the next
        request does not pay for it. ``WasmLoadError`` if the fresh one does not start
        (the next context tries again)."""
        if not self._vm.failed or self._closed:
            return False
        fresh = self._instantiate()
        self.reinstantiations += 1
        old, self._vm = self._vm, fresh
        self._vms.append(fresh)
        self._retire(old)
        self._ticks_changed.set()
        return True

    def _forget(self, vm: _Vm, context: _StreamContext) -> None:
        vm.contexts.pop(context.context_id, None)
        if vm.effective is context:
            vm.effective = vm.root
        self._retire(vm)

    def _retire(self, vm: _Vm) -> None:
        """Lets an instance go once it is not the current one and serves no context."""
        if (vm is not self._vm or self._closed) and vm.streams() == 0 and vm in self._vms:
            self._vms.remove(vm)
            self._ticks_changed.set()

    def close(self) -> None:
        """No new contexts; the instance goes once its contexts are deleted."""
        self._closed = True
        self._retire(self._vm)
        self._ticks_changed.set()

    @property
    def callbacks(self) -> frozenset[str]:
        """The callbacks the module exports (``proxy_on_request_headers``...): an adapter
        calls only what a module has."""
        return frozenset(self._vm.callbacks)

    @property
    def closed(self) -> bool:
        return self._closed

    def live_contexts(self) -> int:
        """Stream contexts not deleted yet, on every instance."""
        return sum(vm.streams() for vm in self._vms)

    # -- ticks --

    async def serve_ticks(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Calls ``proxy_on_tick`` at the period each instance's root context set, until the
        host is closed and its last context deleted. Start it in the listener's nursery.
        A tick that fails is counted and logged; that instance ticks no more."""
        task_status.started()
        while self._vms:
            self._ticks_changed = trio.Event()
            now = trio.current_time()
            wake_at = math.inf
            for vm in list(self._vms):
                if vm.tick_period is None:
                    vm.next_tick = None
                    continue
                if vm.next_tick is None:
                    vm.next_tick = now + vm.tick_period
                elif vm.next_tick <= now:
                    vm.next_tick = now + vm.tick_period
                    self._tick(vm)
                if vm.next_tick is not None:
                    wake_at = min(wake_at, vm.next_tick)
            with trio.move_on_at(wake_at):
                await self._ticks_changed.wait()

    def _tick(self, vm: _Vm) -> None:
        on_tick = vm.callbacks.get("proxy_on_tick")
        if on_tick is None:
            vm.tick_period = None
            return
        try:
            self._invoke(vm, vm.root, "proxy_on_tick", on_tick, _ROOT_ID)
        except WasmError as exc:
            vm.tick_period = None
            _LOGGER.warning("%s", exc)

    # -- calling in --

    def _invoke(
        self, vm: _Vm, context: _Context, callback: str, func: Export, *args: int
    ) -> int | None:
        """One callback under the deadline; a failure raised as the ``WasmTrap`` it is."""
        runtime = self._runtime
        calling, self._calling = self._calling, vm
        vm.effective = context
        vm.store.set_epoch_deadline(self._deadline_ticks)
        runtime.arm()
        try:
            result = func(vm.context, *args)
        except (wasmtime.WasmtimeError, _ProcExit) as exc:
            raise self._failure(vm, callback, exc) from None
        except Exception as exc:  # a hostcall's own bug: the module's call fails, not us
            raise self._failure(vm, callback, exc) from exc
        finally:
            runtime.disarm()
            vm.effective = vm.root
            self._calling = calling
        return result

    def _failure(self, vm: _Vm, callback: str, exc: Exception) -> WasmTrap:
        vm.failed = True
        kind: type[WasmTrap] = WasmTrap
        if isinstance(exc, wasmtime.Trap) and exc.trap_code is wasmtime.TrapCode.INTERRUPT:
            kind = WasmTimeout
            reason = f"ran past max_ms_per_call ({self.limits.max_ms_per_call:g} ms)"
        else:
            reason = f"trapped: {_first_line(exc)}"
            try:
                memory = vm.memory.data_len(vm.store)
            except wasmtime.WasmtimeError:
                memory = 0
            if memory * 2 >= self.limits.memory_bytes:
                kind = WasmOutOfMemory
                reason = (
                    f"ran out of memory ({memory // 1024} KiB of max_memory_mb "
                    f"{self.limits.max_memory_mb}): {_first_line(exc)}"
                )
        try:
            self.metrics.increment(self._failure_metrics[kind], 1)
        except (KeyError, ValueError):
            pass
        said = f" (it said: {vm.last_error})" if vm.last_error else ""
        return kind(f"{self.name}: {callback} {reason}{said}")

    def _instantiate(self) -> _Vm:
        started = time.perf_counter()
        runtime = self._runtime
        store = wasmtime.Store(runtime.engine)
        store.set_limits(memory_size=self.limits.memory_bytes)
        store.set_epoch_deadline(self._deadline_ticks)
        runtime.arm()
        try:
            instance = self._linker.instantiate(store, self._module)
        except _HostcallRefused:
            raise WasmLoadError(
                f"{self.name}: calls the host from its start function, before any context exists"
            ) from None
        except (wasmtime.WasmtimeError, _ProcExit) as exc:
            raise WasmLoadError(
                f"{self.name}: cannot be instantiated: {_first_line(exc)}"
            ) from None
        finally:
            runtime.disarm()
        exports = instance.exports(store)
        memory = exports.get("memory")
        if not isinstance(memory, wasmtime.Memory):
            raise WasmLoadError(f"{self.name}: exports no memory")
        allocator = next((name for name in _ALLOCATORS if name in exports), None)
        if allocator is None:
            raise WasmLoadError(f"{self.name}: exports neither {' nor '.join(_ALLOCATORS)}")
        allocate = self._export(store, allocator, exports[allocator], (1, 1))
        callbacks = {
            name: self._export(store, name, exports[name], arity)
            for name, arity in _CALLBACKS.items()
            if name in exports
        }
        vm = _Vm(store, instance, memory, allocate, callbacks)
        try:
            self._start(vm)
        except WasmError as exc:
            raise WasmLoadError(str(exc)) from None
        self.last_instantiation_s = time.perf_counter() - started
        return vm

    def _export(
        self, store: wasmtime.Store, name: str, export: object, arity: tuple[int, int]
    ) -> Export:
        """``name`` as the host calls it, or ``WasmLoadError`` when its type is not the ABI's."""
        wanted = f"{arity[0]} i32 parameters and {arity[1]} i32 result(s)"
        if not isinstance(export, wasmtime.Func):
            raise WasmLoadError(f"{self.name}: exports {name} as something else than a function")
        try:
            callback = Export(export, store)
        except TypeError:
            callback = None
        if callback is None or callback.arity != arity:
            raise WasmLoadError(
                f"{self.name}: exports {name} as {export.type(store)}; the ABI's takes {wanted}"
            )
        return callback

    def _start(self, vm: _Vm) -> None:
        callbacks = vm.callbacks
        root = vm.root
        if "_initialize" in callbacks:
            self._invoke(vm, root, "_initialize", callbacks["_initialize"])
            if "main" in callbacks:
                self._invoke(vm, root, "main", callbacks["main"], 0, 0)
        elif "_start" in callbacks:
            self._invoke(vm, root, "_start", callbacks["_start"])
        if "proxy_on_context_create" in callbacks:
            self._invoke(
                vm,
                root,
                "proxy_on_context_create",
                callbacks["proxy_on_context_create"],
                _ROOT_ID,
                0,
            )
        for callback, size in (
            ("proxy_on_vm_start", len(self.vm_config)),
            ("proxy_on_configure", len(self.config)),
        ):
            func = callbacks.get(callback)
            if func is not None and not self._invoke(vm, root, callback, func, _ROOT_ID, size):
                said = f" (it said: {vm.last_error})" if vm.last_error else ""
                raise WasmLoadError(f"{self.name}: {callback} returned false{said}")

    def _make_linker(self, module: wasmtime.Module) -> wasmtime.Linker:
        """A linker with every function the module imports, or ``WasmLoadError`` naming
        those triogate does not provide (or provides with another signature)."""
        exports = {export.name for export in module.exports}
        if not exports.intersection(_ABI_MARKERS):
            raise WasmLoadError(
                f"{self.name}: not a proxy-wasm module of ABI 0.2.x "
                f"(exports neither {' nor '.join(_ABI_MARKERS)})"
            )
        missing: list[str] = []
        mismatched: list[str] = []
        linker = wasmtime.Linker(self._runtime.engine)
        for imported in module.imports:
            key = (imported.module, imported.name or "")
            full = f"{imported.module}.{imported.name}"
            provided = _IMPORTS.get(key)
            if provided is None:
                later = " (not implemented yet)" if key[1] in NOT_IMPLEMENTED else ""
                missing.append(full + later)
                continue
            params, results, method = provided
            ours = wasmtime.FuncType(_valtypes(params), _valtypes(results))
            theirs = imported.type
            if not isinstance(theirs, wasmtime.FuncType) or _signature(
                theirs.params, theirs.results
            ) != _signature(ours.params, ours.results):
                mismatched.append(
                    f"{full} as {theirs} (triogate's is {_signature(ours.params, ours.results)})"
                )
                continue
            define(linker, key[0], key[1], ours, _hostcall(self, method))
        if missing:
            raise WasmLoadError(
                f"{self.name}: imports {', '.join(missing)}, which triogate does not provide"
            )
        if mismatched:
            raise WasmLoadError(f"{self.name}: imports {'; '.join(mismatched)}")
        return linker

    # -- hostcalls: the store's context first, then the ABI's arguments as wasm gives them --

    def _proxy_log(self, store: StoreContext, level: int, ptr: int, size: int) -> int:
        if not 0 <= level <= LogLevel.CRITICAL:
            return _BAD_ARGUMENT
        vm = self._vm_of(store)
        message = vm.read(store, ptr, size).decode("utf-8", "replace")
        if level >= LogLevel.ERROR:
            vm.last_error = message
        if level >= self._log_level:
            self._log(LogLevel(level), message)
        return _OK

    def _proxy_get_log_level(self, store: StoreContext, ptr: int) -> int:
        self._vm_of(store).put_u32(store, ptr, self._log_level)
        return _OK

    def _proxy_set_tick_period(self, store: StoreContext, period_ms: int) -> int:
        vm = self._vm_of(store)
        period_ms &= _U32_MASK
        vm.tick_period = period_ms / 1000 if period_ms else None
        vm.next_tick = None
        self._ticks_changed.set()
        return _OK

    def _proxy_get_time(self, store: StoreContext, ptr: int) -> int:
        self._vm_of(store).put_u64(store, ptr, time.time_ns())
        return _OK

    def _proxy_get_property(
        self, store: StoreContext, path_ptr: int, path_size: int, value_pp: int, size_p: int
    ) -> int:
        vm = self._vm_of(store)
        name = _property_name(vm.read(store, path_ptr, path_size))
        value = vm.effective.properties.get(name)
        if value is None:
            value = self.properties.get(name)
        if value is None:
            return _NOT_FOUND
        vm.copy_out(store, value, value_pp, size_p)
        return _OK

    def _proxy_set_property(
        self, store: StoreContext, path_ptr: int, path_size: int, value_ptr: int, size: int
    ) -> int:
        vm = self._vm_of(store)
        name = _property_name(vm.read(store, path_ptr, path_size))
        vm.effective.properties[name] = vm.read(store, value_ptr, size)
        return _OK

    def _proxy_continue_stream(self, store: StoreContext, stream: int) -> int:
        if not 0 <= stream <= StreamType.UPSTREAM:
            return _BAD_ARGUMENT
        return self._vm_of(store).effective._continue(StreamType(stream))

    def _proxy_close_stream(self, store: StoreContext, stream: int) -> int:
        if not 0 <= stream <= StreamType.UPSTREAM:
            return _BAD_ARGUMENT
        return self._vm_of(store).effective._close(StreamType(stream))

    def _proxy_send_local_response(
        self,
        store: StoreContext,
        status: int,
        details_ptr: int,
        details_size: int,
        body_ptr: int,
        body_size: int,
        headers_ptr: int,
        headers_size: int,
        grpc_status: int,
    ) -> int:
        vm = self._vm_of(store)
        details = vm.read(store, details_ptr, details_size).decode("utf-8", "replace")
        body = vm.read(store, body_ptr, body_size)
        try:
            pairs = decode_pairs(vm.read(store, headers_ptr, headers_size))
            reply = LocalReply(
                status=status,
                body=body,
                headers=[(n.decode("latin-1"), v.decode("latin-1")) for n, v in pairs],
            )
        except ValueError:
            return _BAD_ARGUMENT
        if not vm.effective._local_reply(reply, details):
            return _BAD_ARGUMENT
        return _OK

    def _proxy_set_effective_context(self, store: StoreContext, context_id: int) -> int:
        vm = self._vm_of(store)
        context = vm.contexts.get(context_id & _U32_MASK)
        if context is None:
            return _BAD_ARGUMENT
        vm.effective = context
        return _OK

    def _proxy_done(self, store: StoreContext) -> int:
        # contexts end when the adapter deletes them: nothing is ever pending here
        return _NOT_FOUND

    def _map(self, vm: _Vm, map_type: int) -> HeaderMap | None:
        return vm.effective._maps.get(map_type)

    def _proxy_get_header_map_value(
        self,
        store: StoreContext,
        map_type: int,
        key_ptr: int,
        key_size: int,
        value_pp: int,
        size_p: int,
    ) -> int:
        vm = self._vm_of(store)
        headers = self._map(vm, map_type)
        if headers is None:
            return _BAD_ARGUMENT
        value = headers.get_bytes(vm.read(store, key_ptr, key_size))
        if value is None:
            return _NOT_FOUND
        vm.copy_out(store, value, value_pp, size_p)
        return _OK

    def _proxy_add_header_map_value(
        self,
        store: StoreContext,
        map_type: int,
        key_ptr: int,
        key_size: int,
        value_ptr: int,
        value_size: int,
    ) -> int:
        return self._put_header(store, map_type, key_ptr, key_size, value_ptr, value_size, True)

    def _proxy_replace_header_map_value(
        self,
        store: StoreContext,
        map_type: int,
        key_ptr: int,
        key_size: int,
        value_ptr: int,
        value_size: int,
    ) -> int:
        return self._put_header(store, map_type, key_ptr, key_size, value_ptr, value_size, False)

    def _put_header(
        self,
        store: StoreContext,
        map_type: int,
        key_ptr: int,
        key_size: int,
        value_ptr: int,
        value_size: int,
        add: bool,
    ) -> int:
        """``add`` (another value) or replace (the value) a header of a map."""
        vm = self._vm_of(store)
        headers = self._map(vm, map_type)
        if headers is None:
            return _BAD_ARGUMENT
        name, value = vm.read(store, key_ptr, key_size), vm.read(store, value_ptr, value_size)
        if add:
            headers.add_bytes(name, value)
        else:
            headers.set_bytes(name, value)
        return _OK

    def _proxy_remove_header_map_value(
        self, store: StoreContext, map_type: int, key_ptr: int, key_size: int
    ) -> int:
        vm = self._vm_of(store)
        headers = self._map(vm, map_type)
        if headers is None:
            return _BAD_ARGUMENT
        headers.remove_bytes(vm.read(store, key_ptr, key_size))
        return _OK

    def _proxy_get_header_map_pairs(
        self, store: StoreContext, map_type: int, data_pp: int, size_p: int
    ) -> int:
        vm = self._vm_of(store)
        headers = self._map(vm, map_type)
        if headers is None:
            return _BAD_ARGUMENT
        vm.copy_out(store, encode_pairs(headers.fields), data_pp, size_p)
        return _OK

    def _proxy_set_header_map_pairs(
        self, store: StoreContext, map_type: int, data_ptr: int, size: int
    ) -> int:
        vm = self._vm_of(store)
        headers = self._map(vm, map_type)
        if headers is None:
            return _BAD_ARGUMENT
        try:
            pairs = decode_pairs(vm.read(store, data_ptr, size))
        except ValueError:
            return _BAD_ARGUMENT
        headers.replace_all(pairs)
        return _OK

    def _proxy_get_header_map_size(self, store: StoreContext, map_type: int, size_p: int) -> int:
        vm = self._vm_of(store)
        headers = self._map(vm, map_type)
        if headers is None:
            return _BAD_ARGUMENT
        vm.put_u32(store, size_p, len(encode_pairs(headers.fields)))
        return _OK

    def _buffer(self, vm: _Vm, buffer_type: int) -> bytes | bytearray | None:
        if buffer_type == BufferType.PLUGIN_CONFIGURATION:
            return self.config
        if buffer_type == BufferType.VM_CONFIGURATION:
            return self.vm_config
        return vm.effective._buffers.get(buffer_type)

    def _proxy_get_buffer_bytes(
        self,
        store: StoreContext,
        buffer_type: int,
        start: int,
        length: int,
        data_pp: int,
        size_p: int,
    ) -> int:
        vm = self._vm_of(store)
        if not 0 <= buffer_type <= BufferType.FOREIGN_FUNCTION_ARGUMENTS:
            return _BAD_ARGUMENT
        buffer = self._buffer(vm, buffer_type)
        if buffer is None:
            return _NOT_FOUND
        start &= _U32_MASK
        length &= _U32_MASK
        # even an empty slice is given an allocation: the AssemblyScript SDK reads the
        # pointer as an ArrayBuffer whatever the size (and traps on a null one)
        vm.copy_out(store, bytes(buffer[start : start + length]), data_pp, size_p, always=True)
        return _OK

    def _proxy_set_buffer_bytes(
        self,
        store: StoreContext,
        buffer_type: int,
        start: int,
        length: int,
        data_ptr: int,
        size: int,
    ) -> int:
        vm = self._vm_of(store)
        if not 0 <= buffer_type <= BufferType.FOREIGN_FUNCTION_ARGUMENTS:
            return _BAD_ARGUMENT
        buffer = self._buffer(vm, buffer_type)
        if buffer is None:
            return _NOT_FOUND
        if not isinstance(buffer, bytearray):
            return _BAD_ARGUMENT  # the configurations are read-only
        start &= _U32_MASK
        length &= _U32_MASK
        # start 0 and size 0 prepends, a start past the end appends, anything else replaces
        buffer[start : start + length] = vm.read(store, data_ptr, size)
        return _OK

    def _proxy_get_buffer_status(
        self, store: StoreContext, buffer_type: int, length_p: int, flags_p: int
    ) -> int:
        vm = self._vm_of(store)
        if not 0 <= buffer_type <= BufferType.FOREIGN_FUNCTION_ARGUMENTS:
            return _BAD_ARGUMENT
        buffer = self._buffer(vm, buffer_type)
        if buffer is None:
            return _NOT_FOUND
        vm.put_u32(store, length_p, len(buffer))
        vm.put_u32(store, flags_p, 0)
        return _OK

    def _proxy_define_metric(
        self, store: StoreContext, kind: int, name_ptr: int, name_size: int, id_p: int
    ) -> int:
        if not 0 <= kind <= MetricKind.HISTOGRAM:
            return _BAD_ARGUMENT
        vm = self._vm_of(store)
        name = vm.read(store, name_ptr, name_size).decode("utf-8", "replace")
        try:
            metric_id = self.metrics.define(MetricKind(kind), name)
        except ValueError:
            return _BAD_ARGUMENT
        vm.put_u32(store, id_p, metric_id)
        return _OK

    def _proxy_increment_metric(self, store: StoreContext, metric_id: int, delta: int) -> int:
        return _metric_call(self.metrics.increment, metric_id & _U32_MASK, delta)

    def _proxy_record_metric(self, store: StoreContext, metric_id: int, value: int) -> int:
        return _metric_call(self.metrics.record, metric_id & _U32_MASK, value & _U64_MASK)

    def _proxy_get_metric(self, store: StoreContext, metric_id: int, value_p: int) -> int:
        try:
            value = self.metrics.get(metric_id & _U32_MASK)
        except KeyError:
            return _NOT_FOUND
        self._vm_of(store).put_u64(store, value_p, value)
        return _OK

    def _proxy_get_shared_data(
        self,
        store: StoreContext,
        key_ptr: int,
        key_size: int,
        value_pp: int,
        size_p: int,
        cas_p: int,
    ) -> int:
        vm = self._vm_of(store)
        entry = _SHARED_DATA.get((self.vm_id, vm.read(store, key_ptr, key_size)))
        if entry is None:
            return _NOT_FOUND
        vm.copy_out(store, entry[0], value_pp, size_p)
        vm.put_u32(store, cas_p, entry[1])
        return _OK

    def _proxy_set_shared_data(
        self,
        store: StoreContext,
        key_ptr: int,
        key_size: int,
        value_ptr: int,
        value_size: int,
        cas: int,
    ) -> int:
        vm = self._vm_of(store)
        key = (self.vm_id, vm.read(store, key_ptr, key_size))
        current = _SHARED_DATA.get(key, (b"", 0))[1]
        cas &= _U32_MASK
        if cas and cas != current:
            return _CAS_MISMATCH
        _SHARED_DATA[key] = (vm.read(store, value_ptr, value_size), (current + 1) & _U32_MASK or 1)
        return _OK

    def _wasi_proc_exit(self, store: StoreContext, code: int) -> None:
        raise _ProcExit(code)

    def _wasi_fd_write(
        self, store: StoreContext, fd: int, iovs: int, iovs_len: int, written_p: int
    ) -> int:
        if fd not in (1, 2):
            return _EBADF
        vm = self._vm_of(store)
        try:
            chunks = []
            for i in range(iovs_len & _U32_MASK):
                ptr, size = struct.unpack("<II", vm.read(store, iovs + 8 * i, 8))
                chunks.append(vm.read(store, ptr, size))
            data = b"".join(chunks)
            vm.put_u32(store, written_p, len(data))
        except _BadMemory:
            return _EFAULT
        level = LogLevel.INFO if fd == 1 else LogLevel.ERROR
        message = data.decode("utf-8", "replace").rstrip("\n")
        if level >= LogLevel.ERROR:
            vm.last_error = message
        if level >= self._log_level and message:
            self._log(level, message)
        return _ESUCCESS

    def _wasi_clock_time_get(
        self, store: StoreContext, clock: int, precision: int, time_p: int
    ) -> int:
        if clock == 0:
            now = time.time_ns()
        elif clock == 1:
            now = time.monotonic_ns()
        else:
            return _ENOTSUP
        try:
            self._vm_of(store).put_u64(store, time_p, now)
        except _BadMemory:
            return _EFAULT
        return _ESUCCESS

    def _wasi_random_get(self, store: StoreContext, ptr: int, size: int) -> int:
        try:
            self._vm_of(store).write(store, ptr, os.urandom(size & _U32_MASK))
        except _BadMemory:
            return _EFAULT
        return _ESUCCESS

    def _wasi_sizes_get(self, store: StoreContext, count_p: int, size_p: int) -> int:
        # no environment and no arguments: the spec asks for zeros
        vm = self._vm_of(store)
        try:
            vm.put_u32(store, count_p, 0)
            vm.put_u32(store, size_p, 0)
        except _BadMemory:
            return _EFAULT
        return _ESUCCESS

    def _wasi_nothing(self, store: StoreContext, first: int, second: int) -> int:
        return _ESUCCESS

    def _wasi_sched_yield(self, store: StoreContext) -> int:
        return _ESUCCESS

    def _vm_of(self, store: StoreContext) -> _Vm:
        # calls never overlap (one thread; no hostcall calls a callback), so the instance
        # a hostcall comes from is the one ``_invoke`` is running
        vm = self._calling
        if vm is None:
            raise _HostcallRefused  # from the module's start function, before any context
        return vm


def _property_name(path: bytes) -> str:
    # Envoy's paths are segments joined by NULs ("request\0path"); SDKs also send dots
    return path.rstrip(b"\0").replace(b"\0", b".").decode("utf-8", "replace")


def _metric_call(method: Callable[[int, int], None], metric_id: int, value: int) -> int:
    try:
        method(metric_id, value)
    except KeyError:
        return _NOT_FOUND
    except ValueError:
        return _BAD_ARGUMENT
    return _OK


def _hostcall(host: WasmFilterHost, name: str) -> Callable[..., Any]:
    """The hostcall ``name`` of ``host``, as the linker calls it.

    It holds the host weakly: wasmtime-py's hostcall table is global, and a bound method
    there would keep every host ever loaded, with its instances, alive. A pointer outside
    the module's memory answers INVALID_MEMORY_ACCESS, as the ABI says, not a trap.
    """
    method = getattr(type(host), name)
    owner = weakref.ref(host)

    def hostcall(store: StoreContext, *args: int) -> Any:
        target = owner()
        if target is None:
            raise _HostcallRefused
        try:
            return method(target, store, *args)
        except _BadMemory:
            return _INVALID_MEMORY

    return hostcall


def _log_to_logging(level: LogLevel, message: str) -> None:
    _LOGGER.log(_LOGGING_LEVELS[level], "%s", message)
