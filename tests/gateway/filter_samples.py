"""Python filters the filter tests configure (``tests.gateway.filter_samples:Name``)."""

from __future__ import annotations

from typing import Any

import trio

from gateway.filters.api import HeaderMap, LocalReply
from gateway.filters.chain import BUFFER, Buffer

#: what ``Logged`` saw, in order (one entry per request)
LOGGED: list[dict[str, Any]] = []
#: what ``Tcp`` saw
TCP_EVENTS: list[str] = []


class AddHeader:
    """Sets ``header`` on requests (and ``response_header`` on responses, if given)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.header = config.get("header", "x-hello")
        self.value = config.get("value", "world")
        self.response_header = config.get("response_header")

    def on_request_headers(self, headers: HeaderMap) -> None:
        headers[self.header] = self.value

    def on_response_headers(self, headers: HeaderMap) -> None:
        if self.response_header:
            headers[self.response_header] = self.value


class Order:
    """Appends its ``name`` to the request's ``x-order`` header."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.name = config["name"]

    def on_request_headers(self, headers: HeaderMap) -> None:
        before = headers.get("x-order")
        headers["x-order"] = f"{before},{self.name}" if before else self.name


class Rewrite:
    """``:path`` ``old`` becomes ``new``."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.old, self.new = config["old"], config["new"]

    def on_request_headers(self, headers: HeaderMap) -> None:
        if headers[":path"] == self.old:
            headers[":path"] = self.new


class Deny:
    """Answers requests to ``/deny...`` itself."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.status = config.get("status", 403)

    def on_request_headers(self, headers: HeaderMap) -> LocalReply | None:
        if headers[":path"].startswith("/deny"):
            return LocalReply(self.status, "denied by filter\n", {"x-denied": "yes"})
        return None


class Boom:
    """Raises on a request with ``x-boom``."""

    def __init__(self, config: Any) -> None:
        pass

    def on_request_headers(self, headers: HeaderMap) -> None:
        if "x-boom" in headers:
            raise RuntimeError("boom")


class Shout:
    """Request and response bodies in upper case; the response piece by piece."""

    def __init__(self, config: Any) -> None:
        pass

    def on_request_body(self, data: bytes, end_of_stream: bool) -> bytes:
        return data.upper()

    def on_response_body(self, data: bytes, end_of_stream: bool) -> bytes:
        return data.upper() + (b"!!" if end_of_stream else b"")


class Reverse:
    """Holds the whole request body (``BUFFER``), then sends it reversed."""

    def __init__(self, config: Any) -> None:
        pass

    def on_request_body(self, data: bytes, end_of_stream: bool) -> bytes | Buffer:
        if not end_of_stream:
            return BUFFER
        return data[::-1]


class AsyncTag:
    """Async hooks that really wait (a checkpoint and a sleep) before answering."""

    def __init__(self, config: Any) -> None:
        pass

    async def on_request_headers(self, headers: HeaderMap) -> None:
        await trio.sleep(0.01)
        headers["x-async"] = "request"

    async def on_response_headers(self, headers: HeaderMap) -> None:
        await trio.lowlevel.checkpoint()
        headers["x-async"] = "response"
        headers[":status"] = "203"


class Logged:
    """Keeps what ``on_log`` gets."""

    def __init__(self, config: Any) -> None:
        pass

    async def on_log(self, entry: dict[str, Any]) -> None:
        LOGGED.append(entry)


class Refuses:
    """A factory that refuses its config."""

    def __init__(self, config: Any) -> None:
        raise ValueError("no 'level' given")


class Tcp:
    """A network filter: client bytes upper-cased, upstream bytes wrapped in brackets."""

    def __init__(self, config: Any) -> None:
        pass

    def on_new_connection(self) -> None:
        TCP_EVENTS.append("new")

    def on_downstream_data(self, data: bytes) -> bytes:
        return data.upper()

    async def on_upstream_data(self, data: bytes) -> bytes:
        return b"[" + data + b"]"

    def on_close(self) -> None:
        TCP_EVENTS.append("close")


class NoHooks:
    """A filter with no hook at all (its chain is not even built)."""

    def __init__(self, config: Any) -> None:
        pass


class Masks:
    """Replaces an upstream's response with its own when the upstream is ``b``."""

    def __init__(self, config: Any) -> None:
        pass

    def on_response_headers(self, headers: HeaderMap) -> LocalReply | None:
        if headers.get("x-upstream") == "b":
            return LocalReply(502, "b is hidden\n", [("x-masked", "1")])
        return None


class HoldsResponse:
    """Holds the whole response body (``BUFFER``), then passes it on."""

    def __init__(self, config: Any) -> None:
        pass

    def on_response_body(self, data: bytes, end_of_stream: bool) -> bytes | Buffer:
        return data if end_of_stream else BUFFER


class Trailers:
    """Adds a request trailer."""

    def __init__(self, config: Any) -> None:
        pass

    def on_request_trailers(self, trailers: HeaderMap) -> None:
        trailers["x-checked"] = "yes"
