"""Counters, gauges and histograms of the running gateway, named after Envoy's.

    StatsRegistry                    the one source of truth (``registry.py``)
    ├── ListenerStats  per listener  listener.<name>.downstream_*
    └── ClusterStats   per cluster   cluster.<name>.upstream_*
        └── EndpointStats            cluster.<name>.endpoint.<address>.rq_*
    RouteClusterStats  per route a rollout watches, per cluster
                       listener.<l>.route.<r>.cluster.<c>.upstream_rq_*
    CustomStats        what proxy-wasm modules define (``custom.py``)
                       wasmcustom.<name>

The data path increments attributes of these objects directly (``scopes.py``);
``export.py`` renders them for the admin API (JSON, Prometheus, per endpoint);
``merge.py`` dumps a worker's registry and sums the dumps into the primary's.
"""

from __future__ import annotations

from gateway.observe.stats.histogram import BOUNDS_MS, Histogram, quantile, quantiles
from gateway.observe.stats.registry import SeriesPoint, StatsRegistry, run_stats_ticker
from gateway.observe.stats.scopes import (
    ClusterStats,
    EndpointStats,
    FilterStats,
    ListenerStats,
    RouteClusterStats,
)

__all__ = [
    "BOUNDS_MS",
    "ClusterStats",
    "EndpointStats",
    "FilterStats",
    "Histogram",
    "ListenerStats",
    "RouteClusterStats",
    "SeriesPoint",
    "StatsRegistry",
    "quantile",
    "quantiles",
    "run_stats_ticker",
]
