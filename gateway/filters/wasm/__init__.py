"""A proxy-wasm host (ABI 0.2.1, and 0.2.0 modules) on wasmtime: filters as wasm modules.

The adapter at the proxy core drives it; nothing here knows the proxy. Per filter config
(``path``, ``config``, ``fail_open``, ``max_memory_mb``, ``max_ms_per_call``) and per
worker process::

    host = WasmFilterHost.load(path, config, limits=WasmLimits(max_memory_mb, max_ms_per_call),
                               metrics=sink, log=log, root_id=root_id)  # WasmLoadError
    await nursery.start(host.serve_ticks)            # proxy_on_tick, while the host lives

    ctx = host.new_http_context(http_properties(path=..., method=..., host=...,
                                                source_address="ip:port",
                                                route_name=..., cluster_name=...))
    try:
        action = ctx.on_request_headers(HeaderMap(fields), end_of_stream=False)
        if action is Action.PAUSE:
            await ctx.request_resumed.wait()        # proxy_continue_stream (from a tick)
        if ctx.local_reply is not None: ...         # proxy_send_local_response: answer it
        if ctx.closed: ...                          # proxy_close_stream: reset the stream
        action = ctx.on_request_body(body_bytearray, end_of_stream=True)  # edited in place
        ... on_request_trailers, on_response_headers, on_response_body, on_response_trailers
    except WasmTrap:                                 # WasmTimeout, WasmOutOfMemory too
        ...                                          # 500, or skip the filter if fail_open
    finally:
        ctx.delete()                                 # on_done, on_log, on_delete; never raises

    # a TCP listener: host.new_network_context(props) -> NetworkContext with
    # on_new_connection(), on_downstream_data(bytearray, eos), on_upstream_data(...),
    # on_downstream_close(peer), on_upstream_close(peer), downstream_resumed/upstream_resumed

    host.close()   # a new config came: new requests go to the new host; this one finishes
                   # its contexts, then serve_ticks returns

Every call into a module is synchronous, bounded by ``max_ms_per_call``. All errors are
``gateway.errors.WasmError``: ``WasmLoadError`` from ``load`` (or from ``new_*_context``
when a failed instance must be replaced and the fresh one does not start), ``WasmTrap``
and its ``WasmTimeout`` and ``WasmOutOfMemory`` from a callback. A failure is counted in
the metrics sink (``wasm.trap``, ``wasm.timeout``, ``wasm.oom``), fails only the context
it happened in, and the next new context gets a fresh instance.

Metrics a module defines go to the ``MetricsSink`` (``metrics.py``) by their own names; the
adapter maps them to the stats registry (Envoy prefixes them ``wasmcustom.``).

Header maps are the core's own field lists (``HeaderMap``): Envoy-built modules may read
``:path``, ``:method``, ``:authority``, which the adapter adds as pseudo-headers if it
wants them seen. Properties are whatever the adapter passes, plus ``plugin_root_id``,
``plugin_name`` and ``plugin_vm_id``; a path given as NUL-joined segments
(``request\\0path``, as Envoy's SDKs send it) is read as the dotted name.

Provided to modules (``provided_imports()``): logging, tick period, time, properties,
continue/close stream, local response, effective context, ``proxy_done``, every header
map and buffer call, metrics, shared data (per process), and the WASI calls SDKs link
(``proc_exit`` traps; ``fd_write`` logs; clocks, random, empty environment and
arguments). Not provided yet, so a module importing one does not load, the error naming
it: HTTP and gRPC calls, shared queues, foreign functions, ``proxy_get_status``.
"""

from gateway.filters.wasm.abi import (
    Action,
    BufferType,
    LogLevel,
    MapType,
    MetricKind,
    PeerType,
    Status,
    StreamType,
)
from gateway.filters.wasm.host import (
    HttpContext,
    NetworkContext,
    WasmFilterHost,
    WasmLimits,
    WasmLog,
    compile_module,
    http_properties,
    provided_imports,
)
from gateway.filters.wasm.metrics import DictMetricsSink, MetricsSink

__all__ = [
    "Action",
    "BufferType",
    "DictMetricsSink",
    "HttpContext",
    "LogLevel",
    "MapType",
    "MetricKind",
    "MetricsSink",
    "NetworkContext",
    "PeerType",
    "Status",
    "StreamType",
    "WasmFilterHost",
    "WasmLimits",
    "WasmLog",
    "compile_module",
    "http_properties",
    "provided_imports",
]
