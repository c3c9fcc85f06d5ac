"""Clusters and their endpoints.

Removing an endpoint, or setting its ``state`` to ``draining`` or ``disabled``, takes it
out of the balancer at once while requests already on it finish (the cluster actor
drains its pool). An endpoint's key in URLs is its address, e.g.
``/clusters/api/endpoints/127.0.0.1:8001``.
"""

from __future__ import annotations

from fastapi import APIRouter

from admin.crud import add_collection_routes, at_root
from admin.edits import Chain, Collection, endpoint_key
from gateway.config import Cluster, Endpoint

router = APIRouter(tags=["clusters"])

CLUSTERS = Collection("cluster", "clusters", Cluster)
ENDPOINTS = Collection(
    "endpoint",
    "endpoints",
    Endpoint,
    key_of=lambda ep: str(ep.address),
    normalize=endpoint_key,
)


def cluster_chain(cluster: str) -> Chain:
    return ((CLUSTERS, cluster),)


def endpoint_chain(cluster: str, endpoint: str) -> Chain:
    return ((CLUSTERS, cluster), (ENDPOINTS, endpoint))


add_collection_routes(router, "/clusters", "cluster", CLUSTERS, parent=at_root, item=cluster_chain)
add_collection_routes(
    router,
    "/clusters/{cluster}/endpoints",
    "endpoint",
    ENDPOINTS,
    parent=cluster_chain,
    item=endpoint_chain,
)
