"""``wasmcustom.*`` (``gateway.observe.stats.custom``): what proxy-wasm modules define, in
the registry, its exports and the sums over worker processes; and the host's metrics sink
over it (``gateway.filters.wasm_adapter.RegistryMetricsSink``)."""

from __future__ import annotations

import pytest

from gateway.filters.wasm import MetricKind
from gateway.filters.wasm_adapter import RegistryMetricsSink
from gateway.observe.stats import StatsRegistry
from gateway.observe.stats.export import prometheus_text, stats_json
from gateway.observe.stats.merge import absorb, dump, retired


def worker(requests: int, in_flight: int, sizes: list[int]) -> StatsRegistry:
    registry = StatsRegistry()
    custom = registry.custom
    custom.define("counter", "requests")
    custom.define("gauge", "in_flight")
    custom.define("histogram", "size")
    custom.add("requests", requests)
    custom.record("in_flight", in_flight)
    for size in sizes:
        custom.record("size", size)
    return registry


def test_every_kind_is_exported_by_its_envoy_name() -> None:
    registry = worker(3, 2, [1, 700])
    stats = stats_json(registry)
    assert stats["counters"]["wasmcustom.requests"] == 3
    assert stats["gauges"]["wasmcustom.in_flight"] == 2
    assert stats["histograms"]["wasmcustom.size"]["count"] == 2
    assert stats["histograms"]["wasmcustom.size"]["sum_ms"] == 701
    lines = prometheus_text(registry).splitlines()
    assert "triogate_wasmcustom_requests_total 3" in lines
    assert "triogate_wasmcustom_in_flight 2" in lines
    assert "triogate_wasmcustom_size_count 2" in lines
    assert "# TYPE triogate_wasmcustom_size histogram" in lines


def test_workers_figures_are_summed_and_absorbed_again_not_accumulated() -> None:
    primary = StatsRegistry()
    parts = [dump(worker(3, 1, [5])), dump(worker(4, 2, [5, 6]))]
    for _ in range(2):
        absorb(primary, parts)
    custom = primary.custom
    assert (custom.get("requests"), custom.get("in_flight"), custom.get("size")) == (7, 3, 3)
    assert custom.histograms["size"].sum == 16


def test_a_dead_workers_counters_stay_and_its_gauges_go() -> None:
    part = retired(dump(worker(3, 5, [1])))
    registry = StatsRegistry()
    absorb(registry, [part])
    assert registry.custom.get("requests") == 3
    assert registry.custom.get("in_flight") == 0
    assert registry.custom.get("size") == 1


def test_a_name_keeps_its_kind_and_a_counter_only_goes_up() -> None:
    custom = StatsRegistry().custom
    custom.define("counter", "n")
    custom.define("counter", "n")
    with pytest.raises(ValueError, match="is a counter"):
        custom.define("gauge", "n")
    with pytest.raises(ValueError, match="cannot change by -1"):
        custom.add("n", -1)


def test_reset_zeroes_them() -> None:
    registry = worker(3, 2, [1])
    registry.reset()
    assert stats_json(registry)["counters"]["wasmcustom.requests"] == 0
    assert registry.custom.get("size") == 0


def test_the_sink_moves_what_validation_counted_into_the_first_registry_only() -> None:
    sink = RegistryMetricsSink()
    trap = sink.define(MetricKind.COUNTER, "wasm.trap")  # the host's own: not exported
    seen = sink.define(MetricKind.COUNTER, "seen")
    assert sink.define(MetricKind.COUNTER, "seen") == seen
    sink.increment(seen, 2)
    sink.increment(trap, 1)
    first, second = StatsRegistry(), StatsRegistry()
    sink.bind(first.custom)
    sink.increment(seen, 1)
    assert first.custom.get("seen") == 3
    assert "wasm.trap" not in first.custom.kinds and sink.get(trap) == 1
    sink.bind(second.custom)  # a new gateway in this process: it starts at zero there
    sink.increment(seen, 5)
    assert (first.custom.get("seen"), second.custom.get("seen"), sink.get(seen)) == (3, 5, 5)
    with pytest.raises(KeyError):
        sink.increment(99, 1)
    with pytest.raises(ValueError, match="cannot change"):
        sink.increment(seen, -1)
