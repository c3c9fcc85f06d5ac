"""Where a module's metrics land: the small interface the host writes through.

A module defines a metric by kind and name (``proxy_define_metric``) and then moves it
by the id it got back. The host passes those calls to a ``MetricsSink``; the adapter at
the proxy core wires one to the stats registry, tests use ``DictMetricsSink``. The host
counts its own failures through the same sink, as counters named ``wasm.trap``,
``wasm.timeout`` and ``wasm.oom``.

A sink raises ``KeyError`` for an id it never gave out (the module gets ``NOT_FOUND``)
and ``ValueError`` for a change the metric's kind refuses, such as a counter going down
(``BAD_ARGUMENT``).
"""

from __future__ import annotations

from typing import Protocol

import attrs

from gateway.filters.wasm.abi import MetricKind

__all__ = ["DictMetricsSink", "MetricsSink"]


class MetricsSink(Protocol):
    def define(self, kind: MetricKind, name: str) -> int:
        """The id of metric ``name`` (the same id when it is defined again)."""
        ...

    def increment(self, metric_id: int, delta: int) -> None: ...

    def record(self, metric_id: int, value: int) -> None: ...

    def get(self, metric_id: int) -> int: ...


@attrs.define
class DictMetricsSink:
    """Metrics in a dict, by name: counters and gauges hold a number, a histogram the list
    of values recorded (``get`` answers its count)."""

    values: dict[str, int | list[int]] = attrs.field(factory=dict)
    kinds: dict[str, MetricKind] = attrs.field(factory=dict)
    _names: list[str] = attrs.field(factory=list)

    def define(self, kind: MetricKind, name: str) -> int:
        if name in self.kinds:
            if self.kinds[name] is not kind:
                raise ValueError(f"{name} is a {self.kinds[name].name.lower()}")
            return self._names.index(name)
        self.kinds[name] = kind
        self.values[name] = [] if kind is MetricKind.HISTOGRAM else 0
        self._names.append(name)
        return len(self._names) - 1

    def _name(self, metric_id: int) -> str:
        if not 0 <= metric_id < len(self._names):
            raise KeyError(metric_id)
        return self._names[metric_id]

    def increment(self, metric_id: int, delta: int) -> None:
        name = self._name(metric_id)
        kind = self.kinds[name]
        if kind is MetricKind.HISTOGRAM or (kind is MetricKind.COUNTER and delta < 0):
            raise ValueError(f"{name}: a {kind.name.lower()} cannot change by {delta}")
        value = self.values[name]
        assert isinstance(value, int)
        self.values[name] = value + delta

    def record(self, metric_id: int, value: int) -> None:
        name = self._name(metric_id)
        current = self.values[name]
        if isinstance(current, list):
            current.append(value)
        else:
            self.values[name] = value

    def get(self, metric_id: int) -> int:
        value = self.values[self._name(metric_id)]
        return len(value) if isinstance(value, list) else value

    def __getitem__(self, name: str) -> int:
        """A metric's value by name (a histogram's count); 0 when it was never defined."""
        value = self.values.get(name, 0)
        return len(value) if isinstance(value, list) else value
