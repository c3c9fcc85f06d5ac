"""How errors become HTTP answers, and the OpenAPI declaration of each one.

    GatewayError (gateway.errors)
    ├── ConfigError             the resulting config is invalid          -> 422, every issue
    ├── VersionMismatch         If-Match (or a body's version) is stale  -> 412
    ├── EditError (admin.edits)
    │   ├── ItemNotFound        a URL names a missing item               -> 404
    │   └── ItemExists          create with a key already taken          -> 409
    ├── RequestRefused          the request itself is unacceptable       -> its status_hint
    │                           (400 bad JSON or If-Match, 413 too big, 415 not JSON)
    ├── ChangeFailed            an actor failed on the change; rolled back -> 503, the cause
    ├── StateFileError          the change could not be persisted; rolled back -> 503
    └── any other (ActorStopped) the control plane did not answer        -> 503

A refused or failed write changes nothing: the running gateway, ``GET /config`` and the
state file are as they were.

A 422 lists each problem as ``{"loc": "clusters[0].endpoints[1].address", "msg": ...}``,
with paths from the root of the whole config; every other error is ``{"detail": text}``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from gateway import ConfigError, GatewayError, VersionMismatch


class RequestRefused(GatewayError):
    """The request is malformed before any config is looked at."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status_hint = status


class Problem(BaseModel):
    """Why a request failed."""

    detail: str


class Issue(BaseModel):
    """One problem in the config that a write would have produced."""

    loc: str
    msg: str


class Invalid(BaseModel):
    """A write was refused; every problem is listed, by its path in the whole config."""

    detail: list[Issue]


_DESCRIPTIONS = {
    400: "Malformed request: body is not JSON, or a bad If-Match header",
    401: "An API key is configured and the request does not carry it",
    403: "The Host header is neither the admin address nor localhost",
    404: "No such resource",
    409: "An item with that key already exists",
    412: "If-Match names a version that is no longer current",
    413: "The request body is too large",
    415: "A mutation must carry a JSON body (Content-Type: application/json)",
    422: "The resulting config would be invalid; nothing was changed",
    503: "The change failed and was rolled back (an actor failed, or it could not be "
    "persisted: the detail says which), or the control plane is not answering",
}

#: what the guard may answer to any request
GUARDED = (401, 403)
#: what any write may answer, besides its success and its own codes
WRITE = (*GUARDED, 400, 404, 412, 413, 415, 422, 503)


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` for the error statuses a route can return."""
    declared: dict[int | str, dict[str, Any]] = {}
    for code in sorted(set(codes)):
        model = Invalid if code == 422 else Problem
        declared[code] = {"model": model, "description": _DESCRIPTIONS[code]}
    return declared


def problem(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def invalid(issues: list[tuple[str, str]]) -> JSONResponse:
    return JSONResponse(
        {"detail": [{"loc": loc, "msg": msg} for loc, msg in issues]}, status_code=422
    )


async def _config_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ConfigError)
    return invalid([(i.path, i.message) for i in exc.issues])


async def _version_mismatch(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, VersionMismatch)
    return problem(412, str(exc), {"ETag": f'"{exc.current}"'})


async def _gateway_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, GatewayError)
    status = exc.status_hint if exc.status_hint in _DESCRIPTIONS else 503
    return problem(status, str(exc))


async def _request_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return invalid(
        [(".".join(str(p) for p in e.get("loc", ())), str(e.get("msg"))) for e in exc.errors()]
    )


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return problem(exc.status_code, str(exc.detail), dict(exc.headers or {}))


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ConfigError, _config_error)
    app.add_exception_handler(VersionMismatch, _version_mismatch)
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(HTTPException, _http_exception)
