"""The admin API's door: Host check, API key, JSON-only mutations. Runs before any route.

In order, a request is refused

1. 403 if its ``Host`` is not the admin address or a loopback name. A web page on a
   domain the attacker rebinds to 127.0.0.1 sends its own domain as ``Host``, so this
   stops DNS rebinding. On a wildcard bind (``0.0.0.0``, ``::``, where a key is always
   required) any IP literal is accepted: rebinding needs a name, not a literal.
2. 401 if an API key is configured and the request carries neither
   ``Authorization: Bearer <key>`` nor ``X-API-Key: <key>``; compared in constant time,
   never logged, never echoed.
3. 415 if it is a POST, PUT or PATCH without a JSON media type, or a DELETE with a body
   that is not JSON. A browser cannot send ``application/json`` across origins without a
   CORS preflight (which this API never grants), so a form on another site cannot
   change the config either.

This is a plain ASGI middleware, so it also covers any WebSocket a later route opens.

The key is not asked of a GET or HEAD of the pages that explain the API (``public``):
``/``, ``/docs`` with its assets, and ``/openapi.json``. They are the same for every
gateway of this version, derived from the code alone (no config, no state, no figures;
but whether a key is set, which any 401 tells), so they show nothing that the package
itself does not; and the docs page has to load the schema before Swagger UI's
*Authorize* can take the key for the requests it sends. Envoy's admin has no
authentication at all; everything else here stays behind the key. The Host check
applies to them as to any request.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.config import Address

MUTATIONS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_LOOPBACK_NAMES = frozenset({"localhost", "localhost."})
_WILDCARDS = frozenset({"", "*", "0.0.0.0", "::"})
#: the paths a GET or HEAD may read without the API key (see the module docstring)
PUBLIC_PATHS = frozenset({"/", "/docs", "/openapi.json"})
#: and the docs' own files (Swagger UI, vendored in the package)
PUBLIC_PREFIX = "/docs/"
#: what a 401 tells the client to do
KEY_HINT = (
    "send the admin API key as 'Authorization: Bearer KEY' or 'X-API-Key: KEY' (the key "
    "is the one admin.api_key_env or admin.api_key_file names; in /docs, use Authorize)"
)


def _host_name(header: str) -> str | None:
    """The host part of a ``Host`` header, lower-cased; None if it does not parse."""
    header = header.strip().lower()
    if header.startswith("["):
        name, sep, rest = header[1:].partition("]")
        if not sep or (rest and not (rest.startswith(":") and rest[1:].isdecimal())):
            return None
        return name
    name, sep, port = header.partition(":")
    if sep and not port.isdecimal():
        return None
    return name or None


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def host_allowed(header: str | None, admin: Address | None) -> bool:
    """Whether a request with this ``Host`` may reach the admin API bound at ``admin``."""
    if header is None:
        return False
    name = _host_name(header)
    if name is None:
        return False
    ip = _ip(name)
    if name in _LOOPBACK_NAMES or (ip is not None and ip.is_loopback):
        return True
    if admin is None:
        return False
    if admin.host.lower() in _WILDCARDS:
        return ip is not None
    admin_ip = _ip(admin.host)
    return name == admin.host.lower() or (ip is not None and ip == admin_ip)


def public(method: str, path: str) -> bool:
    """Whether this request reads one of the pages that explain the API (no key needed)."""
    if method not in ("GET", "HEAD"):
        return False
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIX)


def _presented_key(headers: Headers) -> str | None:
    auth = headers.get("authorization")
    if auth is not None:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return headers.get("x-api-key")


def key_matches(presented: str | None, api_key: str) -> bool:
    if presented is None:
        return False
    # digests first, so the comparison takes the same time whatever the lengths
    offered = hashlib.sha256(presented.encode()).digest()
    return hmac.compare_digest(offered, hashlib.sha256(api_key.encode()).digest())


def is_json(content_type: str | None) -> bool:
    if content_type is None:
        return False
    media = content_type.partition(";")[0].strip().lower()
    kind, _, subtype = media.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


def _has_body(headers: Headers) -> bool:
    return "transfer-encoding" in headers or headers.get("content-length", "0") != "0"


class Guard:
    """ASGI middleware applying the three checks above."""

    def __init__(
        self, app: ASGIApp, *, admin_address: Callable[[], Address | None], api_key: str | None
    ) -> None:
        self.app = app
        self.admin_address = admin_address
        self.api_key = api_key

    def refusal(self, method: str, headers: Headers, path: str = "") -> JSONResponse | None:
        if not host_allowed(headers.get("host"), self.admin_address()):
            address = self.admin_address()
            return JSONResponse(
                {
                    "detail": "Host must be the admin address or localhost",
                    "hint": f"use http://{address or '127.0.0.1'}/ or http://localhost:PORT/ "
                    "as the URL (a name that merely resolves to it is refused)",
                },
                status_code=403,
            )
        if (
            self.api_key is not None
            and not public(method, path)
            and not key_matches(_presented_key(headers), self.api_key)
        ):
            return JSONResponse(
                {
                    "detail": "an API key is required (Authorization: Bearer, or X-API-Key)",
                    "hint": KEY_HINT,
                },
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="triogate admin"'},
            )
        if method in MUTATIONS and (method != "DELETE" or _has_body(headers)):
            content_type = headers.get("content-type")
            if not is_json(content_type):
                return JSONResponse(
                    {
                        "detail": f"{method} needs a JSON body (Content-Type: application/json), "
                        f"not {content_type or 'none'}",
                        "hint": "send the body as JSON with 'Content-Type: application/json' "
                        "(a command that takes no settings takes {})",
                    },
                    status_code=415,
                )
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refused = self.refusal(scope["method"], Headers(scope=scope), scope["path"])
            if refused is not None:
                await refused(scope, receive, send)
                return
        elif scope["type"] == "websocket" and self.refusal("GET", Headers(scope=scope)):
            # a live view (a dashboard) is guarded like a GET; closing before accept is a 403
            await send({"type": "websocket.close", "code": 1008})
            return
        await self.app(scope, receive, send)
