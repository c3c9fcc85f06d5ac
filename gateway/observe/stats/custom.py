"""``wasmcustom.<name>``: the metrics proxy-wasm modules define, a scope whose stats are
made at run time (``proxy_define_metric``), not declared as the other scopes' are.

One ``CustomStats`` per registry (``StatsRegistry.custom``). A name has one kind for
good: ``counter`` (goes up), ``gauge`` (set, or moved either way) or ``histogram``
(values recorded into the registry's buckets). Modules of different filters that define
the same name share it, as Envoy's ``wasmcustom`` scope does. Across worker processes
(``merge.py``) counters, gauges and histograms are summed, as the other scopes' are.
"""

from __future__ import annotations

from typing import Any, Final

from gateway.observe.stats.histogram import Histogram

__all__ = ["COUNTER", "CUSTOM_PREFIX", "GAUGE", "HISTOGRAM", "CustomStats"]

COUNTER: Final = "counter"
GAUGE: Final = "gauge"
HISTOGRAM: Final = "histogram"
#: Envoy's scope for a module's own metrics
CUSTOM_PREFIX: Final = "wasmcustom."


class CustomStats:
    """Metrics by name, each of one kind (module docstring)."""

    def __init__(self) -> None:
        self.kinds: dict[str, str] = {}
        #: counters and gauges
        self.values: dict[str, int] = {}
        self.histograms: dict[str, Histogram] = {}

    def define(self, kind: str, name: str) -> None:
        """``name`` is a ``kind`` from now on; ``ValueError`` if it is already another."""
        known = self.kinds.get(name)
        if known is not None:
            if known != kind:
                raise ValueError(f"{name} is a {known}")
            return
        if kind not in (COUNTER, GAUGE, HISTOGRAM):
            raise ValueError(f"no metric kind {kind!r}")
        self.kinds[name] = kind
        if kind == HISTOGRAM:
            self.histograms[name] = Histogram()
        else:
            self.values[name] = 0

    def add(self, name: str, delta: int) -> None:
        kind = self.kinds[name]
        if kind == HISTOGRAM or (kind == COUNTER and delta < 0):
            raise ValueError(f"{name}: a {kind} cannot change by {delta}")
        self.values[name] += delta

    def record(self, name: str, value: int) -> None:
        """A histogram's value recorded; a gauge (or counter) set to ``value``."""
        if self.kinds[name] == HISTOGRAM:
            self.histograms[name].record(value)
        else:
            self.values[name] = value

    def get(self, name: str) -> int:
        """A counter's or gauge's value; a histogram's count."""
        if self.kinds[name] == HISTOGRAM:
            return sum(self.histograms[name].counts)
        return self.values[name]

    # -- the registry's reset, a worker's dump, the primary's sums -----------------------

    def reset(self) -> None:
        for name in self.values:
            self.values[name] = 0
        for hist in self.histograms.values():
            hist.counts[:] = [0] * len(hist.counts)
            hist.sum = 0.0

    def dump(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, kind in self.kinds.items():
            if kind == HISTOGRAM:
                hist = self.histograms[name]
                out[name] = [kind, [list(hist.counts), hist.sum]]
            else:
                out[name] = [kind, self.values[name]]
        return out

    def add_dump(self, part: dict[str, Any]) -> None:
        """A worker's ``dump`` added in (a name of another kind here is left out)."""
        for name, (kind, value) in part.items():
            try:
                self.define(kind, name)
            except ValueError:
                continue
            if kind == HISTOGRAM:
                hist = self.histograms[name]
                counts, total = value
                for i, n in enumerate(counts):
                    hist.counts[i] += n
                hist.sum += total
            else:
                self.values[name] += value
