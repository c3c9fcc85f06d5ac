"""The whole running config: read it with its version, or replace it in one write."""

from __future__ import annotations

import attrs
from fastapi import APIRouter, Request, Response

from admin.errors import GUARDED, WRITE, responses
from admin.http import answer, apply, body_schema, config_of, json_content, read_json
from gateway import VersionMismatch
from gateway.config import Config, json_schema, structure, unstructure

router = APIRouter(tags=["config"])

_CONFIG = json_content(json_schema(Config, {}), "The running config; ETag is its version")


@router.get("/config", responses={200: _CONFIG, **responses(*GUARDED)})
async def get_config(request: Request) -> Response:
    """The running config, its version as ETag; PUT replaces it whole."""
    config = config_of(request)
    return answer(unstructure(config), config)


@router.put(
    "/config",
    openapi_extra=body_schema(
        Config,
        description="A whole config. Its version, if given, must be the current one "
        "(like If-Match); the new config gets the next version. The admin and config_store "
        "sections cannot change while running: leave them out, or send them unchanged.",
    ),
    responses={200: _CONFIG, **responses(*WRITE)},
)
async def replace_config(request: Request) -> Response:
    body = await read_json(request)

    def change(current: Config) -> Config:
        new = structure(Config, body)
        if "version" in body and new.version != current.version:
            raise VersionMismatch(new.version, current.version)
        # the admin and config_store sections are fixed while running: leaving one out
        # keeps it
        admin = new.admin if "admin" in body else current.admin
        store = new.config_store if "config_store" in body else current.config_store
        return attrs.evolve(new, version=current.version, admin=admin, config_store=store)

    config = await apply(request, change)
    return answer(unstructure(config), config)
