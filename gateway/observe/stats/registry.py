"""The stats registry: the one source of truth for what the gateway is doing.

Theory of operation: the registry owns one ``ListenerStats`` per listener name and one
``ClusterStats`` per cluster name, made on first use and kept across restarts of the
actors that use them (a listener re-bound, a control plane restarted, a cluster
reconfigured all find their stats again by name). Endpoint stats live in their
cluster's stats, by address (``ClusterStats.endpoint``); the endpoints' live state
(in-flight requests, open connections, weight, health) is read from the cluster
handles the control plane registers with ``track_cluster``.

The data path writes the stats with plain increments and never calls the registry. One
task, ``run_stats_ticker``, calls ``tick`` once a second: it records a frame per scope
(the windows behind recent quantiles and success rates) and appends a point to each
cluster's time series (requests/s, error rate, p50, p99), which the dashboard draws.
With ``ticking`` off the ticker leaves the windows alone and whoever turned it off calls
``tick`` itself: a test does, so that a window figure depends on the ticks it made and
not on where the once-a-second tick fell in its requests.
The admin API reads the registry directly: everything runs on one thread.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

import attrs
import trio

from gateway.observe.stats.custom import CustomStats
from gateway.observe.stats.histogram import difference, quantile
from gateway.observe.stats.scopes import (
    ClusterStats,
    FilterStats,
    Frame,
    ListenerStats,
    RouteClusterStats,
    Scope,
)

if TYPE_CHECKING:
    from gateway.cluster.actor import ClusterHandle
    from gateway.cluster.snapshot import EndpointState

#: seconds behind "recent": quantiles, success rates
RECENT_WINDOW = 30.0
#: seconds between ticks (frames, series points)
TICK = 1.0
#: seconds of history in each cluster's series
SERIES_SPAN = 300.0


@attrs.frozen
class SeriesPoint:
    """One tick of one cluster: what the dashboard charts."""

    #: wall-clock time (Unix seconds) at the end of the tick
    t: float
    requests_per_s: float
    #: share of requests that ended in a 5xx or found no endpoint; None without requests
    error_rate: float | None
    #: upstream_rq_time quantiles over the tick (ms); None without completed requests
    p50: float | None
    p99: float | None


class StatsRegistry:
    """Listener and cluster stats by name, their windows, and the clusters' time series."""

    def __init__(
        self, *, window: float = RECENT_WINDOW, tick: float = TICK, series_span: float = SERIES_SPAN
    ) -> None:
        self.window = window
        self.tick_interval = tick
        self.listeners: dict[str, ListenerStats] = {}
        self.clusters: dict[str, ClusterStats] = {}
        self.series: dict[str, deque[SeriesPoint]] = {}
        #: per (listener, route, cluster), for the routes a rollout watches
        self.routes: dict[tuple[str, str, str], RouteClusterStats] = {}
        #: per (listener, ``http_filter`` or ``network_filter``, filter name)
        self.filters: dict[tuple[str, str, str], FilterStats] = {}
        #: ``wasmcustom.*``: what proxy-wasm modules define (``custom.py``)
        self.custom = CustomStats()
        self._series_len = max(2, int(series_span / tick))
        self._handles: dict[str, ClusterHandle] = {}
        #: wall-clock time of the start, or of the last reset
        self.since = time.time()
        #: whether ``run_stats_ticker`` ticks; when False, ``tick`` is called by hand
        self.ticking = True
        #: whether gauges are read from this process's endpoint runtimes; False in a
        #: primary whose figures are the sums of its workers' (``merge.absorb``)
        self.local_gauges = True

    # -- scopes ------------------------------------------------------------------------

    def listener(self, name: str) -> ListenerStats:
        """The stats of listener ``name``, made on first use."""
        stats = self.listeners.get(name)
        if stats is None:
            stats = self.listeners[name] = ListenerStats(name)
        return stats

    def cluster(self, name: str) -> ClusterStats:
        """The stats of cluster ``name``, made on first use."""
        stats = self.clusters.get(name)
        if stats is None:
            stats = self.clusters[name] = ClusterStats(name)
            self.series[name] = deque(maxlen=self._series_len)
        return stats

    def route_cluster(self, listener: str, route: str, cluster: str) -> RouteClusterStats:
        """The stats of ``route``'s requests to ``cluster``, made on first use."""
        key = (listener, route, cluster)
        stats = self.routes.get(key)
        if stats is None:
            stats = self.routes[key] = RouteClusterStats("/".join(key))
        return stats

    def filter(self, listener: str, kind: str, name: str) -> FilterStats:
        """The stats of filter ``name`` of ``listener`` (``kind``: ``http_filter`` or
        ``network_filter``), made on first use."""
        key = (listener, kind, name)
        stats = self.filters.get(key)
        if stats is None:
            stats = self.filters[key] = FilterStats("/".join(key))
        return stats

    def track_cluster(self, handle: ClusterHandle) -> None:
        """Read ``handle``'s endpoints from now on (its latest snapshot, each time)."""
        self._handles[handle.name] = handle
        self.cluster(handle.name)

    def forget_cluster(self, name: str) -> None:
        """The cluster is gone from the config: its stats and series go too."""
        self._handles.pop(name, None)
        self.clusters.pop(name, None)
        self.series.pop(name, None)

    def forget_listener(self, name: str) -> None:
        self.listeners.pop(name, None)
        for key in [k for k in self.routes if k[0] == name]:
            del self.routes[key]
        for fkey in [k for k in self.filters if k[0] == name]:
            del self.filters[fkey]

    def endpoints(self, cluster: str) -> tuple[EndpointState, ...]:
        """Every endpoint the cluster still knows, draining ones included."""
        handle = self._handles.get(cluster)
        return () if handle is None else handle.snapshot.all_endpoints

    def serving(self, cluster: str) -> frozenset[int]:
        """``id()`` of the endpoints the cluster's balancer may pick now."""
        handle = self._handles.get(cluster)
        return frozenset() if handle is None else frozenset(map(id, handle.snapshot.endpoints))

    def refresh_gauges(self) -> None:
        """Gauges whose truth lives in the endpoints' runtimes, read now."""
        if not self.local_gauges:
            return
        for name, cs in self.clusters.items():
            cx = rq = pending = 0
            for rt in self.endpoints(name):
                es = cs.endpoint(rt.key)
                # rt.active counts a request from its pick, connect included (what
                # least_request needs); Envoy's rq_active leaves the pending ones out
                connecting = rt.pool.connecting
                es.rq_active = max(rt.active - connecting, 0)
                es.cx_active = rt.pool.open
                es.cx_idle = rt.pool.idle
                cx += rt.pool.open
                rq += es.rq_active
                pending += connecting
            cs.upstream_cx_active = cx
            cs.upstream_rq_active = rq
            cs.upstream_rq_pending_active = pending
            thresholds = cs.thresholds
            cs.circuit_breakers_cx_open = int(cx >= thresholds.max_connections)
            cs.circuit_breakers_rq_open = int(cs.rq_in_flight >= thresholds.max_requests)
            cs.circuit_breakers_rq_pending_open = int(
                cs.rq_connecting >= thresholds.max_pending_requests
            )
            cs.circuit_breakers_rq_retry_open = int(
                not thresholds.retry_allowed(cs.rq_in_flight, cs.rq_retry_active)
            )
            # the state as of the breaker's last request (an elapsed open time is
            # noticed by the next one)
            guard = cs.breaker
            cs.breaker_open = int(guard is not None and guard.breaker.state.value != "closed")

    # -- time --------------------------------------------------------------------------

    def tick(self, now: float, wall: float | None = None) -> None:
        """Take a frame of every scope and extend the clusters' series."""
        wall = time.time() if wall is None else wall
        window = self.window
        for ls in self.listeners.values():
            ls.take_frame(now, window)
        for name, cs in self.clusters.items():
            previous = cs.frames[-1] if cs.frames else None
            frame = cs.take_frame(now, window)
            series = self.series.get(name)
            if previous is not None and series is not None:
                point = _series_point(previous, frame, wall)
                if point is not None:
                    series.append(point)
            known = {rt.key for rt in self.endpoints(name)}
            if name in self._handles:
                # endpoints that left the cluster (and finished their requests) go
                for key in [k for k in cs.endpoints if k not in known]:
                    del cs.endpoints[key]
            for es in cs.endpoints.values():
                es.take_frame(now, window)

    def reset(self) -> None:
        """Every counter and histogram to zero, windows and series restarted."""
        for scope in self.scopes():
            scope.reset()
        self.custom.reset()
        for series in self.series.values():
            series.clear()
        self.since = time.time()

    def scopes(self) -> Iterable[Scope]:
        """Every listener, cluster, endpoint and route scope."""
        yield from self.listeners.values()
        for cs in self.clusters.values():
            yield cs
            yield from cs.endpoints.values()
        yield from self.routes.values()
        yield from self.filters.values()


