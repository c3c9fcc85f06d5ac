"""The filters' config: every mistake refused by its field's path, the wasm entries
refused (until the proxy-wasm host lands) by one message, the chains built per listener."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config import Address, config_from_data
from gateway.errors import ConfigError
from gateway.filters.factories import build_chains
from gateway.observe.stats import StatsRegistry
from tests.conftest import simple_config

SAMPLES = "tests.gateway.filter_samples"
UP = Address("127.0.0.1", 9)


def http(filters: list[dict[str, Any]], **listener: Any) -> dict[str, Any]:
    return simple_config({"a": [UP]}, http_filters=filters, **listener)


def issues_of(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        config_from_data(data)
    return {issue.path: issue.message for issue in caught.value.issues}


def test_a_factory_that_does_not_import_is_refused_by_its_field() -> None:
    issues = issues_of(
        http(
            [
                {"name": "ok", "python": {"factory": f"{SAMPLES}:AddHeader"}},
                {"name": "gone", "python": {"factory": "no.such.module:Thing"}},
                {"name": "shape", "python": {"factory": "no_colon"}},
                {"name": "refuses", "python": {"factory": f"{SAMPLES}:Refuses"}},
            ]
        )
    )
    assert set(issues) == {
        "listeners[0].http_filters[1].python.factory",
        "listeners[0].http_filters[2].python.factory",
        "listeners[0].http_filters[3].python.config",
    }
    assert "no.such.module" in issues["listeners[0].http_filters[1].python.factory"]
    assert "no 'level' given" in issues["listeners[0].http_filters[3].python.config"]


def test_names_kinds_and_disabled_filters_are_checked(tmp_path: Path) -> None:
    data = http(
        [
            {"name": "x", "python": {"factory": f"{SAMPLES}:AddHeader"}},
            {"name": "x", "python": {"factory": f"{SAMPLES}:AddHeader"}},
            {"name": "faults", "python": {"factory": f"{SAMPLES}:AddHeader"}},
            {"name": "both"},
        ],
        filter_buffer_limit_kb=0,
    )
    data["listeners"][0]["routes"][0]["disabled_filters"] = ["x", "faults", "nope"]
    issues = issues_of(data)
    assert issues["listeners[0].http_filters"] == "filter 'x' defined twice"
    assert "built-in" in issues["listeners[0].http_filters[2].name"]
    assert issues["listeners[0].http_filters[3]"] == "needs exactly one of 'wasm' or 'python'"
    assert issues["listeners[0].filter_buffer_limit_kb"] == "must be 1-1048576"
    assert issues["listeners[0].routes[0].disabled_filters[2]"] == (
        "listener 'web' has no http filter 'nope'"
    )
    assert not any("disabled_filters[0]" in p or "disabled_filters[1]" in p for p in issues)


def test_wasm_entries_are_checked_then_loaded(tmp_path: Path) -> None:
    module = tmp_path / "add_header.wasm"
    module.write_bytes(b"\0asm\1\0\0\0")
    issues = issues_of(
        http(
            [
                {"name": "ok", "wasm": {"path": str(module), "config": '{"header": "x"}'}},
                {
                    "name": "bad",
                    "wasm": {
                        "path": str(tmp_path / "missing.wasm"),
                        "max_memory_mb": 0,
                        "max_ms_per_call": 0,
                    },
                },
            ]
        )
    )
    # a module that does not load: the host's WasmLoadError, at the entry's field
    assert "not a proxy-wasm module" in issues["listeners[0].http_filters[0].wasm"]
    assert "no such file" in issues["listeners[0].http_filters[1].wasm.path"]
    assert issues["listeners[0].http_filters[1].wasm.max_memory_mb"] == "must be >= 1"
    assert issues["listeners[0].http_filters[1].wasm.max_ms_per_call"] == "must be > 0"


def test_filters_belong_to_their_protocol() -> None:
    flt = {"name": "t", "python": {"factory": f"{SAMPLES}:Tcp"}}
    data = http([], network_filters=[flt])
    issues = issues_of(data)
    assert issues["listeners[0].network_filters"] == "only 'tcp' listeners have them"


def test_chains_exist_only_for_listeners_with_filters_that_have_hooks() -> None:
    plain = config_from_data(simple_config({"a": [UP]}))
    registry = StatsRegistry()
    assert build_chains(plain, registry) == ({}, {})
    data = http([{"name": "t", "python": {"factory": f"{SAMPLES}:NoHooks"}}])
    assert build_chains(config_from_data(data), registry) == ({}, {})
    data = http([{"name": "t", "python": {"factory": f"{SAMPLES}:AddHeader"}}])
    chains, network = build_chains(config_from_data(data), registry)
    assert list(chains) == ["web"] and network == {}
    assert [m.factory.name for m in chains["web"].members] == ["t"]
