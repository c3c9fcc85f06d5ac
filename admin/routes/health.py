"""Is the gateway serving, what is running right now, and the drain button.

``/status`` is the runtime side the config does not show: bound listener addresses and
each endpoint's live state (taking requests or not, requests in flight, pooled
connections), read from the snapshots the actors publish and the stats' gauges (with
worker processes, the sums of the workers').
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from admin.errors import GUARDED, responses
from admin.http import gateway_of, read_json

router = APIRouter(tags=["health"])


class Readiness(BaseModel):
    ready: bool
    version: int
    #: why not ready: "draining" or "starting"
    reason: str | None = None


class DrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace: float = Field(30.0, ge=0, le=3600, description="seconds in-flight requests may take")


class Draining(BaseModel):
    draining: bool
    grace: float


@router.get(
    "/ready",
    response_model=Readiness,
    responses={
        503: {"model": Readiness, "description": "Draining or starting"},
        **responses(*GUARDED),
    },
)
async def ready(request: Request) -> Response:
    """200 while serving, 503 while starting or draining (a load balancer's probe)."""
    control = gateway_of(request).control
    if control.ready and not control.draining:
        return JSONResponse({"ready": True, "version": control.version})
    reason = "draining" if control.draining else "starting"
    return JSONResponse({"ready": False, "version": control.version, "reason": reason}, 503)


@router.post(
    "/drain",
    status_code=202,
    response_model=Draining,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": DrainRequest.model_json_schema()}},
        }
    },
    responses=responses(*GUARDED, 400, 413, 415, 422, 503),
)
async def drain(request: Request) -> Response:
    """Stop accepting on every listener; requests in flight finish within ``grace``."""
    body = await read_json(request)
    try:
        order = DrainRequest.model_validate(body)
    except ValidationError as e:
        raise RequestValidationError(e.errors()) from None
    await gateway_of(request).control.drain(order.grace)
    return JSONResponse({"draining": True, "grace": order.grace}, status_code=202)


class EndpointStatus(BaseModel):
    address: str
    state: str
    weight: int
    #: whether the balancer may pick it now
    serving: bool
    active_requests: int
    open_connections: int
    idle_connections: int


class ClusterStatus(BaseModel):
    endpoints: list[EndpointStatus]


class ListenerStatus(BaseModel):
    address: str | None
    connections: int


class Status(BaseModel):
    version: int
    ready: bool
    draining: bool
    listeners: dict[str, ListenerStatus]
    clusters: dict[str, ClusterStatus]


@router.get("/status", response_model=Status, responses=responses(*GUARDED))
async def status(request: Request) -> dict[str, Any]:
    """What runs now: bound listener addresses, each endpoint's live state and load."""
    gateway = gateway_of(request)
    control = gateway.control
    # the load figures are the stats' gauges: with workers, the sums of theirs
    stats = await gateway.refresh_stats()
    stats.refresh_gauges()
    clusters: dict[str, Any] = {}
    for name, handle in control.clusters.items():
        snapshot = handle.snapshot
        serving = {id(rt) for rt in snapshot.endpoints}
        cluster_stats = stats.cluster(name)
        clusters[name] = {
            "endpoints": [
                {
                    "address": rt.key,
                    "state": rt.config.state,
                    "weight": rt.config.weight,
                    "serving": id(rt) in serving,
                    "active_requests": cluster_stats.endpoint(rt.key).rq_active,
                    "open_connections": cluster_stats.endpoint(rt.key).cx_active,
                    "idle_connections": cluster_stats.endpoint(rt.key).cx_idle,
                }
                for rt in snapshot.all_endpoints
            ]
        }
    return {
        "version": control.version,
        "ready": control.ready,
        "draining": control.draining,
        "listeners": {
            name: {"address": str(h.bound) if h.bound else None, "connections": h.connections}
            for name, h in control.listeners.items()
        },
        "clusters": clusters,
    }
