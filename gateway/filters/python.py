"""Filters written in Python: ``factory(config)`` returns an object with any of the hooks.

HTTP (``http_filters: [{name, python: {factory: "pkg.mod:Name", config: {...}}}]``)::

    on_request_headers(headers)              -> LocalReply | None
    on_request_body(data, end_of_stream)     -> bytes | BUFFER | None
    on_response_headers(headers)             -> LocalReply | None
    on_response_body(data, end_of_stream)    -> bytes | BUFFER | None
    on_log(entry)                            -> None   (a dict of the request's figures)

Network (``network_filters``, ``protocol: tcp`` listeners)::

    on_new_connection()                      -> None
    on_downstream_data(data)                 -> bytes | None  (client to upstream)
    on_upstream_data(data)                   -> bytes | None  (upstream to client)
    on_close()                               -> None

Each hook may be a plain function or a coroutine function (awaited). ``headers`` is a
``HeaderMap`` (mutable, case-insensitive, ``:path``/``:authority``/``:status`` among
its fields); a body hook's bytes replace the piece, None leaves it. The object the
factory returns serves every request (connection) of the listener until the next
config: keep per-request state out of it, or in the headers.

``import_factory`` resolves ``module:attribute`` when the config is validated, so a
wrong name is a config error (``...python.factory``), never a request's 500.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from gateway.filters.api import HeaderMap, LocalReply
from gateway.filters.chain import HOOKS, Buffer

__all__ = ["PythonHttpFilter", "PythonHttpFilterFactory", "import_factory"]


def import_factory(spec: str) -> Callable[[Any], Any]:
    """The callable ``spec`` names (``package.module:attribute``); ``ValueError`` if none."""
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise ValueError(f"{spec!r} is not 'module:attribute'")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # an ImportError, or the module's own code raising
        raise ValueError(f"cannot import {module_name!r}: {e!r}") from e
    target: Any = module
    for part in attribute.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ValueError(f"module {module_name!r} has no {attribute!r}")
    if not callable(target):
        raise ValueError(f"{spec!r} is not callable")
    return target  # type: ignore[no-any-return]


async def _call(hook: Callable[..., Any], *args: Any) -> Any:
    result = hook(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


def _body_result(result: Any, hook: str) -> bytes | Buffer | None:
    if result is None or isinstance(result, Buffer | bytes):
        return result
    if isinstance(result, bytearray | memoryview):
        return bytes(result)
    if isinstance(result, str):
        return result.encode()
    raise TypeError(f"{hook} returned {type(result).__name__}, not bytes, BUFFER or None")


def _reply_result(result: Any, hook: str) -> LocalReply | None:
    if result is None or isinstance(result, LocalReply):
        return result
    raise TypeError(f"{hook} returned {type(result).__name__}, not a LocalReply or None")


class PythonHttpFilter:
    """The chain's instance protocol (``HttpFilter``) over a user's object; it keeps no
    state per request, so one serves them all. A hook's result is awaited only when it
    is awaitable (a coroutine function's); None, the common answer, returns at once."""

    __slots__ = ("target",)

    def __init__(self, target: Any) -> None:
        self.target = target

    async def on_request_headers(
        self, headers: HeaderMap, end_of_stream: bool
    ) -> LocalReply | None:
        result = self.target.on_request_headers(headers)
        if result is None:
            return None
        if inspect.isawaitable(result):
            result = await result
        return _reply_result(result, "on_request_headers")

    async def on_request_body(self, data: bytes, end_of_stream: bool) -> bytes | Buffer | None:
        result = self.target.on_request_body(data, end_of_stream)
        if result is not None and inspect.isawaitable(result):
            result = await result
        return _body_result(result, "on_request_body")

    async def on_request_trailers(self, trailers: HeaderMap) -> None:
        await _call(self.target.on_request_trailers, trailers)

    async def on_response_headers(
        self, headers: HeaderMap, end_of_stream: bool
    ) -> LocalReply | None:
        result = self.target.on_response_headers(headers)
        if result is None:
            return None
        if inspect.isawaitable(result):
            result = await result
        return _reply_result(result, "on_response_headers")

    async def on_response_body(self, data: bytes, end_of_stream: bool) -> bytes | Buffer | None:
        result = self.target.on_response_body(data, end_of_stream)
        if result is not None and inspect.isawaitable(result):
            result = await result
        return _body_result(result, "on_response_body")

    async def on_response_trailers(self, trailers: HeaderMap) -> None:
        await _call(self.target.on_response_trailers, trailers)

    async def on_log(self, entry: dict[str, Any]) -> None:
        await _call(self.target.on_log, entry)

    def on_done(self) -> None:
        pass


class PythonHttpFilterFactory:
    """A configured Python HTTP filter (the chain's ``HttpFilterFactory``)."""

    __slots__ = ("_instance", "hooks", "name", "target")

    #: a Python filter that raises fails the request (500); never skipped
    fail_open = False

    def __init__(self, name: str, target: Any) -> None:
        self.name = name
        self.target = target
        self.hooks = frozenset(h for h in HOOKS if callable(getattr(target, h, None)))
        self._instance = PythonHttpFilter(target)

    def new_filter(self, entry: object, head: object, client_ip: bytes) -> PythonHttpFilter:
        return self._instance
