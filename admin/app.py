"""The admin API app: the resource routers behind the guard, errors as JSON.

``create_app(gateway, api_key)`` is all the server needs. The OpenAPI document declares
each route's bodies and answers from the config model itself (``json_schema``), so
``/openapi.json`` always describes exactly what the config file accepts.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from admin.errors import install_handlers
from admin.guard import Guard
from admin.routes import ROUTERS, dashboard, stats
from gateway import Gateway
from gateway.config import Config, json_schema


def create_app(gateway: Gateway, api_key: str | None) -> FastAPI:
    app = FastAPI(
        title="triogate admin API",
        version="1",
        description="Read and change the running gateway. Every write is validated against "
        "the whole resulting config and applied as one new version (ETag / If-Match).",
        # Swagger UI and ReDoc load their scripts from a CDN; a gateway must not depend on
        # the internet, so only the schema itself is served (at /openapi.json)
        docs_url=None,
        redoc_url=None,
    )
    app.state.gateway = gateway
    for router in ROUTERS:
        app.include_router(router)
    app.include_router(stats.router)
    app.include_router(dashboard.router)
    install_handlers(app)
    app.add_middleware(Guard, admin_address=lambda: gateway.admin_address, api_key=api_key)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            model: dict[str, Any] = {}
            json_schema(Config, model)  # every model class is reachable from Config
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            clash = model.keys() & components.keys()
            assert not clash, f"model classes clash with API schemas: {clash}"
            components.update(model)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
