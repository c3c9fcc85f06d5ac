"""Stats across processes: each worker dumps its registry, the primary sums the dumps.

Theory of operation: with ``--workers N`` every worker process keeps its own
``StatsRegistry`` (the data path's plain increments stay process-local: nothing
cross-process per request). When the primary needs figures (an admin read, its
once-a-second tick) it asks each worker for a ``dump``: plain data, every counter,
gauge, status-class list and histogram of every scope, with the gauges refreshed from
the worker's runtimes first. ``absorb`` then sets the primary's registry to the sum of
the dumps, scope by scope: counters and gauges add, status classes add slot by slot,
histograms add bucket by bucket (Envoy merges its workers' histograms the same way).
The primary's registry is then read by the unchanged exporters, and its windows and
series are ticked from these sums, so recent quantiles and the dashboard cover the
whole gateway.

A sum is exact: a counter summed over workers is the number of events in all of them.
A worker restarted after a crash starts from zero; so that the whole gateway's
counters never go down (Prometheus would read a drop as a reset of every series), the
primary keeps the last dump it had of each dead worker, its gauges zeroed
(``retired``), and adds it in. Only what the dead worker counted after its last
report is lost.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gateway.observe.stats.custom import GAUGE as CUSTOM_GAUGE
from gateway.observe.stats.registry import StatsRegistry
from gateway.observe.stats.scopes import (
    COUNTER,
    GAUGE,
    HISTOGRAM,
    STATUS_CLASSES,
    Scope,
    control_stats,
    stat_names,
)

__all__ = ["absorb", "combine", "dump", "retired", "total"]

ScopeDump = dict[str, Any]


def _dump_scope(scope: Scope) -> ScopeDump:
    cls = type(scope)
    out: ScopeDump = {}
    for name in stat_names(cls, COUNTER) + stat_names(cls, GAUGE):
        out[name] = getattr(scope, name)
    for name in stat_names(cls, STATUS_CLASSES):
        out[name] = list(getattr(scope, name))
    for name in stat_names(cls, HISTOGRAM):
        hist = getattr(scope, name)
        out[name] = (list(hist.counts), hist.sum)
    return out


def dump(registry: StatsRegistry) -> dict[str, Any]:
    """Every figure of ``registry`` as plain data, gauges read from the runtimes now."""
    registry.refresh_gauges()
    return {
        "listeners": {name: _dump_scope(ls) for name, ls in registry.listeners.items()},
        "clusters": {
            name: {
                "stats": _dump_scope(cs),
                "endpoints": {key: _dump_scope(es) for key, es in cs.endpoints.items()},
            }
            for name, cs in registry.clusters.items()
        },
        "routes": [[*key, _dump_scope(rs)] for key, rs in registry.routes.items()],
        "filters": [[*key, _dump_scope(fs)] for key, fs in registry.filters.items()],
        "custom": registry.custom.dump(),
    }


def _zero(scope: Scope) -> None:
    """Every figure to zero, gauges too (they are summed afresh), but the control side's
    own (``control_stats``); frames are kept."""
    cls = type(scope)
    own = control_stats(cls)
    for name in stat_names(cls, COUNTER) + stat_names(cls, GAUGE):
        if name not in own:
            setattr(scope, name, 0)
    for name in stat_names(cls, STATUS_CLASSES):
        counts = getattr(scope, name)
        counts[:] = [0] * len(counts)
    for name in stat_names(cls, HISTOGRAM):
        hist = getattr(scope, name)
        hist.counts[:] = [0] * len(hist.counts)
        hist.sum = 0.0


def _add(scope: Scope, part: ScopeDump) -> None:
    cls = type(scope)
    own = control_stats(cls)
    for name in stat_names(cls, COUNTER) + stat_names(cls, GAUGE):
        if name not in own:
            setattr(scope, name, getattr(scope, name) + part.get(name, 0))
    for name in stat_names(cls, STATUS_CLASSES):
        counts = getattr(scope, name)
        for i, n in enumerate(part.get(name, ())):
            counts[i] += n
    for name in stat_names(cls, HISTOGRAM):
        hist = getattr(scope, name)
        counts, total_ms = part.get(name, ((), 0.0))
        for i, n in enumerate(counts):
            hist.counts[i] += n
        hist.sum += total_ms


def absorb(registry: StatsRegistry, dumps: Iterable[dict[str, Any]]) -> None:
    """Set every scope of ``registry`` to the sum of ``dumps`` (one per worker).

    Scopes only the registry has (a listener no worker has served yet) read zero; scopes
    only a dump has are made (an endpoint the primary has not seen yet).
    """
    for scope in registry.scopes():
        _zero(scope)
    registry.custom.reset()
    for part in dumps:
        for name, figures in part["listeners"].items():
            _add(registry.listener(name), figures)
        for name, cluster in part["clusters"].items():
            cluster_stats = registry.cluster(name)
            _add(cluster_stats, cluster["stats"])
            for key, figures in cluster["endpoints"].items():
                _add(cluster_stats.endpoint(key), figures)
        for listener, route, cluster, figures in part.get("routes", ()):
            _add(registry.route_cluster(listener, route, cluster), figures)
        for listener, kind, name, figures in part.get("filters", ()):
            _add(registry.filter(listener, kind, name), figures)
        registry.custom.add_dump(part.get("custom", {}))


def total(part: dict[str, Any], stat: str) -> int:
    """One listener stat (or status class list, summed) over every listener of a dump."""
    out = 0
    for figures in part["listeners"].values():
        value = figures.get(stat, 0)
        out += sum(value) if isinstance(value, list) else value
    return out


def combine(dumps: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """One dump that is the sum of ``dumps``."""
    registry = StatsRegistry()
    registry.local_gauges = False
    absorb(registry, dumps)
    return dump(registry)


def retired(part: dict[str, Any]) -> dict[str, Any]:
    """A dead worker's last dump as it stays in the sums: its counters, no gauges."""
    registry = StatsRegistry()
    registry.local_gauges = False
    absorb(registry, [part])
    for scope in registry.scopes():
        for name in stat_names(type(scope), GAUGE):
            setattr(scope, name, 0)
    custom = registry.custom
    for name, kind in custom.kinds.items():
        if kind == CUSTOM_GAUGE:
            custom.values[name] = 0
    return dump(registry)
