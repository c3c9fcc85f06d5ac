"""The proxy-wasm host against our own WAT filters, one per corner of the ABI."""

from __future__ import annotations

import gc
import struct
import weakref
from pathlib import Path

import pytest
import trio

import gateway.filters.wasm as wasm
from gateway.errors import (
    GatewayError,
    WasmError,
    WasmLoadError,
    WasmOutOfMemory,
    WasmTimeout,
    WasmTrap,
)
from gateway.filters.api import HeaderMap, LocalReply
from gateway.filters.wasm import (
    Action,
    DictMetricsSink,
    LogLevel,
    PeerType,
    WasmFilterHost,
    WasmLimits,
    compile_module,
    http_properties,
    provided_imports,
)
from tests.wasm.conftest import LoadFilter, Logs, filter_path


def headers(*pairs: tuple[bytes, bytes]) -> HeaderMap:
    return HeaderMap(list(pairs))


def test_public_surface() -> None:
    assert sorted(wasm.__all__) == [
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
    for error in (WasmLoadError, WasmTrap, WasmTimeout, WasmOutOfMemory):
        assert issubclass(error, WasmError) and issubclass(error, GatewayError)
    assert issubclass(WasmTimeout, WasmTrap) and issubclass(WasmOutOfMemory, WasmTrap)


def test_a_module_is_compiled_once_per_file_version(tmp_path: Path) -> None:
    copy = tmp_path / "noop.wat"
    copy.write_bytes(filter_path("noop").read_bytes())
    first = compile_module(copy)
    assert compile_module(copy) is first
    copy.write_bytes(filter_path("noop").read_bytes() + b"\n;; changed\n")
    assert compile_module(copy) is not first


def test_noop_continues(load: LoadFilter) -> None:
    host = load("noop")
    context = host.new_http_context()
    request = headers((b"host", b"example.com"))
    assert context.on_request_headers(request, end_of_stream=True) is Action.CONTINUE
    # callbacks the module does not export continue
    assert context.on_response_headers(headers(), end_of_stream=False) is Action.CONTINUE
    assert context.on_response_body(bytearray(b"x"), end_of_stream=True) is Action.CONTINUE
    assert request.fields == [(b"host", b"example.com")]
    assert context.local_reply is None
    context.delete()
    assert host.live_contexts() == 0


def test_add_header_edits_the_core_s_own_list(load: LoadFilter) -> None:
    host = load("add_header")
    fields = [(b"host", b"example.com")]
    context = host.new_http_context()
    assert context.on_request_headers(HeaderMap(fields), end_of_stream=True) is Action.CONTINUE
    assert fields == [(b"host", b"example.com"), (b"x-wasm", b"1")]
    context.delete()


def test_header_maps_trailers_and_bodies(load: LoadFilter) -> None:
    host = load("headers_body")
    context = host.new_http_context()
    request = headers(
        (b"host", b"h"), (b"x-replace", b"old"), (b"x-remove", b"a"), (b"x-remove", b"b")
    )
    assert context.on_request_headers(request, end_of_stream=False) is Action.CONTINUE
    size = wasm.abi.encode_pairs([(b"host", b"h"), (b"x-replace", b"new")])
    assert request.fields == [
        (b"host", b"h"),
        (b"x-replace", b"new"),
        (b"x-map-size", struct.pack("<I", len(size))),
    ]
    first = bytearray(b"hello ")
    assert context.on_request_body(first, end_of_stream=False) is Action.PAUSE
    assert not context.request_resumed.is_set()
    body = bytearray(b"hello world")
    assert context.on_request_body(body, end_of_stream=True) is Action.CONTINUE
    assert body == b"replaced"
    trailers = headers((b"x-other", b"1"))
    assert context.on_request_trailers(trailers) is Action.CONTINUE
    assert trailers.fields == [(b"x-other", b"1"), (b"x-trailer", b"seen")]

    response = headers((b"content-type", b"text/plain"), (b"Content-Length", b"5"))
    assert context.on_response_headers(response, end_of_stream=False) is Action.CONTINUE
    assert response.fields == [(b"content-type", b"text/plain")]
    chunk = bytearray(b"abc")
    assert context.on_response_body(chunk, end_of_stream=False) is Action.CONTINUE
    assert chunk == b"abcabc"
    response_trailers = headers((b"grpc-status", b"13"), (b"grpc-message", b"oops"))
    assert context.on_response_trailers(response_trailers) is Action.CONTINUE
    assert response_trailers.fields == [(b"grpc-status", b"0")]
    context.delete()


def test_local_reply(load: LoadFilter) -> None:
    host = load("local_reply")
    context = host.new_http_context()
    assert context.on_request_headers(headers((b"host", b"h")), end_of_stream=True) is Action.PAUSE
    assert context.local_reply == LocalReply(
        status=403, body=b"no entry", headers=[("x-why", "wasm")]
    )
    assert context.local_reply_details == "denied_by_wasm"
    # nothing to wait for: the request goes no further
    assert context.request_resumed.is_set()
    context.delete()


def test_properties(load: LoadFilter, logs: Logs) -> None:
    host = load("properties", root_id="props")
    properties = http_properties(
        path="/a/b?x=1",
        method="POST",
        host="example.com",
        source_address="10.0.0.7:40000",
        route_name="api",
        cluster_name="backend",
    )
    context = host.new_http_context(properties)
    request = headers()
    assert context.on_request_headers(request, end_of_stream=True) is Action.CONTINUE
    assert dict(request.fields) == {
        b"x-path": b"/a/b?x=1",
        b"x-method": b"POST",
        b"x-host": b"example.com",
        b"x-source": b"10.0.0.7:40000",
        b"x-route": b"api",
        b"x-cluster": b"backend",
        b"x-root-id": b"props",
        b"x-url-path": b"/a/b",
    }
    assert (LogLevel.INFO, "properties read") in logs
    context.delete()


def test_log_level_drops_lines_below_it(load: LoadFilter, logs: Logs) -> None:
    host = load("properties", log_level=LogLevel.WARN)
    context = host.new_http_context()
    context.on_request_headers(headers(), end_of_stream=True)
    assert logs == []
    context.delete()


def test_metrics_land_in_the_sink(load: LoadFilter, metrics: DictMetricsSink) -> None:
    host = load("metrics")
    seen = []
    for count in (1, 3):
        context = host.new_http_context()
        request = headers(*[(b"h%d" % i, b"v") for i in range(count)])
        context.on_request_headers(request, end_of_stream=True)
        assert metrics["wasm_in_flight"] == 1
        seen.append(request.get_bytes(b"x-count"))
        response = headers()
        context.on_response_headers(response, end_of_stream=True)
        # a counter never goes down: BAD_ARGUMENT (2)
        assert response.get_bytes(b"x-counter-down") == bytes([wasm.Status.BAD_ARGUMENT])
        context.delete()
    assert seen == [struct.pack("<Q", 1), struct.pack("<Q", 2)]
    assert metrics["wasm_requests"] == 2
    assert metrics["wasm_in_flight"] == 0
    assert metrics.values["wasm_header_count"] == [1, 3]
    assert metrics["wasm.trap"] == 0


def test_network_filter_rewrites_both_directions(load: LoadFilter, logs: Logs) -> None:
    host = load("network")
    connection = host.new_network_context({"source.address": b"127.0.0.1:5000"})
    assert connection.on_new_connection() is Action.CONTINUE
    downstream = bytearray(b"ping")
    assert connection.on_downstream_data(downstream, end_of_stream=False) is Action.CONTINUE
    assert downstream == b"> ping"
    upstream = bytearray(b"pong")
    assert connection.on_upstream_data(upstream, end_of_stream=False) is Action.CONTINUE
    assert upstream == b"pong <"
    connection.on_downstream_close(PeerType.REMOTE)
    connection.on_upstream_close(PeerType.LOCAL)
    assert logs.messages() == ["downstream closed", "upstream closed"]
    connection.delete()
    assert host.live_contexts() == 0


async def test_pause_resumes_from_a_tick(
    load: LoadFilter, autojump_clock: trio.testing.MockClock
) -> None:
    host = load("pause")
    async with trio.open_nursery() as nursery:
        await nursery.start(host.serve_ticks)
        context = host.new_http_context()
        request = headers((b"host", b"h"))
        assert context.on_request_headers(request, end_of_stream=True) is Action.PAUSE
        assert not context.request_resumed.is_set()
        with trio.fail_after(1):
            await context.request_resumed.wait()
        assert request.get_bytes(b"x-resumed") == b"tick"
        assert context.local_reply is None and not context.closed
        context.delete()
        host.close()  # the last context is gone: serve_ticks returns
    assert host.live_contexts() == 0


async def test_a_closed_host_finishes_its_contexts(
    load: LoadFilter, autojump_clock: trio.testing.MockClock
) -> None:
    old = load("pause")
    async with trio.open_nursery() as nursery:
        await nursery.start(old.serve_ticks)
        in_flight = old.new_http_context()
        request = headers()
        assert in_flight.on_request_headers(request, end_of_stream=True) is Action.PAUSE
        old.close()  # a new config: new requests go elsewhere
        with pytest.raises(RuntimeError):
            old.new_http_context()
        with trio.fail_after(1):
            await in_flight.request_resumed.wait()  # still ticked
        assert request.get_bytes(b"x-resumed") == b"tick"
        in_flight.delete()


def test_a_trap_fails_only_its_request(
    load: LoadFilter, metrics: DictMetricsSink, logs: Logs
) -> None:
    host = load("faults")
    in_flight = host.new_http_context()
    assert in_flight.on_request_headers(headers(), end_of_stream=True) is Action.CONTINUE

    failing = host.new_http_context()
    with pytest.raises(WasmTrap) as raised:
        failing.on_request_headers(headers((b"x-trap", b"1")), end_of_stream=True)
    assert type(raised.value) is WasmTrap
    message = str(raised.value)
    assert "proxy_on_request_headers" in message and "unreachable" in message
    assert "about to trap" in message  # the module's last error line
    assert metrics["wasm.trap"] == 1
    assert (LogLevel.ERROR, "about to trap") in logs
    # the failed context is not called again, and deleting it never raises
    with pytest.raises(WasmTrap):
        failing.on_response_headers(headers(), end_of_stream=True)
    failing.delete()

    # the request in flight on the same instance goes on
    assert in_flight.on_response_headers(headers(), end_of_stream=True) is Action.CONTINUE
    in_flight.delete()
    # and the next request gets a fresh instance
    assert host.reinstantiations == 0
    after = host.new_http_context()
    assert host.reinstantiations == 1
    assert after.on_request_headers(headers(), end_of_stream=True) is Action.CONTINUE
    after.delete()
    assert host.live_contexts() == 0


def test_a_callback_past_its_time_is_interrupted(
    load: LoadFilter, metrics: DictMetricsSink
) -> None:
    host = load("faults", limits=WasmLimits(max_memory_mb=4, max_ms_per_call=20))
    context = host.new_http_context()
    with pytest.raises(WasmTimeout, match="max_ms_per_call"):
        context.on_request_headers(headers((b"x-loop", b"1")), end_of_stream=True)
    assert metrics["wasm.timeout"] == 1 and metrics["wasm.trap"] == 0
    context.delete()
    fresh = host.new_http_context()
    assert fresh.on_request_headers(headers(), end_of_stream=True) is Action.CONTINUE
    fresh.delete()


def test_memory_past_the_limit(load: LoadFilter, metrics: DictMetricsSink) -> None:
    host = load("faults", limits=WasmLimits(max_memory_mb=1, max_ms_per_call=200))
    context = host.new_http_context()
    with pytest.raises(WasmOutOfMemory, match="max_memory_mb 1"):
        context.on_request_headers(headers((b"x-grow", b"1")), end_of_stream=True)
    assert metrics["wasm.oom"] == 1 and metrics["wasm.trap"] == 0
    context.delete()
    fresh = host.new_http_context()
    assert fresh.on_request_headers(headers(), end_of_stream=True) is Action.CONTINUE
    fresh.delete()


def test_a_pointer_past_memory_is_a_status_not_a_trap(load: LoadFilter) -> None:
    host = load("faults")
    context = host.new_http_context()
    request = headers((b"x-bad-pointer", b"1"))
    assert context.on_request_headers(request, end_of_stream=True) is Action.CONTINUE
    assert request.get_bytes(b"x-status") == bytes([wasm.Status.INVALID_MEMORY_ACCESS])
    context.delete()


def test_an_import_triogate_lacks_fails_the_load_naming_it(load: LoadFilter) -> None:
    with pytest.raises(WasmLoadError, match=r"env\.proxy_http_call \(not implemented yet\)"):
        load("missing_import")
    assert "env.proxy_http_call" not in provided_imports()
    assert "env.proxy_log" in provided_imports()


MODULE = """(module
  {imports}
  (memory (export "memory") 1)
  (func (export "malloc") (param i32) (result i32) (i32.const 4096))
  {exports}
)"""


def write_module(tmp_path: Path, imports: str = "", exports: str = "") -> Path:
    path = tmp_path / "module.wat"
    path.write_text(MODULE.format(imports=imports, exports=exports))
    return path


@pytest.mark.parametrize(
    ("imports", "exports", "complaint"),
    [
        ("", "", "not a proxy-wasm module of ABI 0.2.x"),
        (
            '(import "env" "proxy_log" (func (param i32) (result i32)))',
            '(func (export "proxy_abi_version_0_2_1"))',
            r"env\.proxy_log as .*triogate's is \(i32, i32, i32\) -> \(i32\)",
        ),
        (
            '(import "env" "proxy_made_up" (func))',
            '(func (export "proxy_abi_version_0_2_1"))',
            r"imports env\.proxy_made_up, which triogate does not provide",
        ),
        (
            "",
            """(func (export "proxy_abi_version_0_2_0"))
               (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 0))""",
            "proxy_on_configure returned false",
        ),
        (
            "",
            """(func (export "proxy_abi_version_0_2_1"))
               (func (export "proxy_on_vm_start") (param i32 i32) (result i32) unreachable)""",
            "proxy_on_vm_start trapped",
        ),
    ],
)
def test_load_errors_say_what_failed(
    tmp_path: Path, imports: str, exports: str, complaint: str
) -> None:
    with pytest.raises(WasmLoadError, match=complaint):
        WasmFilterHost.load(write_module(tmp_path, imports, exports))


def test_a_file_that_does_not_compile(tmp_path: Path) -> None:
    path = tmp_path / "broken.wasm"
    path.write_bytes(b"\0asm\x01\0\0\0garbage")
    with pytest.raises(WasmLoadError, match="does not compile"):
        WasmFilterHost.load(path)
    with pytest.raises(WasmLoadError, match="cannot be read"):
        WasmFilterHost.load(tmp_path / "absent.wasm")


def test_the_configuration_reaches_the_module(tmp_path: Path) -> None:
    # proxy_on_configure answers whether its configuration is 4 bytes long and reads "good"
    path = write_module(
        tmp_path,
        '(import "env" "proxy_get_buffer_bytes" (func $read (param i32 i32 i32 i32 i32) (result i32)))',
        """(func (export "proxy_abi_version_0_2_1"))
           (func (export "proxy_on_configure") (param i32) (param $size i32) (result i32)
             (drop (call $read (i32.const 7) (i32.const 0) (local.get $size) (i32.const 0) (i32.const 4)))
             (i32.and (i32.eq (i32.load (i32.const 4)) (i32.const 4))
                      (i32.eq (i32.load (i32.load (i32.const 0))) (i32.const 0x646f6f67))))""",
    )
    WasmFilterHost.load(path, b"good")
    with pytest.raises(WasmLoadError, match="returned false"):
        WasmFilterHost.load(path, b"bad!")


def test_a_hostcall_from_the_start_function_is_refused(tmp_path: Path) -> None:
    path = write_module(
        tmp_path,
        '(import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))',
        """(func (export "proxy_abi_version_0_2_1"))
           (func $early (drop (call $log (i32.const 2) (i32.const 0) (i32.const 1))))
           (start $early)""",
    )
    with pytest.raises(WasmLoadError, match="calls the host from its start function"):
        WasmFilterHost.load(path)


SHARED = """(func (export "proxy_abi_version_0_2_1"))
  (data (i32.const 0) "key")
  (data (i32.const 16) "first")
  (data (i32.const 32) "x-value")
  (data (i32.const 48) "x-cas-mismatch")
  ;; set "key" to "first" (cas 0: whatever it was), read it back into x-value, then try to
  ;; set it with a stale cas (1 + the cas read) and put that status in x-cas-mismatch
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $set (i32.const 0) (i32.const 3) (i32.const 16) (i32.const 5) (i32.const 0)))
    (drop (call $get (i32.const 0) (i32.const 3) (i32.const 1024) (i32.const 1028) (i32.const 1032)))
    (drop (call $add (i32.const 0) (i32.const 32) (i32.const 7) (i32.load (i32.const 1024)) (i32.load (i32.const 1028))))
    (i32.store8 (i32.const 1040)
      (call $set (i32.const 0) (i32.const 3) (i32.const 16) (i32.const 5)
        (i32.add (i32.load (i32.const 1032)) (i32.const 1))))
    (drop (call $add (i32.const 0) (i32.const 48) (i32.const 14) (i32.const 1040) (i32.const 1)))
    (i32.const 0))"""


def test_shared_data_with_compare_and_swap(tmp_path: Path) -> None:
    path = write_module(
        tmp_path,
        """(import "env" "proxy_set_shared_data" (func $set (param i32 i32 i32 i32 i32) (result i32)))
           (import "env" "proxy_get_shared_data" (func $get (param i32 i32 i32 i32 i32) (result i32)))
           (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))""",
        SHARED,
    )
    # two hosts of one vm_id (two filter configs, or two config versions) share it
    for host in (
        WasmFilterHost.load(path, vm_id="shared-test"),
        WasmFilterHost.load(path, vm_id="shared-test"),
    ):
        context = host.new_http_context()
        request = headers()
        context.on_request_headers(request, end_of_stream=True)
        assert request.get_bytes(b"x-value") == b"first"
        assert request.get_bytes(b"x-cas-mismatch") == bytes([wasm.Status.CAS_MISMATCH])
        context.delete()


def test_close_stream(tmp_path: Path) -> None:
    path = write_module(
        tmp_path,
        '(import "env" "proxy_close_stream" (func $close (param i32) (result i32)))',
        """(func (export "proxy_abi_version_0_2_1"))
           (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
             (drop (call $close (i32.const 0)))
             (i32.const 0))""",
    )
    context = WasmFilterHost.load(path).new_http_context()
    assert context.on_request_headers(headers(), end_of_stream=True) is Action.PAUSE
    assert context.closed and context.request_resumed.is_set()
    context.delete()


async def test_a_failing_tick_is_counted_and_ticks_no_more(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = write_module(
        tmp_path,
        '(import "env" "proxy_set_tick_period_milliseconds" (func $period (param i32) (result i32)))',
        """(func (export "proxy_abi_version_0_2_1"))
           (global $ticks (mut i32) (i32.const 0))
           (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
             (drop (call $period (i32.const 100)))
             (i32.const 1))
           (func (export "proxy_on_tick") (param i32)
             (global.set $ticks (i32.add (global.get $ticks) (i32.const 1)))
             (if (i32.eq (global.get $ticks) (i32.const 3)) (then unreachable)))""",
    )
    metrics = DictMetricsSink()
    host = WasmFilterHost.load(path, metrics=metrics)
    async with trio.open_nursery() as nursery:
        await nursery.start(host.serve_ticks)
        await trio.sleep(10)
        assert metrics["wasm.trap"] == 1  # the third tick, and no tick after it
        host.close()


def test_a_hostcall_s_own_bug_fails_the_call_not_the_gateway(
    load: LoadFilter, metrics: DictMetricsSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: WasmFilterHost, store: object, *args: int) -> int:
        raise ZeroDivisionError("a bug in a hostcall")

    monkeypatch.setattr(WasmFilterHost, "_proxy_log", broken)
    host = load("properties")
    context = host.new_http_context()
    with pytest.raises(WasmTrap, match="a bug in a hostcall") as raised:
        context.on_request_headers(headers(), end_of_stream=True)
    assert isinstance(raised.value.__cause__, ZeroDivisionError)
    assert metrics["wasm.trap"] == 1
    context.delete()


def test_a_host_no_one_holds_is_freed_with_its_instances(load: LoadFilter) -> None:
    # wasmtime-py keeps hostcalls in a global table: it must not keep the host alive
    host = load("properties")
    context = host.new_http_context()
    context.on_request_headers(headers(), end_of_stream=True)
    context.delete()
    held = weakref.ref(host)
    del host, context
    gc.collect()
    assert held() is None


def test_a_paused_downstream_resumes_when_the_module_says(tmp_path: Path) -> None:
    # the client's data waits until the upstream has said something
    path = write_module(
        tmp_path,
        '(import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))',
        """(func (export "proxy_abi_version_0_2_1"))
           (func (export "proxy_on_downstream_data") (param i32 i32 i32) (result i32) (i32.const 1))
           (func (export "proxy_on_upstream_data") (param i32 i32 i32) (result i32)
             (drop (call $continue (i32.const 2)))
             (i32.const 0))""",
    )
    connection = WasmFilterHost.load(path).new_network_context()
    assert connection.on_new_connection() is Action.CONTINUE  # not exported: continue
    assert connection.on_downstream_data(bytearray(b"hello"), end_of_stream=False) is Action.PAUSE
    assert not connection.downstream_resumed.is_set()
    assert connection.upstream_resumed.is_set()
    assert connection.on_upstream_data(bytearray(b"banner"), end_of_stream=False) is Action.CONTINUE
    assert connection.downstream_resumed.is_set() and not connection.closed
    connection.delete()
