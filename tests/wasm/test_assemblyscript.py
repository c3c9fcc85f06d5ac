"""Filters on the AssemblyScript SDK (``@solo-io/proxy-runtime``, npm), which no one here
wrote: its published "Hello, World" example, which adds ``hello: <configuration>``
(``world!`` without one) to responses, built as its README says (``build.js``); and
``assembly/sdk_features.ts``, ours, for the SDK's calls the example does not make."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from gateway.errors import WasmLoadError
from gateway.filters.api import HeaderMap, LocalReply
from gateway.filters.wasm import (
    Action,
    DictMetricsSink,
    LogLevel,
    WasmFilterHost,
    compile_module,
    http_properties,
    provided_imports,
)
from tests.wasm.conftest import Logs


@pytest.fixture
def example(assemblyscript_build: Path) -> Path:
    return assemblyscript_build / "add_header.wasm"


@pytest.fixture
def features(assemblyscript_build: Path) -> Path:
    return assemblyscript_build / "sdk_features.wasm"


def test_they_need_only_what_triogate_provides(example: Path, features: Path) -> None:
    for module in (example, features):
        imports = {f"{i.module}.{i.name}" for i in compile_module(module).imports}
        assert imports <= set(provided_imports())
        assert "wasi_unstable.proc_exit" in imports  # the SDK's abort


@pytest.mark.parametrize(("config", "value"), [(b"from config", b"from config"), (b"", b"world!")])
def test_the_example_adds_its_header(example: Path, config: bytes, value: bytes) -> None:
    host = WasmFilterHost.load(example, config, root_id="add_header")
    context = host.new_http_context()
    request = HeaderMap([(b"host", b"example.com")])
    assert context.on_request_headers(request, end_of_stream=True) is Action.CONTINUE
    assert request.fields == [(b"host", b"example.com")]
    response = HeaderMap([(b"content-type", b"text/plain")])
    assert context.on_response_headers(response, end_of_stream=False) is Action.CONTINUE
    assert response.fields == [(b"content-type", b"text/plain"), (b"hello", value)]
    context.delete()
    assert host.live_contexts() == 0


def test_many_requests_one_instance(example: Path, logs: Logs) -> None:
    host = WasmFilterHost.load(
        example, b"x", root_id="add_header", log=logs, log_level=LogLevel.DEBUG
    )
    for _ in range(200):
        context = host.new_http_context()
        response = HeaderMap()
        context.on_response_headers(response, end_of_stream=True)
        assert response.get_bytes(b"hello") == b"x"
        context.delete()
    assert host.reinstantiations == 0 and host.live_contexts() == 0
    # the SDK logs its context bookkeeping at debug: it saw every context deleted
    assert sum("onDelete()" in message for message in logs.messages()) == 200


def test_a_root_id_it_does_not_register(example: Path) -> None:
    with pytest.raises(WasmLoadError, match="Missing root context factory for root id: other"):
        WasmFilterHost.load(example, b"", root_id="other")


def test_a_new_config_swaps_for_new_requests_only(example: Path) -> None:
    old = WasmFilterHost.load(example, b"one", root_id="add_header")
    in_flight = old.new_http_context()
    new = WasmFilterHost.load(example, b"two", root_id="add_header")
    old.close()  # the adapter swapped: new requests go to `new`
    fresh = new.new_http_context()
    answers = []
    for context in (in_flight, fresh):
        response = HeaderMap()
        context.on_response_headers(response, end_of_stream=True)
        answers.append(response.get_bytes(b"hello"))
        context.delete()
    assert answers == [b"one", b"two"]
    assert old.live_contexts() == 0


def test_sdk_headers_properties_and_a_counter(features: Path) -> None:
    metrics = DictMetricsSink()
    host = WasmFilterHost.load(features, root_id="sdk_features", metrics=metrics)
    for _ in range(2):
        context = host.new_http_context(http_properties(path="/items?page=2"))
        request = HeaderMap([(b"x-path", b"old"), (b"x-remove", b"1"), (b"host", b"h")])
        assert context.on_request_headers(request, end_of_stream=True) is Action.CONTINUE
        assert request.fields == [(b"x-path", b"/items?page=2"), (b"host", b"h")]
        context.delete()
    assert metrics["as_requests"] == 2


def test_sdk_local_response(features: Path) -> None:
    host = WasmFilterHost.load(features, root_id="sdk_features")
    context = host.new_http_context()
    assert context.on_request_headers(HeaderMap([(b"x-action", b"deny")]), True) is Action.PAUSE
    assert context.local_reply == LocalReply(
        status=401, body=b"denied", headers=[("x-denied-by", "assemblyscript")]
    )
    assert context.local_reply_details == "as_denied"
    context.delete()


async def test_sdk_pause_until_a_tick(
    features: Path, autojump_clock: trio.testing.MockClock
) -> None:
    host = WasmFilterHost.load(features, root_id="sdk_features")
    async with trio.open_nursery() as nursery:
        await nursery.start(host.serve_ticks)
        context = host.new_http_context()
        request = HeaderMap([(b"x-action", b"pause")])
        assert context.on_request_headers(request, end_of_stream=True) is Action.PAUSE
        with trio.fail_after(1):
            await context.request_resumed.wait()
        assert request.get_bytes(b"x-resumed") == b"by tick"
        context.delete()
        host.close()
