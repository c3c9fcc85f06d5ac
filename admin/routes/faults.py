"""HTTP faults: ``/faults`` and ``/faults/{name}``, changeable while traffic flows.

Each write is validated against the whole resulting config (a fault names a listener,
a route of it or a cluster that must exist; ``abort.grpc_status`` is refused until
HTTP/2 is served), applied as one new version and persisted, like every resource.
Replacing a fault (``PUT``, or a ``PATCH`` that changes it) starts its ``first_n``
count again; a change elsewhere in the config keeps it.
"""

from __future__ import annotations

from fastapi import APIRouter

from admin.crud import add_collection_routes, at_root
from admin.edits import Chain, Collection
from gateway.config import Fault

router = APIRouter(tags=["faults"])

FAULTS = Collection("fault", "faults", Fault)


def fault_chain(fault: str) -> Chain:
    return ((FAULTS, fault),)


add_collection_routes(router, "/faults", "fault", FAULTS, parent=at_root, item=fault_chain)
