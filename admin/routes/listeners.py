"""Listeners, their virtual hosts and routes, and the canary knob: a route's split.

A route is named in URLs by its ``name``, or by its position when it has none
(``/listeners/web/routes/0``). ``?virtual_host=NAME`` selects the routes of one of the
listener's virtual hosts instead of its top-level ``routes``.

``PUT .../routes/{route}/split`` with ``{"v1": 90, "v2": 10}`` sets the weights in one
call (a list of ``{"cluster", "weight"}`` is accepted too); the route then sends to the
split instead of a single ``cluster``. The new weights reach the data plane as one new
config version: requests in flight finish on the version they started with.
"""

from __future__ import annotations

from typing import Annotated, Any

import attrs
from fastapi import APIRouter, Depends, Query, Request, Response

from admin.crud import add_collection_routes, at_root
from admin.edits import Chain, Collection, get_item, update_change
from admin.errors import GUARDED, WRITE, responses
from admin.http import answer, apply, config_of, json_content, read_json
from gateway import ConfigError, ConfigIssue
from gateway.config import Listener, Route, VirtualHost, WeightedCluster, json_schema, structure

router = APIRouter(tags=["listeners"])

LISTENERS = Collection("listener", "listeners", Listener)
VIRTUAL_HOSTS = Collection("virtual host", "virtual_hosts", VirtualHost)
ROUTES = Collection("route", "routes", Route, by_index=True)


def listener_chain(listener: str) -> Chain:
    return ((LISTENERS, listener),)


def virtual_host_chain(listener: str, virtual_host: str) -> Chain:
    return ((LISTENERS, listener), (VIRTUAL_HOSTS, virtual_host))


def routes_parent(
    listener: str,
    virtual_host: Annotated[
        str | None,
        Query(description="the virtual host whose routes these are (default: the listener's)"),
    ] = None,
) -> Chain:
    chain = listener_chain(listener)
    return chain if virtual_host is None else (*chain, (VIRTUAL_HOSTS, virtual_host))


def route_chain(route: str, parent: Annotated[Chain, Depends(routes_parent)]) -> Chain:
    return (*parent, (ROUTES, route))


RouteChain = Annotated[Chain, Depends(route_chain)]

add_collection_routes(
    router, "/listeners", "listener", LISTENERS, parent=at_root, item=listener_chain
)
add_collection_routes(
    router,
    "/listeners/{listener}/virtual_hosts",
    "virtual_host",
    VIRTUAL_HOSTS,
    parent=listener_chain,
    item=virtual_host_chain,
)
add_collection_routes(
    router,
    "/listeners/{listener}/routes",
    "route",
    ROUTES,
    parent=routes_parent,
    item=route_chain,
)

_WEIGHTS = {"type": "object", "additionalProperties": {"type": "integer"}}
_SPLIT_BODY = {
    "anyOf": [_WEIGHTS, {"type": "array", "items": json_schema(WeightedCluster, {})}],
    "description": 'cluster -> weight, e.g. {"v1": 90, "v2": 10}',
}


def weights_of(route: Route) -> dict[str, int]:
    """A route's split as cluster -> weight; a single-cluster route is all on that cluster."""
    if route.cluster is not None:
        return {route.cluster: 1}
    return {wc.cluster: wc.weight for wc in route.split}


def with_split(route: Route, body: Any, path: str) -> Route:
    """``route`` sending to the split ``body`` (mapping or list form) instead of a cluster."""
    if isinstance(body, dict):
        body = [{"cluster": name, "weight": weight} for name, weight in body.items()]
    elif not isinstance(body, list):
        raise ConfigError(
            [ConfigIssue(f"{path}.split", "must be a mapping of cluster to weight, or a list")]
        )
    split = structure(tuple[WeightedCluster, ...], body, f"{path}.split")
    return attrs.evolve(route, cluster=None, split=split)


_SPLIT_PATH = "/listeners/{listener}/routes/{route}/split"


@router.get(
    _SPLIT_PATH,
    responses={200: json_content(_WEIGHTS, "cluster -> weight"), **responses(*GUARDED, 404)},
)
async def get_split(request: Request, chain: RouteChain) -> Response:
    config = config_of(request)
    return answer(weights_of(get_item(config, chain)), config)


@router.put(
    _SPLIT_PATH,
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": _SPLIT_BODY}}}
    },
    responses={200: json_content(_WEIGHTS, "The weights now in force"), **responses(*WRITE)},
)
async def set_split(request: Request, chain: RouteChain) -> Response:
    body = await read_json(request)
    config = await apply(
        request, update_change(chain, lambda route, path: with_split(route, body, path))
    )
    return answer(weights_of(get_item(config, chain)), config)
