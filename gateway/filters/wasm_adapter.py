"""``wasm:`` filter entries in the chains: the proxy-wasm host (``gateway.filters.wasm``)
driven by the HTTP filter chain (``chain.py``) and the network filter chain
(``network.py``).

Theory of operation.

*Hosts, per process, per config version.* ``live_host`` keeps the process's hosts by
``(pid, path, file mtime and size, config, limits, root_id, vm_id)``: the config's
validation loads a module (a module that does not load is a config error naming the
field), the publication of the same config finds that host again, and an entry that
did not change across config versions keeps its host (its instance, its root context,
its tick). Once the control plane has published a new ``DataPlane``, ``close_unused``
``close()``s the hosts no chain of it uses: requests that began on them finish there,
new requests get the new host (a new ``path`` or ``config`` swaps with the data plane,
in one assignment). A host loaded for a config that was never published (refused for
another reason) goes at the next publication.

*Ticks.* A host's ``serve_ticks`` runs while it lives in a trio *system task*
(``trio.lowlevel.spawn_system_task``), started when the host is first handed out inside
a trio run, and wrapped so that it never raises (a system task that raises would crash
the run). A system task, and not a listener's nursery, because a host belongs to no one
listener: listeners of a config share it, it outlives the config version it came with
while its in-flight requests finish, and ``serve_ticks`` returns by itself once the
host is closed and its last context deleted. A host loaded outside a run (the CLI's
``validate``) gets its tick task in the first run that hands it out.

*Requests.* A ``WasmHttpFilter`` makes its ``HttpContext`` in its first hook (so that a
``WasmLoadError`` from a fresh instance, after one trapped, is that hook's failure, which
the chain handles). ``Action.PAUSE`` from a headers or trailers hook is awaited
(``request_resumed``/``response_resumed``: a tick's ``proxy_continue_stream``, a local
reply, ``proxy_close_stream``); from a body hook before the end of the stream it is
``BUFFER`` (proxy-wasm's ``StopIterationAndBuffer``: the chain gives the whole body again
with the next piece). A module's local reply is returned (from a body hook too: the
chain turns it into ``FilterReplied``); its ``proxy_close_stream`` fails the request.
``on_done`` deletes the context (``proxy_on_done``, ``proxy_on_log``,
``proxy_on_delete``) and, when it failed, has the host make its fresh instance then
(``renew``): the request that failed pays for it, not the next one. A ``WasmTrap``
(``WasmTimeout``, ``WasmOutOfMemory``) leaves the hook as it is: its ``stat`` names the
filter's ``wasm.*`` counter, and the chain answers 500 or skips the filter
(``fail_open``).

*Connections.* A ``WasmNetworkFilter`` makes its ``NetworkContext`` in
``on_new_connection``; data both ways goes through the module as a ``bytearray`` it may
edit in place; ``Action.PAUSE`` holds the data (given again, with what comes next, on the
next piece); ``on_close`` tells the module both sides closed and deletes the context.
A failure ends the connection.

*Metrics.* ``RegistryMetricsSink`` puts what a module defines in the stats registry's
``wasmcustom.*`` (``gateway.observe.stats.custom``) once its chains are built; the
host's own failure counters stay in the sink (the chains count them per filter).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from gateway.errors import FilterReplied, WasmError
from gateway.filters.api import HeaderMap, LocalReply
from gateway.filters.chain import BUFFER, Buffer
from gateway.filters.wasm import (
    Action,
    HttpContext,
    MetricKind,
    NetworkContext,
    WasmFilterHost,
    WasmLimits,
    http_properties,
)
from gateway.observe.stats.custom import COUNTER, GAUGE, HISTOGRAM, CustomStats

if TYPE_CHECKING:
    from gateway.config.model import WasmFilter
    from gateway.dataplane import DataPlane
    from gateway.http1.events import RequestReceived
    from gateway.routing import RouteEntry

__all__ = [
    "RegistryMetricsSink",
    "WasmHttpFilter",
    "WasmHttpFilterFactory",
    "WasmNetworkFilter",
    "WasmNetworkFilterFactory",
    "close_unused",
    "live_host",
]

log = logging.getLogger("triogate.filters.wasm")

#: the host's own counters (``metrics.py``): counted per filter by the chains instead
_HOST_METRICS: Final = frozenset({"wasm.trap", "wasm.timeout", "wasm.oom"})

_OWN: Final = "own"

_KINDS: Final = {
    MetricKind.COUNTER: COUNTER,
    MetricKind.GAUGE: GAUGE,
    MetricKind.HISTOGRAM: HISTOGRAM,
}

#: the chain's hook, by the module's callback
_HTTP_HOOKS: Final = {
    "proxy_on_request_headers": "on_request_headers",
    "proxy_on_request_body": "on_request_body",
    "proxy_on_request_trailers": "on_request_trailers",
    "proxy_on_response_headers": "on_response_headers",
    "proxy_on_response_body": "on_response_body",
    "proxy_on_response_trailers": "on_response_trailers",
}
_NETWORK_HOOKS: Final = {
    "proxy_on_downstream_data": "on_downstream_data",
    "proxy_on_upstream_data": "on_upstream_data",
}


# -- metrics ----------------------------------------------------------------------------


class RegistryMetricsSink:
    """The host's ``MetricsSink`` over ``wasmcustom.*`` of a stats registry.

    Until ``bind`` (a host loaded by validation alone) the metrics are the sink's own;
    ``bind`` defines them in the registry's ``CustomStats``, with what they counted so
    far the first time (a later ``bind``, to another registry, starts them there at
    zero: what the first one counted stays in the first)."""

    def __init__(self) -> None:
        self.target = CustomStats()
        self._bound = False
        #: per id: (kind, name)
        self._metrics: list[tuple[str, str]] = []
        #: the host's failure counters, by id
        self._own: dict[int, int] = {}

    def bind(self, target: CustomStats) -> None:
        if target is self.target:
            return
        previous, first = self.target, not self._bound
        for kind, name in self._metrics:
            if kind == _OWN:
                continue
            try:
                target.define(kind, name)
            except ValueError as e:  # another module's metric of that name, another kind
                log.warning("wasm metric %s: %s", name, e)
                continue
            if first:
                if kind == HISTOGRAM:
                    hist, into = previous.histograms[name], target.histograms[name]
                    into.counts[:] = [a + b for a, b in zip(into.counts, hist.counts, strict=True)]
                    into.sum += hist.sum
                else:
                    target.values[name] += previous.values[name]
        self.target, self._bound = target, True

    def define(self, kind: MetricKind, name: str) -> int:
        metric_id = len(self._metrics)
        if name in _HOST_METRICS:
            self._metrics.append((_OWN, name))
            self._own[metric_id] = 0
            return metric_id
        kind_name = _KINDS[kind]
        self.target.define(kind_name, name)  # ValueError: defined as another kind
        for known_id, known in enumerate(self._metrics):
            if known == (kind_name, name):
                return known_id
        self._metrics.append((kind_name, name))
        return metric_id

    def _name(self, metric_id: int) -> str:
        if not 0 <= metric_id < len(self._metrics):
            raise KeyError(metric_id)
        return self._metrics[metric_id][1]

    def increment(self, metric_id: int, delta: int) -> None:
        name = self._name(metric_id)
        if metric_id in self._own:
            self._own[metric_id] += delta
        else:
            self.target.add(name, delta)

    def record(self, metric_id: int, value: int) -> None:
        name = self._name(metric_id)
        if metric_id in self._own:
            self._own[metric_id] = value
        else:
            self.target.record(name, value)

    def get(self, metric_id: int) -> int:
        name = self._name(metric_id)
        return self._own[metric_id] if metric_id in self._own else self.target.get(name)


# -- hosts, per process -----------------------------------------------------------------


@attrs.define(eq=False)
class _Live:
    """A host handed out, its metrics sink, and the run its ticks are served in."""

    host: WasmFilterHost
    sink: RegistryMetricsSink
    ticking_in: trio.lowlevel.TrioToken | None = None


_HostKey = tuple[int, str, int, int, str, WasmLimits, str, str]

_hosts: dict[_HostKey, _Live] = {}


def _key(wasm: WasmFilter) -> _HostKey:
    path = os.path.abspath(wasm.path)
    st = os.stat(path)
    limits = WasmLimits(wasm.max_memory_mb, wasm.max_ms_per_call)
    return (
        os.getpid(),
        path,
        st.st_mtime_ns,
        st.st_size,
        wasm.config,
        limits,
        wasm.root_id,
        wasm.vm_id,
    )


def live_host(wasm: WasmFilter) -> _Live:
    """The process's host for ``wasm``, loaded on first use (``WasmLoadError``, or
    ``OSError`` for a path that cannot be read), its ticks served in the current run."""
    key = _key(wasm)
    live = _hosts.get(key)
    if live is None:
        sink = RegistryMetricsSink()
        host = WasmFilterHost.load(
            key[1],
            wasm.config.encode(),
            limits=key[5],
            metrics=sink,
            root_id=wasm.root_id,
            vm_id=wasm.vm_id,
        )
        live = _hosts[key] = _Live(host, sink)
    _serve_ticks(live)
    return live


def _serve_ticks(live: _Live) -> None:
    try:
        token = trio.lowlevel.current_trio_token()
    except RuntimeError:
        return  # outside a run: the first run that hands it out ticks it
    if live.ticking_in is token:
        return
    live.ticking_in = token
    trio.lowlevel.spawn_system_task(_ticks, live.host, name=f"wasm ticks {live.host.name}")


async def _ticks(host: WasmFilterHost) -> None:
    """``serve_ticks``, never raising (a system task's exception would end the run)."""
    try:
        await host.serve_ticks()
    except Exception:  # serve_ticks logs a tick's own failure; this is anything else
        log.exception("wasm ticks of %s ended", host.name)


def close_unused(dataplane: DataPlane) -> None:
    """``close()`` the process's hosts that no chain of ``dataplane`` uses (its requests
    in flight finish on them)."""
    used: set[int] = set()
    for chain in dataplane.chains.values():
        used.update(
            id(m.factory.host)
            for m in chain.members
            if isinstance(m.factory, WasmHttpFilterFactory)
        )
    for network in dataplane.network_chains.values():
        used.update(
            id(f.host) for f in network.factories if isinstance(f, WasmNetworkFilterFactory)
        )
    pid = os.getpid()
    for key, live in list(_hosts.items()):
        if key[0] == pid and id(live.host) not in used:
            del _hosts[key]
            live.host.close()


def bind_metrics(factories: Iterable[object], custom: CustomStats) -> None:
    """The module metrics of the wasm factories among ``factories`` go to ``custom``."""
    for factory in factories:
        if isinstance(factory, WasmHttpFilterFactory | WasmNetworkFilterFactory):
            factory.sink.bind(custom)


# -- HTTP -------------------------------------------------------------------------------


class WasmHttpFilterFactory:
    """A ``wasm:`` entry of ``http_filters`` (the chain's ``HttpFilterFactory``)."""

    __slots__ = ("fail_open", "hooks", "host", "name", "sink")

    def __init__(self, name: str, live: _Live, fail_open: bool) -> None:
        self.name = name
        self.host = live.host
        self.sink = live.sink
        self.fail_open = fail_open
        callbacks = live.host.callbacks
        self.hooks = frozenset(hook for cb, hook in _HTTP_HOOKS.items() if cb in callbacks)

    def new_filter(
        self, entry: RouteEntry | None, head: RequestReceived | None, client_ip: bytes
    ) -> WasmHttpFilter:
        return WasmHttpFilter(self, entry, head, client_ip)


def _text(value: bytes) -> str:
    return value.decode("latin-1")


class WasmHttpFilter:
    """One request through a module (module docstring)."""

    __slots__ = ("client_ip", "context", "entry", "factory", "head", "replied")

    def __init__(
        self,
        factory: WasmHttpFilterFactory,
        entry: RouteEntry | None,
        head: RequestReceived | None,
        client_ip: bytes,
    ) -> None:
        self.factory = factory
        self.entry = entry
        self.head = head
        self.client_ip = client_ip
        self.context: HttpContext | None = None
        #: the module's local reply went out: it is not called again
        self.replied = False

    def _context(self) -> HttpContext:
        context = self.context
        if context is None:
            head, entry = self.head, self.entry
            route = entry.route if entry is not None else None
            properties = http_properties(
                path=_text(head.target) if head is not None else "",
                method=_text(head.method) if head is not None else "",
                host=_text(head.host) if head is not None else "",
                source_address=_text(self.client_ip),
                route_name=(route.name or "") if route is not None else "",
                cluster_name=(route.cluster or "") if route is not None else "",
            )
            context = self.context = self.factory.host.new_http_context(properties)
        return context

    def _outcome(self, context: HttpContext) -> LocalReply | None:
        reply = context.local_reply
        if reply is not None:
            self.replied = True
            return reply
        if context.closed:
            raise WasmError(f"{self.factory.name}: the module closed the stream")
        return None

    async def on_request_headers(
        self, headers: HeaderMap, end_of_stream: bool
    ) -> LocalReply | None:
        context = self._context()
        if context.on_request_headers(headers, end_of_stream) is Action.PAUSE:
            await context.request_resumed.wait()
        return self._outcome(context)

    async def on_response_headers(
        self, headers: HeaderMap, end_of_stream: bool
    ) -> LocalReply | None:
        if self.replied:
            return None
        context = self._context()
        if context.on_response_headers(headers, end_of_stream) is Action.PAUSE:
            await context.response_resumed.wait()
        return self._outcome(context)

    async def on_request_body(
        self, data: bytes, end_of_stream: bool
    ) -> bytes | Buffer | LocalReply | None:
        return await self._body_hook(data, end_of_stream, request=True)

    async def on_response_body(
        self, data: bytes, end_of_stream: bool
    ) -> bytes | Buffer | LocalReply | None:
        return await self._body_hook(data, end_of_stream, request=False)

    async def _body_hook(
        self, data: bytes, end_of_stream: bool, *, request: bool
    ) -> bytes | Buffer | LocalReply | None:
        """A body piece through the module (edited in place); a pause before the end holds
        it (``BUFFER``: proxy-wasm's StopIterationAndBuffer), at the end waits to resume."""
        if self.replied:
            return None
        context = self._context()
        body = bytearray(data)
        hook = context.on_request_body if request else context.on_response_body
        if hook(body, end_of_stream) is Action.PAUSE:
            if context.local_reply is None and not context.closed and not end_of_stream:
                return BUFFER
            resumed = context.request_resumed if request else context.response_resumed
            await resumed.wait()
        return self._body(context, body, data)

    def _body(
        self, context: HttpContext, body: bytearray, data: bytes
    ) -> bytes | LocalReply | None:
        reply = self._outcome(context)
        if reply is not None:
            return reply
        return None if body == data else bytes(body)

    async def on_request_trailers(self, trailers: HeaderMap) -> None:
        if self.replied:
            return
        context = self._context()
        if context.on_request_trailers(trailers) is Action.PAUSE:
            await context.request_resumed.wait()
        self._trailers_outcome(context)

    async def on_response_trailers(self, trailers: HeaderMap) -> None:
        if self.replied:
            return
        context = self._context()
        if context.on_response_trailers(trailers) is Action.PAUSE:
            await context.response_resumed.wait()
        self._trailers_outcome(context)

    def _trailers_outcome(self, context: HttpContext) -> None:
        reply = self._outcome(context)
        if reply is not None:
            raise FilterReplied(reply, filter_name=self.factory.name)

    async def on_log(self, entry: dict[str, Any]) -> None:
        """Not a hook of this filter: the module's ``proxy_on_log`` runs in ``on_done``."""

    def on_done(self) -> None:
        context = self.context
        if context is not None:
            self.context = None
            context.delete()
            if context.failed:
                _renew(self.factory.host)


# -- TCP --------------------------------------------------------------------------------


class WasmNetworkFilterFactory:
    """A ``wasm:`` entry of ``network_filters`` (``NetworkFilterFactory``)."""

    __slots__ = ("hooks", "host", "name", "sink")

    def __init__(self, name: str, live: _Live) -> None:
        self.name = name
        self.host = live.host
        self.sink = live.sink
        callbacks = live.host.callbacks
        # the context is made in on_new_connection and deleted in on_close: always both
        self.hooks = frozenset(
            {"on_new_connection", "on_close"}
            | {hook for cb, hook in _NETWORK_HOOKS.items() if cb in callbacks}
        )

    def new_filter(self) -> WasmNetworkFilter:
        return WasmNetworkFilter(self)


class WasmNetworkFilter:
    """One TCP connection through a module (module docstring)."""

    __slots__ = ("context", "factory", "held_downstream", "held_upstream")

    def __init__(self, factory: WasmNetworkFilterFactory) -> None:
        self.factory = factory
        self.context: NetworkContext | None = None
        #: data the module paused on, given again with the next piece (per direction)
        self.held_downstream = bytearray()
        self.held_upstream = bytearray()

    def _live(self) -> NetworkContext:
        context = self.context
        if context is None:
            raise WasmError(f"{self.factory.name}: no context (on_new_connection failed)")
        if context.closed or context.local_reply is not None:
            raise WasmError(f"{self.factory.name}: the module closed the connection")
        return context

    async def on_new_connection(self) -> None:
        context = self.context = self.factory.host.new_network_context()
        if context.on_new_connection() is Action.PAUSE:
            await context.downstream_resumed.wait()
        self._live()

    async def on_downstream_data(self, data: bytes) -> bytes | None:
        return self._data(data, downstream=True)

    async def on_upstream_data(self, data: bytes) -> bytes | None:
        return self._data(data, downstream=False)

    def _data(self, data: bytes, *, downstream: bool) -> bytes:
        """A piece of one direction through the module, after what it held back of that
        direction (edited in place); a pause holds it all (``b""`` goes on for now)."""
        context = self._live()
        held = self.held_downstream if downstream else self.held_upstream
        held += data
        hook = context.on_downstream_data if downstream else context.on_upstream_data
        if hook(held, False) is Action.PAUSE:
            self._live()
            return b""
        out = bytes(held)
        held.clear()
        return out

    async def on_close(self) -> None:
        context, self.context = self.context, None
        if context is None:
            return
        try:
            if not context.failed:
                context.on_downstream_close()
                context.on_upstream_close()
        finally:
            context.delete()
            if context.failed:
                _renew(self.factory.host)


def _renew(host: WasmFilterHost) -> None:
    """After a failed context: the fresh instance made now, at the end of the request (or
    connection) that failed, not at the start of the next one; never raises."""
    try:
        host.renew()
    except WasmError as e:  # the next context tries again, and fails as a hook would
        log.warning("%s", e)
