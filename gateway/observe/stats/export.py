"""The registry's figures as the admin API serves them: JSON, Prometheus text, per endpoint.

Names in JSON are Envoy's dotted ones (``cluster.api.upstream_rq_2xx``,
``cluster.api.endpoint.127.0.0.1:8001.rq_total``). In the Prometheus exposition the
scope becomes labels (``listener``, ``cluster``, ``endpoint``) and the stat the metric
name, prefixed ``triogate_<scope>_``; counters end in ``_total`` as the format expects,
status classes are one metric with a ``response_code_class`` label (Envoy's
``envoy_response_code_class``), and histograms have ``_bucket`` (cumulative, ``le`` in
milliseconds), ``_sum`` and ``_count``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from gateway.observe.stats.custom import COUNTER as CUSTOM_COUNTER
from gateway.observe.stats.custom import CUSTOM_PREFIX
from gateway.observe.stats.custom import HISTOGRAM as CUSTOM_HISTOGRAM
from gateway.observe.stats.histogram import BOUNDS_MS, Histogram, difference, quantiles
from gateway.observe.stats.registry import StatsRegistry
from gateway.observe.stats.scopes import (
    CLASSES,
    COUNTER,
    GAUGE,
    HISTOGRAM,
    STATUS_CLASSES,
    Scope,
    exported_name,
    stat_names,
)
from policies.endpoint_health import HealthFlag
from policies.health import HealthState

if TYPE_CHECKING:
    from gateway.cluster.snapshot import EndpointState

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _scopes(registry: StatsRegistry) -> Iterator[tuple[str, dict[str, str], Scope]]:
    """(JSON prefix, Prometheus labels, scope) of every scope, listeners first."""
    for name, ls in registry.listeners.items():
        yield f"listener.{name}.", {"listener": name}, ls
    for name, cs in registry.clusters.items():
        yield f"cluster.{name}.", {"cluster": name}, cs
    for name, cs in registry.clusters.items():
        for key, es in cs.endpoints.items():
            yield f"cluster.{name}.endpoint.{key}.", {"cluster": name, "endpoint": key}, es
    for (listener, route, cluster), rs in registry.routes.items():
        labels = {"route": route, "listener": listener, "cluster": cluster}
        yield f"listener.{listener}.route.{route}.cluster.{cluster}.", labels, rs
    for (listener, kind, name), fs in registry.filters.items():
        yield f"listener.{listener}.{kind}.{name}.", {kind: name, "listener": listener}, fs


def stats_json(registry: StatsRegistry, pattern: re.Pattern[str] | None = None) -> dict[str, Any]:
    """Every stat by its dotted name; only names ``pattern`` finds, when given."""
    registry.refresh_gauges()
    keep: Callable[[str], bool] = (
        (lambda _n: True) if pattern is None else (lambda n: pattern.search(n) is not None)
    )
    counters: dict[str, int] = {}
    gauges: dict[str, int | float | None] = {}
    histograms: dict[str, Any] = {}
    for prefix, _labels, scope in _scopes(registry):
        for name, value in scope.counters().items():
            if keep(prefix + name):
                counters[prefix + name] = value
        for name, value in scope.gauges().items():
            if keep(prefix + name):
                gauges[prefix + name] = value
        start = scope.window_start()
        for i, (name, hist) in enumerate(scope.histograms().items()):
            if keep(prefix + name):
                recent = difference(hist.counts, start.histograms[i]) if start else hist.counts
                histograms[prefix + name] = histogram_json(hist, recent)
    for name, cs in registry.clusters.items():
        for key, es in cs.endpoints.items():
            full = f"cluster.{name}.endpoint.{key}.success_rate"
            if keep(full):
                gauges[full] = es.success_rate()
    custom = registry.custom
    for name, kind in custom.kinds.items():
        full = CUSTOM_PREFIX + name
        if not keep(full):
            continue
        if kind == CUSTOM_HISTOGRAM:
            hist = custom.histograms[name]
            histograms[full] = histogram_json(hist, hist.counts)
        else:
            (counters if kind == CUSTOM_COUNTER else gauges)[full] = custom.values[name]
    return {
        "since": registry.since,
        "recent_window_s": registry.window,
        "counters": counters,
        "gauges": gauges,
        "histograms": histograms,
    }


def histogram_json(hist: Histogram, recent: list[int]) -> dict[str, Any]:
    cumulative: dict[str, int] = {}
    running = 0
    for bound, n in zip((*BOUNDS_MS, math.inf), hist.counts, strict=True):
        running += n
        cumulative[_le(bound)] = running
    return {
        "count": running,
        "sum_ms": hist.sum,
        "buckets": cumulative,
        "since_start": quantiles(hist.counts),
        "recent": {**quantiles(recent), "count": sum(recent)},
    }


def _le(bound: float) -> str:
    if bound == math.inf:
        return "+Inf"
    return str(int(bound)) if bound == int(bound) else str(bound)


# -- Prometheus ---------------------------------------------------------------------------


def _labels(labels: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _metric(kind: str, stat: str) -> str:
    return f"triogate_{kind}_{stat}"


def _prometheus_name(cls: type, stat: str) -> str:
    """A stat's exported name with Prometheus's separator (``health_check_attempt``)."""
    if stat not in attrs.fields_dict(cls):
        return stat  # a derived counter (a property)
    return exported_name(cls, stat).replace(".", "_")


def prometheus_text(registry: StatsRegistry, workers: Sequence[Mapping[str, Any]] = ()) -> str:
    """The Prometheus text exposition (format 0.0.4) of every stat, grouped by family.

    ``workers``: the rows of ``Gateway.workers_view`` with worker processes, exported
    per ``worker`` label (requests, open connections, restarts).
    """
    registry.refresh_gauges()
    # family name -> (type, sample lines); insertion order is the output order
    families: dict[str, tuple[str, list[str]]] = {}

    def add(family: str, typ: str, line: str) -> None:
        families.setdefault(family, (typ, []))[1].append(line)

    for _prefix, labels, scope in _scopes(registry):
        kind = "endpoint" if "endpoint" in labels else next(iter(labels))
        cls = type(scope)
        lab = _labels(labels)
        for stat in (*scope.DERIVED_COUNTERS, *stat_names(cls, COUNTER)):
            name = _prometheus_name(cls, stat)
            family = _metric(kind, name if name.endswith("_total") else name + "_total")
            add(family, "counter", f"{family}{lab} {getattr(scope, stat)}")
        for stat in stat_names(cls, STATUS_CLASSES):
            family = _metric(kind, stat)
            counts = getattr(scope, stat)
            for c in CLASSES:
                cl = _labels({**labels, "response_code_class": f"{c}xx"})
                add(family, "counter", f"{family}{cl} {counts[c]}")
        for stat in stat_names(cls, GAUGE):
            family = _metric(kind, _prometheus_name(cls, stat))
            add(family, "gauge", f"{family}{lab} {getattr(scope, stat)}")
        for stat in stat_names(cls, HISTOGRAM):
            family = _metric(kind, stat)
            hist: Histogram = getattr(scope, stat)
            running = 0
            for bound, n in zip((*BOUNDS_MS, math.inf), hist.counts, strict=True):
                running += n
                bl = _labels({**labels, "le": _le(bound)})
                add(family, "histogram", f"{family}_bucket{bl} {running}")
            add(family, "histogram", f"{family}_sum{lab} {_number(hist.sum)}")
            add(family, "histogram", f"{family}_count{lab} {running}")
    for name, cs in registry.clusters.items():
        for key, es in cs.endpoints.items():
            rate = es.success_rate()
            if rate is not None:
                family = "triogate_endpoint_success_rate"
                lab = _labels({"cluster": name, "endpoint": key})
                add(family, "gauge", f"{family}{lab} {_number(rate)}")
    custom = registry.custom
    for name, kind in custom.kinds.items():
        # Envoy's exposition: envoy_wasmcustom_<name>; ours under triogate_
        stat = _PROMETHEUS_UNSAFE.sub("_", name)
        if kind == CUSTOM_HISTOGRAM:
            family = f"triogate_wasmcustom_{stat}"
            hist = custom.histograms[name]
            running = 0
            for bound, n in zip((*BOUNDS_MS, math.inf), hist.counts, strict=True):
                running += n
                add(family, "histogram", f"{family}_bucket{_labels({'le': _le(bound)})} {running}")
            add(family, "histogram", f"{family}_sum {_number(hist.sum)}")
            add(family, "histogram", f"{family}_count {running}")
        elif kind == CUSTOM_COUNTER:
            family = f"triogate_wasmcustom_{stat.removesuffix('_total')}_total"
            add(family, "counter", f"{family} {custom.values[name]}")
        else:
            family = f"triogate_wasmcustom_{stat}"
            add(family, "gauge", f"{family} {custom.values[name]}")
    for row in workers:
        lab = _labels({"worker": str(row["index"])})
        for stat, typ in _WORKER_STATS:
            value = row[stat.removesuffix("_total")] if stat == "restarts_total" else row[stat]
            if value is not None:
                family = f"triogate_worker_{stat}"
                add(family, typ, f"{family}{lab} {value}")
    out: list[str] = []
    for family, (typ, lines) in families.items():
        out.append(f"# HELP {family} {_HELP.get(family, family)}")
        out.append(f"# TYPE {family} {typ}")
        out.extend(lines)
    return "\n".join(out) + "\n"


#: per worker process: (stat in ``Gateway.workers_view`` rows, Prometheus type)
_WORKER_STATS = (
    ("downstream_rq_total", "counter"),
    ("downstream_cx_active", "gauge"),
    ("restarts_total", "counter"),
)


#: what a module's metric name may hold that a Prometheus metric name may not
_PROMETHEUS_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")


def _number(value: float) -> str:
    return repr(float(value))


_HELP = {
    "triogate_worker_downstream_rq_total": "requests the worker process has finished",
    "triogate_worker_downstream_cx_active": "client connections the worker process has open",
    "triogate_worker_restarts_total": "times the worker process was started again",
    "triogate_endpoint_success_rate": "share of the endpoint's recent attempts that did not fail",
    "triogate_listener_downstream_cx_total": "client connections accepted",
    "triogate_listener_downstream_cx_active": "client connections open",
    "triogate_listener_downstream_rq_total": "requests ended (answered or not)",
    "triogate_listener_downstream_rq_xx": "requests ended, by status class of the response",
    "triogate_listener_downstream_rq_time": "request time in ms, head to end of response",
    "triogate_listener_downstream_cx_protocol_error_total": "malformed requests (400, 431)",
    "triogate_listener_downstream_rq_header_timeout_total": "request heads too slow (408)",
    "triogate_listener_access_log_written_total": "access log lines written",
    "triogate_listener_access_log_dropped_total": "access log lines dropped (writer behind)",
    "triogate_listener_fault_delays_injected_total": "requests delayed by a fault",
    "triogate_listener_fault_aborts_injected_total": "requests aborted by a fault",
    "triogate_listener_fault_response_rl_injected_total": "responses slowed by a fault",
    "triogate_listener_fault_faults_overflow_total": "faults skipped: max_active_faults",
    "triogate_listener_fault_active_faults": "faults being applied",
    "triogate_listener_mirror_rq_sent_total": "request copies a shadow cluster answered",
    "triogate_listener_mirror_rq_failed_total": "request copies that failed or timed out",
    "triogate_listener_mirror_rq_dropped_total": "request copies dropped: too many in flight",
    "triogate_listener_mirror_rq_body_skipped_total": "requests not copied: body streamed/too big",
    "triogate_cluster_upstream_cx_total": "upstream connections opened (or tried)",
    "triogate_cluster_upstream_cx_active": "upstream connections open",
    "triogate_cluster_upstream_cx_connect_fail_total": "upstream connects that failed",
    "triogate_cluster_upstream_cx_connect_timeout_total": "upstream connects that timed out",
    "triogate_cluster_upstream_cx_overflow_total": "attempts refused: pool max_connections busy",
    "triogate_cluster_upstream_cx_none_healthy_total": "requests with no endpoint to pick",
    "triogate_cluster_upstream_rq_total": "attempts ended",
    "triogate_cluster_upstream_rq_xx": "attempts ended, by status class (failures as 5xx)",
    "triogate_cluster_upstream_rq_active": "attempts in flight",
    "triogate_cluster_upstream_rq_pending_active": "attempts waiting for a new connection",
    "triogate_cluster_upstream_rq_timeout_total": "attempts cut by the route timeout",
    "triogate_cluster_upstream_rq_per_try_timeout_total": "tries cut by per_try_timeout",
    "triogate_cluster_upstream_rq_retry_total": "retries",
    "triogate_cluster_upstream_rq_retry_success_total": "retries whose answer was final",
    "triogate_cluster_upstream_rq_retry_limit_exceeded_total": "requests out of tries (URX)",
    "triogate_cluster_upstream_rq_retry_overflow_total": "retries refused: max_retries/budget",
    "triogate_cluster_upstream_rq_time": "attempt time in ms, start to end of response",
    "triogate_endpoint_rq_total": "attempts on the endpoint ended",
    "triogate_endpoint_rq_error_total": "attempts on the endpoint that failed or got a 5xx",
}


# -- endpoints ----------------------------------------------------------------------------


def health_flags(rt: EndpointState, serving: bool) -> list[str]:
    """Envoy-style health flags of an endpoint; ``["healthy"]`` when nothing is wrong.

    Active health checks add ``failed_active_hc`` (unhealthy) or ``pending_active_hc``
    (no verdict yet); an outlier ejection adds ``failed_outlier_check``.
    """
    flags: list[str] = []
    state: str = rt.config.state
    if state != "active":
        flags.append(state)
    elif rt.config.weight == 0:
        flags.append("zero_weight")
    elif not serving:
        flags.append("pending_dynamic_removal")
    if rt.check is HealthState.UNHEALTHY:
        flags.append(HealthFlag.FAILED_ACTIVE_HC.value)
    elif rt.check is HealthState.UNKNOWN:
        flags.append(HealthFlag.PENDING_ACTIVE_HC.value)
    if rt.ejected:
        flags.append(HealthFlag.FAILED_OUTLIER_CHECK.value)
    return flags or ["healthy"]


def clusters_view(registry: StatsRegistry) -> dict[str, Any]:
    """Each cluster's endpoints: address, weight, health, load and recent success rate."""
    registry.refresh_gauges()
    out: dict[str, Any] = {}
    for name, cs in registry.clusters.items():
        serving = registry.serving(name)
        endpoints = []
        for rt in registry.endpoints(name):
            es = cs.endpoint(rt.key)
            is_serving = id(rt) in serving
            endpoints.append(
                {
                    "address": rt.key,
                    "weight": rt.config.weight,
                    "priority": rt.config.priority,
                    "locality": rt.config.locality,
                    "state": rt.config.state,
                    "serving": is_serving,
                    "health_flags": health_flags(rt, is_serving),
                    # the gauges, not the runtime: in a primary they are the workers' sums
                    "active_requests": es.rq_active,
                    "open_connections": es.cx_active,
                    "rq_total": es.rq_total,
                    "rq_error": es.rq_error,
                    "rq_timeout": es.rq_timeout,
                    "cx_connect_fail": es.cx_connect_fail,
                    "success_rate": es.success_rate(),
                }
            )
        hist = cs.upstream_rq_time
        start = cs.window_start()
        recent = difference(hist.counts, start.histograms[0]) if start else hist.counts
        out[name] = {
            "upstream_rq_total": cs.upstream_rq_total,
            "upstream_rq_active": cs.upstream_rq_active,
            "upstream_cx_active": cs.upstream_cx_active,
            "upstream_rq_time_recent": quantiles(recent),
            "endpoints": endpoints,
        }
    return out
