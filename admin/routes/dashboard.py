"""The live dashboard: one HTML page, its script, and the JSON it polls once a second.

``GET /dashboard`` is a static page (``admin/static/dashboard.html``) that draws with
uPlot, vendored in ``admin/static/`` (see its README: nothing is fetched from the
internet). The page polls ``GET /dashboard/data``: listeners, routes with their split
weights, clusters with each endpoint's health and load, and each cluster's time series
(requests/s, error rate, p50/p99 of ``upstream_rq_time``, one point per second over the
last minutes), all read from the stats registry and the running config.

Each cluster also carries what ``GET /clusters/{name}/health`` says of it (the same
``health_view``): whether it has ``health_check`` and ``outlier_detection``, its
classic ``breaker`` (null without one), and per endpoint its ``health_check`` (state,
last result), ``ejection`` (ejected; while ejected since, until, times ejected, reason),
the combined ``verdict`` and whether it ``serves``.

``rollouts`` lists every staged rollout as ``GET /rollouts`` shows it (the same
``rollout_view``): its spec and gates, ``state``, ``step``, ``weight``, the current step's
figures (``current``) and the last ``breach``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, JSONResponse

from admin.errors import GUARDED, responses
from admin.http import gateway_of
from admin.routes.rollouts import rollout_view
from gateway import clusters_view, health_view
from gateway.config import Config, Listener, Route

router = APIRouter(tags=["dashboard"])

STATIC = Path(__file__).resolve().parent.parent / "static"
#: the files the page may load, and their media types (nothing else is served)
ASSETS = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "uPlot.min.css": "text/css; charset=utf-8",
}


@router.get("/dashboard", include_in_schema=False)
async def dashboard() -> Response:
    return FileResponse(
        STATIC / "dashboard.html",
        media_type="text/html; charset=utf-8",
        headers={"Cache-Control": "no-cache"},
    )


@router.get("/dashboard/static/{name}", include_in_schema=False)
async def dashboard_asset(name: str) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:
        return JSONResponse({"detail": f"no asset {name!r}"}, status_code=404)
    return FileResponse(
        STATIC / name, media_type=media_type, headers={"Cache-Control": "max-age=300"}
    )


@router.get("/dashboard/data", responses=responses(*GUARDED))
async def dashboard_data(request: Request) -> dict[str, Any]:
    """Everything the dashboard shows, as of now."""
    gateway = gateway_of(request)
    control = gateway.control
    # one read of the workers (with worker processes) both sums their figures and
    # gives each one's share
    workers = await gateway.workers_view()
    stats = gateway.stats
    config = control.config
    clusters = clusters_view(stats)
    per_worker = control.workers is not None
    for name, view in clusters.items():
        handle = control.clusters.get(name)
        if handle is not None:
            _add_health(view, health_view(handle, per_worker=per_worker))
        points = list(stats.series.get(name, ()))
        view["series"] = {
            "t": [p.t for p in points],
            "requests_per_s": [p.requests_per_s for p in points],
            "error_rate": [p.error_rate for p in points],
            "p50": [p.p50 for p in points],
            "p99": [p.p99 for p in points],
        }
    return {
        "version": config.version,
        "ready": control.ready,
        "draining": control.draining,
        "since": stats.since,
        "listeners": [_listener(lst, gateway) for lst in config.listeners],
        "routes": _routes(config),
        "clusters": clusters,
        "rollouts": [rollout_view(rollout, gateway.rollouts) for rollout in config.rollouts],
        "workers": workers,
    }


def _add_health(view: dict[str, Any], health: dict[str, Any]) -> None:
    """Merge a cluster's ``health_view`` into its ``clusters_view`` entry, by address."""
    view["health_check"] = health["health_check"]
    view["outlier_detection"] = health["outlier_detection"]
    view["breaker"] = health["breaker"]
    by_address = {e["address"]: e for e in health["endpoints"]}
    for endpoint in view["endpoints"]:
        found = by_address.get(endpoint["address"])
        if found is not None:
            for key in ("health_check", "ejection", "verdict", "serves"):
                endpoint[key] = found[key]


def _listener(lst: Listener, gateway: Any) -> dict[str, Any]:
    handle = gateway.control.listeners.get(lst.name)
    ls = gateway.stats.listeners.get(lst.name)
    counters = ls.counters() if ls is not None else {}
    return {
        "name": lst.name,
        "protocol": lst.protocol,
        "address": str(handle.bound) if handle is not None and handle.bound else None,
        "connections": ls.downstream_cx_active if ls is not None else 0,
        "access_log": lst.access_log.path if lst.access_log.enabled else None,
        "requests": {
            k.removeprefix("downstream_rq_"): v
            for k, v in counters.items()
            if k.startswith("downstream_rq_") and (k.endswith("xx") or k.endswith("total"))
        },
    }


def _routes(config: Config) -> list[dict[str, Any]]:
    out = []
    for lst in config.listeners:
        hosts = [(None, lst.routes)] + [(vh.name, vh.routes) for vh in lst.virtual_hosts]
        for vhost, routes in hosts:
            for i, route in enumerate(routes):
                out.append(_route(lst.name, vhost, i, route))
    return out


def _route(listener: str, vhost: str | None, index: int, route: Route) -> dict[str, Any]:
    m = route.match
    split: list[tuple[str, int]] = (
        [(route.cluster, 100)]
        if route.cluster is not None
        else [(wc.cluster, wc.weight) for wc in route.split]
    )
    total = sum(max(weight, 0) for _, weight in split) or 1
    return {
        "listener": listener,
        "virtual_host": vhost,
        "name": route.name or str(index),
        "match": (
            f"path {m.path}"
            if m.path is not None
            else f"prefix {m.prefix}"
            if m.prefix is not None
            else f"regex {m.regex}"
        )
        + (" (+ conditions)" if m.methods or m.headers or m.query else ""),
        "split": [
            {"cluster": cluster, "weight": weight, "share": max(weight, 0) / total}
            for cluster, weight in split
        ],
        "timeout": route.timeout,
        "retries": route.retry.attempts,
    }
