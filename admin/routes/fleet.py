"""The nodes of this gateway's fleet: ``GET /fleet``.

In a fleet (``config_store.type: etcd``) each node keeps a key bound to its lease under
``<prefix>/nodes/``; this lists the live ones, read from etcd (503 naming etcd when it
cannot be reached). A single node lists itself. Stats, health and outlier detection
stay each node's own: ``/stats`` is this node's.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from admin.errors import GUARDED, responses
from admin.http import gateway_of

router = APIRouter(tags=["fleet"])


class Node(BaseModel):
    """One live node."""

    #: the node's name in etcd; null for a single node
    node: str | None
    #: its admin API's address
    address: str | None
    #: the config version it runs
    version: int
    pid: int
    #: seconds since it started (a single node: absent)
    uptime: float | None = None
    #: whether it drives the rollouts
    leader: bool
    #: whether it is the node that answered
    self: bool


@router.get("/fleet", response_model=list[Node], responses=responses(*GUARDED, 503))
async def fleet(request: Request) -> list[dict[str, object]]:
    """The nodes alive in this gateway's fleet."""
    return await gateway_of(request).fleet_nodes()
