"""Toxiproxy's REST API as an ASGI app over a running gateway.

Theory of operation: one small router in Toxiproxy's shape (gorilla/mux): an unknown
path is ``404 page not found``; a known path with another method is 405 with an empty
body; only a matched route runs the middleware, in Toxiproxy's order (a request id in
``X-Toxiproxy-Request-Id``, then the browser blocker: a ``User-Agent`` starting with
``Mozilla/`` gets 403, then a 25 s limit answered 503 with an empty body). Handlers
read the control plane's view (``gateway.control``) and write through it: every write
is one ``Change`` (``admin.toxiproxy.proxies``) applied with ``control.apply``, so it
is validated whole, atomic and persisted like a native write; a proxy's bound address
is read back from the view once the change is in.

Answers are written byte for byte as Toxiproxy's: ``application/json`` bodies without a
trailing newline (Go's ``json.Marshal``: no spaces, ``<>&`` escaped), errors as
``{"error":..., "status":...}`` + newline in ``text/plain; charset=utf-8``, the
``/populate`` error in ``application/json`` with its ``proxies``, ``/version`` with its
own content type and spacing. Control plane errors become Toxiproxy's: a listener that
cannot bind is 500 ``listen tcp ADDR: bind: ...``; another invalid config is 400 with
each issue by its config path; an actor that failed is 500.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import trio
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from admin.toxiproxy.decode import decode_struct, kind_of, read_value
from admin.toxiproxy.errors import ToxiproxyError, toxic_not_found
from admin.toxiproxy.metrics import metrics_text
from admin.toxiproxy.proxies import (
    POPULATE_TYPE,
    PROXY_TYPE,
    TOXIC_TYPE,
    Change,
    ProxySpec,
    create_change,
    decode_proxy,
    delete_change,
    enabling,
    find_proxy,
    is_proxy,
    parse_listen,
    parse_upstream,
    populate_change,
    proxy_json,
    reset_change,
    spec_of,
    toxics_change,
    update_change,
)
from admin.toxiproxy.toxics import chain_order, toxic_from, toxic_json, toxic_updated
from gateway import ConfigError, Gateway, GatewayError
from gateway.config import Address, Config, Listener, Toxic

log = logging.getLogger("triogate.toxiproxy")

#: the Toxiproxy release whose API this is, and ours (semver build metadata)
VERSION: Final = "2.12.0+triogate.0.1.0"
#: Toxiproxy's http.TimeoutHandler around every route
HANDLER_TIMEOUT: Final = 25.0
#: larger bodies are refused (Toxiproxy reads any; a proxy list is far smaller)
MAX_BODY: Final = 1 << 22

_JSON: Final = "application/json"
_TEXT: Final = "text/plain; charset=utf-8"

Handler = Callable[..., Awaitable[Response]]


def go_json(value: Any) -> bytes:
    """``value`` as Go's ``json.Marshal`` writes it (compact, UTF-8, HTML-safe)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for char, escape in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escape)
    return text.encode()


def json_answer(value: Any, status: int = 200) -> Response:
    return Response(go_json(value), status_code=status, headers={"content-type": _JSON})


def error_answer(status: int, message: str) -> Response:
    """Toxiproxy's ``apiError``: ``http.Error`` with a JSON body, so text/plain."""
    body = go_json({"error": message, "status": status}) + b"\n"
    return Response(
        body,
        status_code=status,
        headers={"content-type": _TEXT, "x-content-type-options": "nosniff"},
    )


def _not_found() -> Response:
    return Response(
        b"404 page not found\n",
        status_code=404,
        headers={"content-type": _TEXT, "x-content-type-options": "nosniff"},
    )


class _RequestIds:
    """Ids in the shape of Toxiproxy's (rs/xid): 12 bytes (time, machine, pid, counter)
    written in 20 characters of lower-case base32hex."""

    _ALPHABET: Final = "0123456789abcdefghijklmnopqrstuv"

    def __init__(self) -> None:
        self._machine = secrets.token_bytes(3)
        self._pid = (os.getpid() & 0xFFFF).to_bytes(2, "big")
        self._counter = secrets.randbelow(1 << 24)
        self._lock = threading.Lock()

    def next(self) -> str:
        with self._lock:
            self._counter = (self._counter + 1) & 0xFFFFFF
            counter = self._counter
        raw = (
            int(time.time()).to_bytes(4, "big")
            + self._machine
            + self._pid
            + counter.to_bytes(3, "big")
        )
        number = int.from_bytes(raw, "big") << 4  # 96 bits padded to 100: 20 digits
        return "".join(self._ALPHABET[(number >> (5 * i)) & 31] for i in reversed(range(20)))