def _series_point(previous: Frame, frame: Frame, wall: float) -> SeriesPoint | None:
    dt = frame.t - previous.t
    rq, none_healthy, errors = (a - b for a, b in zip(frame.values, previous.values, strict=True))
    if dt <= 0 or min(rq, none_healthy, errors) < 0:
        return None  # a reset in between: no honest figure for this tick
    requests = rq + none_healthy
    counts = difference(frame.histograms[0], previous.histograms[0])
    return SeriesPoint(
        t=wall,
        requests_per_s=requests / dt,
        error_rate=(errors + none_healthy) / requests if requests else None,
        p50=quantile(counts, 0.5),
        p99=quantile(counts, 0.99),
    )


async def run_stats_ticker(
    registry: StatsRegistry,
    *,
    refresh: Callable[[], Awaitable[object]] | None = None,
    task_status: trio.TaskStatus[StatsRegistry] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Tick ``registry`` once per interval while it is ``ticking``, until cancelled.

    ``refresh``, when given, is awaited before each tick: a primary's, which sets the
    registry to the sums of its workers' figures.
    """
    task_status.started(registry)
    while True:
        if registry.ticking:
            if refresh is not None:
                await refresh()
            registry.tick(trio.current_time())
        await trio.sleep(registry.tick_interval)
