"""The stats registry over HTTP: JSON, Prometheus text, reset, and each endpoint's state.

- ``GET /stats?filter=REGEX``: every counter, gauge and histogram by Envoy's dotted name
  (``cluster.api.upstream_rq_5xx``), only the names the regular expression finds when
  ``filter`` is given; histograms carry cumulative buckets and p50/p90/p99 since start
  and over the recent window.
- ``GET /stats/prometheus``: the Prometheus text exposition, scopes as labels (with
  worker processes, also each worker's requests, connections and restarts by a
  ``worker`` label).
- ``POST /stats/reset``: counters and histograms back to zero (gauges are levels and
  stay); a POST needs a JSON body like every admin mutation, ``{}`` will do.
- ``GET /stats/workers``: each process serving the listeners (``--workers N``; one line
  for a single process) with its pid, restarts, config version and its own share of
  requests and connections; the other reads show the workers' figures summed.
- ``GET /stats/clusters``: each cluster's endpoints with address, weight, health
  flags, requests in flight and recent success rate. (Envoy serves this as
  ``/clusters``; here ``/clusters`` is the config resource, so the live view sits
  beside the other stats.)

Handlers read the registry (``gateway.stats``). With worker processes the registry is
first set to the sum of the workers' figures (``Gateway.refresh_stats``: one request to
each worker), so a read counts every request any worker has finished.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from admin.errors import GUARDED, RequestRefused, responses
from admin.http import gateway_of
from gateway import (
    PROMETHEUS_CONTENT_TYPE,
    clusters_view,
    prometheus_text,
    stats_json,
)

router = APIRouter(tags=["stats"])


class Quantiles(BaseModel):
    p50: float | None
    p90: float | None
    p99: float | None


class RecentQuantiles(Quantiles):
    #: values recorded in the recent window
    count: int


class HistogramStats(BaseModel):
    count: int
    sum_ms: float
    #: cumulative counts by upper bound in ms (Prometheus's ``le``), ``+Inf`` last
    buckets: dict[str, int]
    since_start: Quantiles
    recent: RecentQuantiles


class StatsAnswer(BaseModel):
    #: Unix time of the start, or of the last reset
    since: float
    recent_window_s: float
    counters: dict[str, int]
    gauges: dict[str, float | None]
    histograms: dict[str, HistogramStats]


class EndpointState(BaseModel):
    address: str
    weight: int
    priority: int
    locality: str
    state: str
    #: whether the balancer may pick it now
    serving: bool
    #: Envoy's vocabulary: ``healthy``, or what keeps it from being so
    health_flags: list[str]
    active_requests: int
    open_connections: int
    rq_total: int
    rq_error: int
    rq_timeout: int
    cx_connect_fail: int
    #: share of recent attempts that did not fail; null without recent attempts
    success_rate: float | None


class ClusterState(BaseModel):
    upstream_rq_total: int
    upstream_rq_active: int
    upstream_cx_active: int
    upstream_rq_time_recent: Quantiles
    endpoints: list[EndpointState]


class WorkerState(BaseModel):
    index: int
    #: null while it is being started again
    pid: int | None
    #: times it was started again after exiting unasked (a crash, a kill -9)
    restarts: int
    #: the config version it serves
    version: int
    #: requests it has finished and connections it has open; null if it did not answer
    downstream_rq_total: int | None
    downstream_cx_active: int | None


class ResetAnswer(BaseModel):
    reset: bool
    since: float


@router.get("/stats", response_model=StatsAnswer, responses=responses(*GUARDED, 400))
async def get_stats(
    request: Request,
    filter_: str | None = Query(
        None,
        alias="filter",
        description="a regular expression; only stats whose name it finds are listed",
    ),
) -> Response:
    """Every counter, gauge and histogram, by name (Envoy's names; ``?filter=`` a regex)."""
    pattern = None
    if filter_:
        try:
            with warnings.catch_warnings():
                # a valid pattern re will read differently one day ("possible nested
                # set"): still a pattern, not a reason to fail the read
                warnings.simplefilter("ignore", FutureWarning)
                pattern = re.compile(filter_)
        except re.error as e:
            raise RequestRefused(400, f"filter is not a regular expression: {e}") from None
    return JSONResponse(stats_json(await gateway_of(request).refresh_stats(), pattern))


@router.get(
    "/stats/prometheus",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition format 0.0.4",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        **responses(*GUARDED),
    },
)
async def get_prometheus(request: Request) -> Response:
    """The same stats in Prometheus' text format, for a scraper."""
    gateway = gateway_of(request)
    if gateway.workers is None:
        text = prometheus_text(await gateway.refresh_stats())
    else:  # the workers' figures are summed by the same read
        workers = await gateway.workers_view()
        text = prometheus_text(gateway.stats, workers)
    return Response(text, media_type=PROMETHEUS_CONTENT_TYPE)


@router.post(
    "/stats/reset",
    response_model=ResetAnswer,
    responses=responses(*GUARDED, 400, 413, 415),
)
async def reset_stats(request: Request) -> dict[str, Any]:
    """Counters and histograms to zero; gauges (levels) are left as they are."""
    stats = await gateway_of(request).reset_stats()
    return {"reset": True, "since": stats.since}


@router.get(
    "/stats/clusters", response_model=dict[str, ClusterState], responses=responses(*GUARDED)
)
async def get_cluster_stats(request: Request) -> Response:
    """Each cluster's request, error and latency figures."""
    return JSONResponse(clusters_view(await gateway_of(request).refresh_stats()))


@router.get("/stats/workers", response_model=list[WorkerState], responses=responses(*GUARDED))
async def get_worker_stats(request: Request) -> Response:
    """Each process serving the listeners: pid, restarts, config version, load."""
    return JSONResponse(await gateway_of(request).workers_view())
