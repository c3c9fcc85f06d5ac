"""Network toxics: ``/listeners/{listener}/toxics`` and ``/listeners/{listener}/toxics/{toxic}``.

A listener's toxics (Toxiproxy's, ``gateway.faults.toxics``) in chain order per stream,
keyed by name (unique per listener, across both streams). Each write is validated
against the whole resulting config (a field Toxiproxy would crash or stall on is a 422
naming it, e.g. ``listeners[0].toxics[1].attributes.average_size``), applied as one new
version and persisted, like every resource; the listener takes it at once, on its live
connections too.
"""

from __future__ import annotations

from fastapi import APIRouter

from admin.crud import add_collection_routes
from admin.edits import Chain, Collection
from admin.routes.listeners import LISTENERS, listener_chain
from gateway.config import Toxic

router = APIRouter(tags=["toxics"])

TOXICS = Collection("toxic", "toxics", Toxic)


def toxic_chain(listener: str, toxic: str) -> Chain:
    return ((LISTENERS, listener), (TOXICS, toxic))


add_collection_routes(
    router,
    "/listeners/{listener}/toxics",
    "toxic",
    TOXICS,
    parent=listener_chain,
    item=toxic_chain,
)
