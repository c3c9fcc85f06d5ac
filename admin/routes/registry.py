"""The endpoints of a ``registry`` cluster: instances register, heartbeat and deregister.

On a cluster with ``discovery: {type: registry}`` the endpoints collection is the
registry, runtime state of the cluster actor rather than config (not persisted, no
config version, no ``ETag``/``If-Match``):

- ``POST /clusters/{cluster}/endpoints`` registers an instance: an endpoint body
  (``address``, ``weight``, ``priority``, ``locality``, ``state``) plus an optional
  ``ttl`` in seconds (default: the cluster's ``discovery.default_ttl``; 0 never
  expires). 201 for a new address, 200 when it replaces a registration (an instance
  that restarted registers again without deregistering first);
- ``PUT .../endpoints/{address}`` does the same for that address;
- ``PUT .../endpoints/{address}/heartbeat`` (body ``{}`` or ``{"ttl": 30}``) renews the
  registration for another TTL; 404 if there is none (the instance should register
  again: a restarted gateway forgot it), 409 on a cluster that is not a registry;
- ``DELETE .../endpoints/{address}`` deregisters: no new requests go there, requests
  in flight finish (the endpoint drains);
- ``GET .../endpoints[/{address}]`` shows registrations with ``ttl`` and ``expires_in``.

A registration whose TTL passes without a heartbeat is removed, and drains, like a
deregistration. In a fleet (``config_store.type: etcd``) the registrations are the
fleet's: an etcd key bound to a lease of the TTL, written through any node and served
by all; a heartbeat keeps the lease alive, and an expired lease removes the instance
from every node at once (``gateway.control.fleet``).

On a cluster of any other discovery type these paths keep their config
meaning (``clusters.py``): the routes here match only registry clusters
(``RegistryRoute``), so a static cluster's ``POST .../endpoints`` still adds an
endpoint to the config. They are left out of ``/openapi.json``, which can hold one
operation per path and method; ``GET /clusters/{cluster}/discovery`` (any cluster: its
source, counters and current endpoints) and the heartbeat are in it.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import trio
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.routing import Match
from starlette.types import Scope

from admin.edits import ItemNotFound, endpoint_key
from admin.errors import GUARDED, WRITE, RequestRefused, responses
from admin.http import gateway_of, json_content, read_json
from gateway import (
    ClusterHandle,
    ConfigError,
    ConfigIssue,
    NotRegistered,
    Registration,
    Registrations,
)
from gateway.config import Endpoint, structure, unstructure


class RegistryRoute(APIRoute):
    """A route that matches only when its ``{cluster}`` is a registry cluster.

    Starlette tries routes in order, so a request about any other cluster falls through
    to the config route of the same path and method (``ROUTERS`` puts this router first).
    """

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is Match.NONE:
            return match, child
        name = child.get("path_params", {}).get("cluster")
        config = scope["app"].state.gateway.control.config
        cluster = config.cluster(name) if isinstance(name, str) else None
        if cluster is None or cluster.discovery.type != "registry":
            return Match.NONE, {}
        return match, child


#: the registry's own routes (hidden from the schema: their paths are clusters.py's too)
router = APIRouter(tags=["registry"], route_class=RegistryRoute)
#: routes whose paths are the registry's alone (in the schema)
status_router = APIRouter(tags=["registry"])

ENDPOINTS = "/clusters/{cluster}/endpoints"
ENDPOINT = "/clusters/{cluster}/endpoints/{endpoint}"


class RegistrationOut(BaseModel):
    """A registered instance."""

    address: str
    weight: int
    priority: int
    locality: str
    state: str
    #: seconds a heartbeat buys; 0 never expires
    ttl: float
    #: seconds left before it expires; null if it never does
    expires_in: float | None


class StatsOut(BaseModel):
    source: str
    resolutions: int
    failures: int
    changes: int
    expirations: int
    last_error: str | None
    #: Unix times
    last_success: float | None
    last_failure: float | None
    #: seconds since the last accepted answer, null if none yet
    since_success: float | None


class DiscoveryOut(BaseModel):
    """Where a cluster's endpoints come from, and how that is going."""

    type: str
    stats: StatsOut
    #: the endpoints the cluster has now, in every state
    endpoints: list[dict[str, Any]]
    #: registry clusters: every registration
    registrations: list[RegistrationOut]


class HeartbeatIn(BaseModel):
    #: a new TTL in seconds; default: the registration's own
    ttl: float | None = None


def _handle(request: Request, cluster: str) -> ClusterHandle:
    handle = gateway_of(request).control.clusters.get(cluster)
    if handle is None:
        raise ItemNotFound(f"no cluster {cluster!r}", key=cluster)
    return handle


def _registry(request: Request, cluster: str) -> Registrations:
    """The cluster's registrations: its actor's, or in a fleet the ones etcd holds."""
    registrations = gateway_of(request).registrations_of(cluster)
    if registrations is None:
        raise ItemNotFound(f"no cluster {cluster!r}", key=cluster)
    return registrations


