"""How errors become HTTP answers, and the OpenAPI declaration of each one.

    GatewayError (gateway.errors)
    ├── ConfigError             the resulting config is invalid          -> 422, every issue
    ├── VersionMismatch         If-Match (or a body's version) is stale  -> 412
    ├── EditError (admin.edits)
    │   ├── ItemNotFound        a URL names a missing item               -> 404
    │   └── ItemExists          create with a key already taken          -> 409
    ├── RequestRefused          the request itself is unacceptable       -> its status_hint
    │                           (400 bad JSON or If-Match, 413 too big, 415 not JSON,
    │                           409 a command the rollout's state refuses)
    ├── ChangeFailed            an actor failed on the change; rolled back -> 503, the cause
    ├── StateFileError          the change could not be persisted; rolled back -> 503
    └── any other (ActorStopped) the control plane did not answer        -> 503

A refused or failed write changes nothing: the running gateway, ``GET /config`` and the
state file are as they were.

A 422 lists each problem as ``{"loc": "clusters[0].endpoints[1].address", "msg": ...}``,
with paths from the root of the whole config; every other error is ``{"detail": text}``
(and ``hint``, below).

Each body also carries a ``hint``, what to do next, where there is something to say
(``hint_for``): the URL listing what exists (404), to read the resource again and send
its ETag (412), the commands a rollout's state takes (409), the header to send (401,
in ``guard.py``), ``triogate validate FILE`` (422), that etcd is unreachable and writes
resume when it is back (503). ``detail`` stays as it was: clients match on it.
"""

from __future__ import annotations

import difflib
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from admin.edits import ItemExists, ItemNotFound
from gateway import (
    ChangeFailed,
    ConfigError,
    GatewayError,
    NotRegistered,
    RolloutNotFound,
    StateFileError,
    StoreUnavailable,
    VersionMismatch,
)


class RequestRefused(GatewayError):
    """The request is malformed before any config is looked at, or a route refuses it
    (``hint``: what to do instead)."""

    def __init__(self, status: int, reason: str, *, hint: str | None = None) -> None:
        super().__init__(reason)
        self.status_hint = status
        self.hint = hint


class Problem(BaseModel):
    """Why a request failed."""

    detail: str
    #: what to do next, where there is something to say
    hint: str | None = None


class Issue(BaseModel):
    """One problem in the config that a write would have produced."""

    loc: str
    msg: str


class Invalid(BaseModel):
    """A write was refused; every problem is listed, by its path in the whole config."""

    detail: list[Issue]
    hint: str | None = None


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


def problem(
    status: int,
    detail: str,
    headers: dict[str, str] | None = None,
    *,
    hint: str | None = None,
) -> JSONResponse:
    body = {"detail": detail} if hint is None else {"detail": detail, "hint": hint}
    return JSONResponse(body, status_code=status, headers=headers)


#: what a refused write's 422 says to do
CONFIG_HINT = (
    "fix each field named by loc (its path in the whole config, as GET /config shows it) "
    "and send the request again: nothing was changed. A config file is checked the same "
    "way, without starting anything, by: triogate validate FILE"
)


def invalid(issues: list[tuple[str, str]], *, hint: str = CONFIG_HINT) -> JSONResponse:
    return JSONResponse(
        {"detail": [{"loc": loc, "msg": msg} for loc, msg in issues], "hint": hint},
        status_code=422,
    )


def _segments(request: Request) -> list[str]:
    """The path's segments, decoded (as ASGI's ``path`` is, and path parameters are)."""
    path: str = request.scope.get("path", request.url.path)
    return path.rstrip("/").split("/")[1:]


def list_url(request: Request, exc: ItemNotFound) -> str:
    """The URL listing the kind of item ``exc`` could not find.

    The admin API's paths alternate a collection and a key
    (``/listeners/web/routes/main``), so the list is the path up to the missing key.
    """
    segments = _segments(request)
    for i in range(1, len(segments), 2):
        if segments[i] == exc.key:
            return "/" + "/".join(segments[:i])
    if exc.listed_at is not None:
        return exc.listed_at
    return "/" + segments[0] if segments else "/"


def hint_for(request: Request, exc: Exception) -> str | None:
    """What to do next after ``exc``, as far as this request tells."""
    own = getattr(exc, "hint", None)
    if isinstance(own, str):
        return own
    if isinstance(exc, ItemNotFound):
        return f"GET {list_url(request, exc)} lists what there is"
    if isinstance(exc, RolloutNotFound):
        return "GET /rollouts lists the rollouts"
    if isinstance(exc, NotRegistered):
        endpoints = "/" + "/".join(_segments(request)[:3])
        return (
            f"GET {endpoints} lists the registrations; an instance that is not there "
            f"(expired, or the gateway restarted) registers again with POST {endpoints}"
        )
    if isinstance(exc, ItemExists):
        return (
            "change the existing one at its URL (PUT or PATCH), DELETE it first, "
            "or choose another name"
        )
    if isinstance(exc, VersionMismatch):
        return (
            f"read the resource again (GET: the config is at version {exc.current}), redo "
            f'the change on what it says now, and send it with If-Match: "{exc.current}"'
        )
    if isinstance(exc, StoreUnavailable):
        return (
            "etcd (config_store) is unreachable, or this node has not caught up with it: "
            "nothing was changed. Reads serve the last config; writes resume once etcd is "
            "back, so send the change again then"
        )
    if isinstance(exc, ChangeFailed | StateFileError):
        return "nothing was changed (rolled back): fix the cause in detail and send it again"
    if isinstance(exc, RequestRefused) and exc.status_hint == 400:
        return "GET /docs shows the body and parameters each path takes"
    if isinstance(exc, GatewayError) and (
        exc.status_hint == 503 or exc.status_hint not in _DESCRIPTIONS
    ):
        return "a part of the gateway is restarting: retry in a moment (GET /ready says when)"
    return None


def _unknown_path_hint(request: Request) -> str:
    """A 404 for a path no route has: the closest top-level resource, and the index."""
    segments = _segments(request)
    paths = [*request.app.openapi()["paths"], "/docs", "/dashboard", "/openapi.json"]
    known = sorted({"/" + path.split("/")[1] for path in paths if path != "/"})
    wrong = "/" + segments[0] if segments else "/"
    close = difflib.get_close_matches(wrong, known, n=1)
    guess = f"did you mean {close[0]}? " if close and close[0] != wrong else ""
    return f"{guess}GET / lists every resource of the admin API; /docs describes them"


async def _config_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ConfigError)
    return invalid([(i.path, i.message) for i in exc.issues])


async def _version_mismatch(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, VersionMismatch)
    return problem(412, str(exc), {"ETag": f'"{exc.current}"'}, hint=hint_for(request, exc))


async def _gateway_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, GatewayError)
    status = exc.status_hint if exc.status_hint in _DESCRIPTIONS else 503
    return problem(status, str(exc), hint=hint_for(request, exc))


async def _request_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return invalid(
        [(".".join(str(p) for p in e.get("loc", ())), str(e.get("msg"))) for e in exc.errors()],
        hint="fix the parameters or fields named by loc; GET /docs shows what each path takes",
    )


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    hint = None
    if exc.status_code == 404:
        hint = _unknown_path_hint(request)
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow") or (exc.headers or {}).get("allow")
        hint = f"{request.url.path} takes {allowed}; GET /docs shows each" if allowed else None
    return problem(exc.status_code, str(exc.detail), dict(exc.headers or {}), hint=hint)


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ConfigError, _config_error)
    app.add_exception_handler(VersionMismatch, _version_mismatch)
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(HTTPException, _http_exception)
