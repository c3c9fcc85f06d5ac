"""The chain's rules on their own (no sockets): fail_open, the buffer limit by direction,
pseudo-headers put back, responses hooks in reverse order."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import FilterBodyTooLarge, FilterError
from gateway.filters.api import HeaderMap, LocalReply
from gateway.filters.chain import BUFFER, HOOKS, HttpFilterChain
from gateway.http1.events import LENGTH, RequestReceived, ResponseReceived
from gateway.observe.stats import StatsRegistry


class Factory:
    """A filter factory over an object with hooks (as the wasm adapter will be one)."""

    def __init__(self, name: str, target: Any, *, fail_open: bool = False) -> None:
        self.name = name
        self.target = target
        self.fail_open = fail_open
        self.hooks = frozenset(h for h in HOOKS if hasattr(target, h))

    def new_filter(self, entry: Any, head: Any, client_ip: bytes) -> Any:
        return self.target


class Trapped(Exception):
    """How the proxy-wasm host will report a trap: an exception naming its counter."""

    stat = "wasm_trap"


class Raises:
    async def on_request_headers(self, headers: HeaderMap, end: bool) -> None:
        raise Trapped("unreachable executed")


class Tags:
    def __init__(self, name: str, seen: list[str]) -> None:
        self.name = name
        self.seen = seen

    async def on_request_headers(self, headers: HeaderMap, end: bool) -> None:
        headers.add("x-tag", self.name)

    async def on_response_headers(self, headers: HeaderMap, end: bool) -> LocalReply | None:
        self.seen.append(self.name)
        return None

    async def on_response_body(self, data: bytes, end: bool) -> Any:
        return data if end else BUFFER


def head(target: bytes = b"/a") -> RequestReceived:
    return RequestReceived(
        method=b"GET",
        target=target,
        version=b"1.1",
        headers=[(b"host", b"h")],
        keep_alive=True,
        framing=LENGTH,
        content_length=3,
        host=b"h",
        head_size=0,
    )


def chain(*factories: Any, limit: int = 10) -> HttpFilterChain:
    built = HttpFilterChain.build("web", factories, StatsRegistry(), limit)
    assert built is not None
    return built


async def test_a_failing_filter_with_fail_open_is_skipped_and_counted() -> None:
    seen: list[str] = []
    registry = StatsRegistry()
    factories = [Factory("trap", Raises(), fail_open=True), Factory("tag", Tags("tag", seen))]
    built = HttpFilterChain.build("web", factories, registry, 10)
    assert built is not None
    filters = built.begin(None)
    assert filters is not None
    request = head()
    assert await filters.request_headers(request, b"http") is None
    assert request.headers == [(b"host", b"h"), (b"x-tag", b"tag")]
    assert registry.filters["web", "http_filter", "trap"].error == 1
    assert registry.filters["web", "http_filter", "trap"].wasm_trap == 1
    closed = chain(Factory("trap", Raises())).begin(None)
    assert closed is not None
    with pytest.raises(FilterError):
        await closed.request_headers(head(), b"http")


async def test_response_hooks_run_last_filter_first_and_a_held_body_has_a_limit() -> None:
    seen: list[str] = []
    filters = chain(Factory("one", Tags("one", seen)), Factory("two", Tags("two", seen))).begin(
        None
    )
    assert filters is not None
    response = ResponseReceived(200, b"OK", [], True, LENGTH, 20)
    assert await filters.response_headers(response) is None
    assert seen == ["two", "one"]
    assert await filters.response_body(b"12345", False) == b""
    with pytest.raises(FilterBodyTooLarge) as caught:
        await filters.response_body(b"678901", False)
    assert caught.value.status_hint == 500


async def test_a_changed_path_or_authority_is_put_back_and_marks_a_reroute() -> None:
    class Moves:
        async def on_request_headers(self, headers: HeaderMap, end: bool) -> None:
            headers[":authority"] = "other"
            headers[":path"] = "/b"

    filters = chain(Factory("moves", Moves())).begin(None)
    assert filters is not None
    request = head()
    await filters.request_headers(request, b"http")
    assert (request.target, request.host, filters.rerouted) == (b"/b", b"other", True)
    assert request.headers == [(b"host", b"other")]