def _key(endpoint: str) -> str:
    try:
        return endpoint_key(endpoint)
    except ValueError:
        raise NotRegistered(f"no instance registered at {endpoint!r}") from None


def _show(registration: Registration) -> dict[str, Any]:
    return {
        **unstructure(registration.endpoint),
        "ttl": registration.ttl,
        "expires_in": registration.expires_in(trio.current_time()),
    }


#: the longest TTL a registration may ask for (a year)
MAX_TTL = 365 * 86400


def _ttl(body: dict[str, Any]) -> float | None:
    ttl = body.pop("ttl", None)
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 <= ttl <= MAX_TTL:
        raise ConfigError([ConfigIssue("ttl", f"must be 0-{MAX_TTL} seconds, not {ttl!r}")])
    return float(ttl)


async def _registration_body(request: Request, address: str | None = None) -> tuple[Endpoint, Any]:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise RequestRefused(400, "body must be an object: an endpoint, with an optional ttl")
    try:
        ttl = _ttl(body)
    except ConfigError as e:
        ttl_issues: list[ConfigIssue] = list(e.issues)
    else:
        ttl_issues = []
    if address is not None:
        body.setdefault("address", address)
    try:
        endpoint = structure(Endpoint, body)
    except ConfigError as e:
        raise ConfigError([*e.issues, *ttl_issues]) from None
    if ttl_issues:
        raise ConfigError(ttl_issues)
    if address is not None and str(endpoint.address) != address:
        raise ConfigError([ConfigIssue("address", f"must be {address}, the address in the URL")])
    return endpoint, ttl


_ONE = json_content(RegistrationOut.model_json_schema(), "The registration")


@router.get(ENDPOINTS, include_in_schema=False)
async def list_registrations(request: Request, cluster: str) -> Response:
    registrations = await _registry(request, cluster).registrations()
    return JSONResponse([_show(r) for r in registrations])


@router.get(ENDPOINT, include_in_schema=False)
async def get_registration(request: Request, cluster: str, endpoint: str) -> Response:
    key = _key(endpoint)
    for registration in await _registry(request, cluster).registrations():
        if registration.key == key:
            return JSONResponse(_show(registration))
    raise NotRegistered(f"no instance registered at {key}")


@router.post(ENDPOINTS, include_in_schema=False)
async def register(request: Request, cluster: str) -> Response:
    endpoint, ttl = await _registration_body(request)
    answer = await _registry(request, cluster).register(endpoint, ttl)
    key = answer.registration.key
    return JSONResponse(
        _show(answer.registration),
        status_code=201 if answer.created else 200,
        headers={"Location": f"{request.url.path.rstrip('/')}/{quote(key, safe=':[]')}"},
    )


@router.put(ENDPOINT, include_in_schema=False)
async def register_at(request: Request, cluster: str, endpoint: str) -> Response:
    address, ttl = await _registration_body(request, _key(endpoint))
    answer = await _registry(request, cluster).register(address, ttl)
    return JSONResponse(_show(answer.registration), status_code=201 if answer.created else 200)


@router.patch(ENDPOINT, include_in_schema=False)
async def patch_registration(request: Request, cluster: str, endpoint: str) -> Response:
    return JSONResponse(
        {"detail": "a registration is replaced whole: PUT or POST it again"},
        status_code=405,
        headers={"Allow": "GET, PUT, DELETE"},
    )


@router.delete(ENDPOINT, include_in_schema=False)
async def deregister(request: Request, cluster: str, endpoint: str) -> Response:
    await _registry(request, cluster).deregister(_key(endpoint))
    return Response(status_code=204)


@status_router.put(
    f"{ENDPOINT}/heartbeat",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": HeartbeatIn.model_json_schema()}},
        }
    },
    responses={200: _ONE, **responses(*WRITE, 409)},
)
async def heartbeat(request: Request, cluster: str, endpoint: str) -> Response:
    """Renew a registration of a registry cluster for another TTL."""
    body = await read_json(request)
    if not isinstance(body, dict):
        raise RequestRefused(400, 'body must be an object: {} or {"ttl": seconds}')
    ttl = _ttl(body)
    if body:
        raise ConfigError([ConfigIssue(str(k), "unknown field") for k in body])
    registration = await _registry(request, cluster).renew(_key(endpoint), ttl)
    return JSONResponse(_show(registration))


@status_router.get(
    "/clusters/{cluster}/discovery",
    response_model=DiscoveryOut,
    responses=responses(*GUARDED, 404),
)
async def discovery_status(request: Request, cluster: str) -> dict[str, Any]:
    """A cluster's discovery source, its counters, and the endpoints it has now."""
    handle = _handle(request, cluster)
    snapshot = handle.snapshot
    stats = handle.discovery_stats
    since = None if stats.last_success is None else max(0.0, time.time() - stats.last_success)
    return {
        "type": snapshot.config.discovery.type,
        "stats": {**unstructure(stats), "since_success": since},
        "endpoints": [unstructure(ep) for ep in snapshot.members],
        "registrations": [_show(r) for r in await _registry(request, cluster).registrations()],
    }
