"""The admin API app: the resource routers behind the guard, errors as JSON.

``create_app(gateway, api_key)`` is all the server needs. The OpenAPI document declares
each route's bodies and answers from the config model itself (``json_schema``), so
``/openapi.json`` always describes exactly what the config file accepts.

``/docs`` is FastAPI's Swagger UI with its files served from the package
(``fastapi-offline`` vendors them; see pyproject.toml for why that one): a gateway must
not depend on the internet, so the page names no other host. ReDoc is left out: one
docs page is enough, and Swagger UI's is the one that can send requests. With an API
key the schema declares it (bearer, or ``X-API-Key``), so *Authorize* takes it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi_offline import FastAPIOffline

from admin.errors import install_handlers
from admin.guard import KEY_HINT, Guard
from admin.routes import ROUTERS, dashboard, index, stats
from gateway import Gateway
from gateway.config import Config, json_schema

#: the two ways to send the key (guard.py), as Swagger UI's Authorize offers them
_SECURITY_SCHEMES: dict[str, Any] = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "the admin API key"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}


def create_app(gateway: Gateway, api_key: str | None) -> FastAPI:
    app: FastAPI = FastAPIOffline(
        docs_url=index.DOCS,
        redoc_url=None,
        static_url=f"{index.DOCS}/static",
        title="triogate admin API",
        version="1",
        description="Read and change the running gateway. Every write is validated against "
        "the whole resulting config and applied as one new version (ETag / If-Match). "
        "GET / lists the resources.",
        # no badge fetched from validator.swagger.io: the page loads nothing from elsewhere
        swagger_ui_parameters={"validatorUrl": None},
    )
    app.state.gateway = gateway
    app.state.key_hint = None if api_key is None else KEY_HINT
    app.include_router(index.router)
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
            if api_key is not None:
                schema["components"]["securitySchemes"] = _SECURITY_SCHEMES
                schema["security"] = [{name: []} for name in _SECURITY_SCHEMES]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
