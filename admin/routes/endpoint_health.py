"""Endpoint health and the state changes behind it.

- ``GET /clusters/{cluster}/health``: per endpoint, its config state, what the active
  health checks say (state and last result: time, passed, detail such as
  ``status 503``, ``connect refused`` or ``timeout``), its ejection by outlier detection
  (``null`` when the cluster has none; else ``ejected`` and, while ejected, ``since``,
  ``until``, ``times_ejected`` and ``reason``), breaker (``null``: the classic breaker
  guards the cluster, shown once as the cluster's ``breaker``), the combined verdict as Envoy
  prints health flags (``healthy``, ``/failed_active_hc``...) and whether it serves.
  404 for an unknown cluster.
  The cluster's ``breaker``: ``null`` without one; in one process ``state``
  (``closed``, ``open``, ``half_open``) and ``open_time``; with worker processes (each
  has its own breaker) ``per_worker`` true and ``open_workers``, how many workers
  reported theirs not closed.
- ``GET /events?cluster=&limit=``: the newest state changes (health verdicts, ejections
  and returns, breaker changes: ``kind`` ``health``, ``ejection`` or ``breaker``, whose
  endpoint is ``*``; an ejection's ``until``), newest
  last; ``limit`` 1-1000 (default 100). A ``cluster`` the config does not have is 404
  (a typo would otherwise read as "no events"); the events of a removed cluster are
  still in the unfiltered list.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from admin.edits import ItemNotFound
from admin.errors import GUARDED, responses
from admin.http import gateway_of
from gateway import health_view

router = APIRouter(tags=["health"])


class LastCheck(BaseModel):
    #: Unix time the check ended
    at: float
    passed: bool
    detail: str


class HealthCheckOut(BaseModel):
    #: unknown, healthy, unhealthy; null before the first verdict
    state: str | None
    last: LastCheck | None


class EjectionOut(BaseModel):
    ejected: bool
    #: while ejected: Unix times it started and ends
    since: float | None = None
    until: float | None = None
    #: while ejected: how many times the endpoint has been ejected
    times_ejected: int | None = None
    #: while ejected: the detector (consecutive_5xx, consecutive_gateway_failure,
    #: success_rate, failure_percentage)
    reason: str | None = None


class EndpointHealthOut(BaseModel):
    address: str
    config_state: str
    #: null when the cluster has no health_check
    health_check: HealthCheckOut | None
    #: null when the cluster has no outlier_detection
    ejection: EjectionOut | None
    #: null: the breaker guards the cluster (``ClusterHealthOut.breaker``)
    breaker: dict[str, Any] | None
    #: Envoy's health flags: "healthy", or "/failed_active_hc" and the like
    verdict: str
    serves: bool
    in_host_set: bool


class BreakerOut(BaseModel):
    #: worker processes serve: each has its own breaker
    per_worker: bool
    #: one process: closed, open or half_open; null with workers
    state: str | None
    #: one process: seconds of the current (or next) open period
    open_time: float | None = None
    #: workers: how many reported their breaker not closed
    open_workers: int | None = None


class ClusterHealthOut(BaseModel):
    cluster: str
    health_check: bool
    outlier_detection: bool
    #: null when the cluster has no breaker
    breaker: BreakerOut | None = None
    endpoints: list[EndpointHealthOut]


class EventOut(BaseModel):
    #: Unix time
    at: float
    cluster: str
    endpoint: str
    kind: str
    old: str
    new: str
    reason: str
    #: an ejection: when it ends (Unix time)
    until: float | None = None


class EventsOut(BaseModel):
    events: list[EventOut]


@router.get(
    "/clusters/{cluster}/health",
    response_model=ClusterHealthOut,
    responses=responses(*GUARDED, 404),
)
async def cluster_health(request: Request, cluster: str) -> dict[str, Any]:
    """Each endpoint's health check state and last result, and the combined verdict."""
    handle = gateway_of(request).control.clusters.get(cluster)
    if handle is None:
        raise ItemNotFound(f"no cluster {cluster!r}", key=cluster)
    return health_view(handle, per_worker=gateway_of(request).control.workers is not None)


@router.get("/events", response_model=EventsOut, responses=responses(*GUARDED, 404, 422))
async def events(
    request: Request,
    cluster: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
) -> dict[str, Any]:
    """The newest state changes (health verdicts), newest last."""
    control = gateway_of(request).control
    if cluster is not None and cluster not in control.clusters:
        raise ItemNotFound(f"no cluster {cluster!r}", listed_at="/clusters")
    return {"events": [e.as_json() for e in control.events.recent(cluster, limit)]}