class ToxiproxyApp:
    """The ASGI app; ``metrics`` serves ``/metrics`` (toxiproxy-server's ``-proxy-metrics``)."""

    def __init__(self, gateway: Gateway, *, metrics: bool = False) -> None:
        self.gateway = gateway
        #: the address each proxy with listen port 0 was last bound to: Toxiproxy keeps
        #: the bound address, so a disabled proxy shows it and listens there again
        self.pinned: dict[str, Address] = {}
        self._ids = _RequestIds()
        proxy = "(?P<proxy>[^/]+)"
        toxic = "(?P<toxic>[^/]+)"
        routes: list[tuple[str, dict[str, Handler]]] = [
            ("/version", {"GET": self.version}),
            ("/proxies", {"GET": self.proxy_index, "POST": self.proxy_create}),
            ("/populate", {"POST": self.populate}),
            (
                f"/proxies/{proxy}",
                {
                    "GET": self.proxy_show,
                    "POST": self.proxy_update,
                    "PATCH": self.proxy_update,
                    "DELETE": self.proxy_delete,
                },
            ),
            (
                f"/proxies/{proxy}/toxics",
                {"GET": self.toxic_index, "POST": self.toxic_create},
            ),
            (
                f"/proxies/{proxy}/toxics/{toxic}",
                {
                    "GET": self.toxic_show,
                    "POST": self.toxic_update,
                    "PATCH": self.toxic_update,
                    "DELETE": self.toxic_delete,
                },
            ),
            ("/reset", {"POST": self.reset}),
        ]
        self._routes = [(re.compile(path), methods) for path, methods in routes]
        self._metrics = re.compile("/metrics") if metrics else None

    # -- ASGI and the router -------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        response = await self.dispatch(request)
        await response(scope, receive, send)

    async def dispatch(self, request: Request) -> Response:
        path = request.url.path
        handler: Handler | None = None
        params: dict[str, str] = {}
        if self._metrics is not None and self._metrics.fullmatch(path):
            handler = self.metrics
        else:
            for pattern, methods in self._routes:
                match = pattern.fullmatch(path)
                if match is not None:
                    handler = methods.get(request.method)
                    if handler is None:
                        return Response(b"", status_code=405)
                    params = match.groupdict()
                    break
            else:
                return _not_found()
        assert handler is not None
        request_id = self._ids.next()
        response = await self._guarded(request, handler, params)
        response.headers["X-Toxiproxy-Request-Id"] = request_id
        return response

    async def _guarded(
        self, request: Request, handler: Handler, params: Mapping[str, str]
    ) -> Response:
        if request.headers.get("user-agent", "").startswith("Mozilla/"):
            return Response(  # Go's http.Error, as _not_found
                b"User agent not allowed\n",
                status_code=403,
                headers={"content-type": _TEXT, "x-content-type-options": "nosniff"},
            )
        with trio.move_on_after(HANDLER_TIMEOUT):
            try:
                return await handler(request, **params)
            except ToxiproxyError as e:
                return error_answer(e.status_hint, e.message)
        return Response(b"", status_code=503)

    # -- reading and writing the config -------------------------------------------------

    @property
    def config(self) -> Config:
        return self.gateway.control.config

    async def _body_bytes(self, request: Request) -> bytes:
        body = bytearray()
        async for piece in request.stream():
            body += piece
            if len(body) > MAX_BODY:
                raise ToxiproxyError(400, f"bad request body: larger than {MAX_BODY} bytes")
        return bytes(body)

    async def _body(self, request: Request) -> Any:
        return read_value(await self._body_bytes(request))

    async def _apply(self, change: Change) -> Config:
        """Apply ``change`` through the control plane; its errors as Toxiproxy's."""
        try:
            config = await self.gateway.control.apply(change)
        except ToxiproxyError:
            raise
        except ConfigError as e:
            raise _config_error(e) from None
        except GatewayError as e:
            raise ToxiproxyError(500, str(e)) from None
        for listener in config.listeners:
            if is_proxy(listener):
                self.shown(listener)  # pins a port-0 listen to its bound port
        return config

    def shown(self, listener: Listener) -> str:
        """A proxy's ``listen`` as Toxiproxy shows it: the bound address while it is
        enabled, else the address it had (port 0 pinned to its last bound port)."""
        view = self.gateway.control.listeners.get(listener.name)
        bound = view.bound if view is not None else None
        if listener.enabled and bound is not None:
            if listener.address.port == 0:
                self.pinned[listener.name] = bound
            return str(bound)
        if listener.address.port == 0 and listener.name in self.pinned:
            return str(self.pinned[listener.name])
        return str(listener.address)

    def _proxy(self, config: Config, name: str) -> dict[str, Any]:
        listener = find_proxy(config, name)
        return proxy_json(config, listener, self.shown(listener))

    def _shown_all(self, config: Config) -> dict[str, str]:
        return {lst.name: self.shown(lst) for lst in config.listeners if is_proxy(lst)}

    # -- handlers -----------------------------------------------------------------------

    async def version(self, request: Request) -> Response:
        return Response(
            f'{{"version": "{VERSION}"}}\n'.encode(),
            headers={"content-type": "application/json;charset=utf-8"},
        )

    async def proxy_index(self, request: Request) -> Response:
        config = self.config
        names = sorted(lst.name for lst in config.listeners if is_proxy(lst))
        return json_answer({name: self._proxy(config, name) for name in names})

    async def proxy_create(self, request: Request) -> Response:
        fields = decode_proxy(await self._body(request), top_type=PROXY_TYPE)
        if self.config.listener(fields["name"]) is not None:
            raise ToxiproxyError(409, "proxy already exists")  # before the listen is read
        spec = spec_of(fields)
        config = await self._apply(create_change(spec))
        return json_answer(self._proxy(config, spec.name), status=201)

    async def populate(self, request: Request) -> Response:
        try:
            proxies = await self.populate_body(await self._body_bytes(request))
        except ToxiproxyError as e:
            body = go_json({"error": e.message, "status": e.status_hint, "proxies": None})
            return Response(body, status_code=e.status_hint, headers={"content-type": _JSON})
        return json_answer({"proxies": proxies or None}, status=201)

    async def populate_body(self, body: bytes) -> list[dict[str, Any]]:
        """``/populate`` (and ``--config``): the proxies of ``body``, made or kept, as one
        change; ``ToxiproxyError`` if refused (then nothing changed)."""
        specs = self._populate_specs(read_value(body))
        shown = self._shown_all(self.config)
        config = await self._apply(populate_change(specs, shown))
        return [self._proxy(config, s.name) for s in specs]

    def _populate_specs(self, value: Any) -> list[ProxySpec]:
        if not isinstance(value, list):
            if value is None:
                return []
            raise ToxiproxyError(
                400,
                f"bad request body: json: cannot unmarshal {kind_of(value)} into Go value "
                f"of type []{POPULATE_TYPE}",
            )
        # every entry is checked before any is made (Toxiproxy's order)
        entries = [
            decode_proxy(item, top_type=POPULATE_TYPE, at=f" at proxy {i}")
            for i, item in enumerate(value, start=1)
        ]
        return [spec_of(fields) for fields in entries]

    async def proxy_show(self, request: Request, proxy: str) -> Response:
        return json_answer(self._proxy(self.config, proxy))

    async def proxy_update(self, request: Request, proxy: str) -> Response:
        config = self.config
        listener = find_proxy(config, proxy)
        current = {
            "listen": self.shown(listener),
            "upstream": proxy_json(config, listener, "")["upstream"],
            "enabled": listener.enabled,
        }
        fields = _decode_update(await self._body(request), current)
        # Toxiproxy compares the resolved listen with the bound one; port 0 always differs
        listen: Address | None = parse_listen(fields["listen"])
        if listen is not None and str(listen) == current["listen"] and listen.port != 0:
            listen = None
        upstream = None
        if fields["upstream"] != current["upstream"]:
            upstream = parse_upstream(fields["upstream"])
        if listen is None and fields["enabled"] and not listener.enabled:
            pinned = enabling(listener, self.pinned)
            listen = pinned.address if pinned is not listener else None
        config = await self._apply(
            update_change(proxy, listen=listen, upstream=upstream, enabled=fields["enabled"])
        )
        return json_answer(self._proxy(config, proxy))

    async def proxy_delete(self, request: Request, proxy: str) -> Response:
        await self._apply(delete_change(proxy))
        self.pinned.pop(proxy, None)
        return Response(status_code=204)

    async def toxic_index(self, request: Request, proxy: str) -> Response:
        listener = find_proxy(self.config, proxy)
        return json_answer([toxic_json(t) for t in chain_order(listener.toxics)])

    async def toxic_create(self, request: Request, proxy: str) -> Response:
        listener = find_proxy(self.config, proxy)
        value = await self._body(request)
        # checked here for Toxiproxy's order of errors, and again in the change
        toxic_from(value, {t.name for t in listener.toxics}, top_type=TOXIC_TYPE)
        made: list[Toxic] = []

        def add(toxics: tuple[Toxic, ...]) -> tuple[Toxic, ...]:
            made.append(toxic_from(value, {t.name for t in toxics}, top_type=TOXIC_TYPE))
            return (*toxics, made[0])

        await self._apply(toxics_change(proxy, add))
        return json_answer(toxic_json(made[0]))

    async def toxic_show(self, request: Request, proxy: str, toxic: str) -> Response:
        return json_answer(toxic_json(_toxic(find_proxy(self.config, proxy), toxic)))

    async def toxic_update(self, request: Request, proxy: str, toxic: str) -> Response:
        _toxic(find_proxy(self.config, proxy), toxic)
        value = await self._body(request)
        made: list[Toxic] = []

        def update(toxics: tuple[Toxic, ...]) -> tuple[Toxic, ...]:
            made.append(toxic_updated(_in(toxics, toxic), value))
            return tuple(made[0] if t.name == toxic else t for t in toxics)

        await self._apply(toxics_change(proxy, update))
        return json_answer(toxic_json(made[0]))

    async def toxic_delete(self, request: Request, proxy: str, toxic: str) -> Response:
        def remove(toxics: tuple[Toxic, ...]) -> tuple[Toxic, ...]:
            _in(toxics, toxic)
            return tuple(t for t in toxics if t.name != toxic)

        await self._apply(toxics_change(proxy, remove))
        return Response(status_code=204)

    async def reset(self, request: Request) -> Response:
        await self._apply(reset_change(dict(self.pinned)))
        return Response(status_code=204)

    async def metrics(self, request: Request) -> Response:
        stats = await self.gateway.refresh_stats()
        text, content_type = metrics_text(self.config, stats, self._shown_all(self.config))
        return Response(text.encode(), headers={"content-type": content_type})


def _decode_update(value: Any, current: dict[str, Any]) -> dict[str, Any]:
    return decode_struct(
        value,
        {"listen": "string", "upstream": "string", "enabled": "bool"},
        "Proxy",
        dict(current),
        top_type=PROXY_TYPE,
    )


def _toxic(listener: Listener, name: str) -> Toxic:
    return _in(listener.toxics, name)


def _in(toxics: tuple[Toxic, ...], name: str) -> Toxic:
    for toxic in toxics:
        if toxic.name == name:
            return toxic
    raise toxic_not_found()


# the reason, without the advice after it (gateway.errors.bind_failed)
_BIND = re.compile(r"cannot bind (\S+): ([^;]*)")


def _config_error(error: ConfigError) -> ToxiproxyError:
    """An invalid resulting config as Toxiproxy would answer it."""
    for issue in error.issues:
        bind = _BIND.search(issue.message)
        if issue.path.endswith(".address") and bind is not None:
            address, reason = bind.groups()
            return ToxiproxyError(500, f"listen tcp {address}: bind: {reason.lower()}")
    return ToxiproxyError(400, "; ".join(str(issue) for issue in error.issues))
