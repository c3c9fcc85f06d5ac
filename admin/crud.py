"""List/get/create/replace/patch/delete routes for any ``Collection`` of the config.

``add_collection_routes`` gives a collection the six usual routes, so a resource is a
``Collection`` plus two small dependencies that turn path parameters into a ``Chain``
(one for the parent, one for an item). FastAPI documents the parameters of those
dependencies, so ``/openapi.json`` shows every path parameter; bodies are declared from
the model with ``json_schema`` and structured with the same ``structure`` the config
file goes through.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the parameter annotations
# at runtime, and these name ``parent`` and ``item``, which exist only in the closure.
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request, Response

from admin.edits import (
    Chain,
    Collection,
    create_change,
    created_index,
    delete_change,
    get_item,
    list_items,
    patch_change,
    replace_change,
)
from admin.errors import GUARDED, WRITE, responses
from admin.http import (
    answer,
    apply,
    body_schema,
    config_of,
    json_content,
    merge_patch_schema,
    read_json,
)
from gateway.config import json_schema, unstructure


def at_root() -> Chain:
    """The parent of a top-level collection (listeners, clusters): the config itself."""
    return ()


def add_collection_routes(
    router: APIRouter,
    path: str,
    key_param: str,
    collection: Collection,
    *,
    parent: Callable[..., Chain],
    item: Callable[..., Chain],
) -> None:
    """Register the six routes of ``collection`` at ``path`` and ``path/{key_param}``."""
    noun, field = collection.noun, collection.field
    item_path = f"{path}/{{{key_param}}}"
    schema = json_schema(collection.item_type, {})
    one = json_content(schema, f"The {noun}")
    many = json_content({"type": "array", "items": schema}, f"Every {noun}")

    @router.get(
        path,
        name=f"list_{field}",
        description=f"Every {noun} of the running config, in order; POST adds one",
        responses={200: many, **responses(*GUARDED, 404)},
    )
    async def list_all(request: Request, chain: Annotated[Chain, Depends(parent)]) -> Response:
        config = config_of(request)
        return answer(unstructure(list_items(config, chain, collection)), config)

    @router.get(item_path, name=f"get_{field}", responses={200: one, **responses(*GUARDED, 404)})
    async def get_one(request: Request, chain: Annotated[Chain, Depends(item)]) -> Response:
        config = config_of(request)
        return answer(unstructure(get_item(config, chain)), config)

    @router.post(
        path,
        name=f"create_{field}",
        status_code=201,
        openapi_extra=body_schema(collection.item_type),
        responses={201: one, **responses(*WRITE, 409)},
    )
    async def create(
        request: Request,
        chain: Annotated[Chain, Depends(parent)],
        before: Annotated[
            str | None,
            Query(description=f"insert before this {noun} (name or position); default: last"),
        ] = None,
    ) -> Response:
        body = await read_json(request)
        config = await apply(request, create_change(chain, collection, body, before=before))
        items: tuple[Any, ...] = list_items(config, chain, collection)
        index = created_index(items, collection, before)
        key = collection.url_key(items[index], index)
        response = answer(unstructure(items[index]), config, 201)
        # the path as the client sent it, percent-encoded again: a header is Latin-1, and a
        # listener's name in the path may be any text
        parent_path = quote(request.url.path.rstrip("/"), safe="/:[]")
        location = f"{parent_path}/{quote(key, safe=':[]')}"
        # e.g. ?virtual_host=, which the item's URL needs too (not ?before=)
        query = "&".join(
            f"{k}={quote(v)}" for k, v in request.query_params.items() if k != "before"
        )
        response.headers["Location"] = f"{location}?{query}" if query else location
        return response

    @router.put(
        item_path,
        name=f"replace_{field}",
        openapi_extra=body_schema(collection.item_type),
        responses={200: one, **responses(*WRITE)},
    )
    async def replace(request: Request, chain: Annotated[Chain, Depends(item)]) -> Response:
        config = await apply(request, replace_change(chain, await read_json(request)))
        return answer(unstructure(get_item(config, chain)), config)

    @router.patch(
        item_path,
        name=f"patch_{field}",
        openapi_extra=merge_patch_schema(collection.item_type),
        responses={200: one, **responses(*WRITE)},
    )
    async def patch(request: Request, chain: Annotated[Chain, Depends(item)]) -> Response:
        config = await apply(request, patch_change(chain, await read_json(request)))
        return answer(unstructure(get_item(config, chain)), config)

    @router.delete(item_path, name=f"delete_{field}", status_code=204, responses=responses(*WRITE))
    async def delete(request: Request, chain: Annotated[Chain, Depends(item)]) -> Response:
        config = await apply(request, delete_change(chain))
        return answer(None, config, 204)
