"""Network filters: user code on the bytes of each TCP connection, both ways.

Theory of operation. ``NetworkFilterChain.build`` (once per published config) holds a
``protocol: tcp`` listener's ``network_filters`` in order; a listener without any has
no chain and its connections pay one truth test. Per connection, ``begin`` makes one
instance of each filter, ``on_new_connection`` runs before the upstream connect, and
each piece read from the client goes through every filter's ``on_downstream_data`` in
order before it is written upstream, each piece from the upstream through
``on_upstream_data`` in reverse order before it goes to the client (as Envoy's read and
write filters). A hook returns the bytes to pass on (``b""``: nothing this time), or
None for the piece unchanged. ``on_close`` runs once when the connection ends.

A hook that raises ends that connection (counted as
``listener.<name>.network_filter.<filter>.error``); other connections go on.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import attrs

if TYPE_CHECKING:
    from gateway.observe.stats import FilterStats, StatsRegistry

__all__ = [
    "NETWORK_HOOKS",
    "ConnectionFilters",
    "NetworkFilter",
    "NetworkFilterChain",
    "NetworkFilterFactory",
    "PythonNetworkFilterFactory",
]

NETWORK_HOOKS = ("on_new_connection", "on_downstream_data", "on_upstream_data", "on_close")


class NetworkFilterFailed(Exception):
    """A network filter's hook raised: the connection ends (never leaves this module's
    callers: the TCP proxy closes the connection on it)."""


class NetworkFilter(Protocol):
    """One filter's instance for one connection."""

    async def on_new_connection(self) -> None: ...

    async def on_downstream_data(self, data: bytes) -> bytes | None: ...

    async def on_upstream_data(self, data: bytes) -> bytes | None: ...

    async def on_close(self) -> None: ...


class NetworkFilterFactory(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def hooks(self) -> frozenset[str]: ...

    def new_filter(self) -> NetworkFilter: ...


@attrs.frozen(eq=False)
class NetworkFilterChain:
    factories: tuple[NetworkFilterFactory, ...]
    stats: tuple[FilterStats, ...]

    @classmethod
    def build(
        cls, listener: str, factories: Sequence[NetworkFilterFactory], registry: StatsRegistry
    ) -> NetworkFilterChain | None:
        kept = tuple(f for f in factories if f.hooks)
        if not kept:
            return None
        stats = tuple(registry.filter(listener, "network_filter", f.name) for f in kept)
        return cls(kept, stats)

    def begin(self) -> ConnectionFilters:
        return ConnectionFilters(self, [f.new_filter() for f in self.factories])


class ConnectionFilters:
    """The filter instances of one connection."""

    __slots__ = ("chain", "closed", "instances")

    def __init__(self, chain: NetworkFilterChain, instances: list[NetworkFilter]) -> None:
        self.chain = chain
        self.instances = instances
        self.closed = False

    async def _run(self, index: int, hook: str, *args: Any) -> Any:
        if hook not in self.chain.factories[index].hooks:
            return None
        try:
            return await getattr(self.instances[index], hook)(*args)
        except Exception as e:
            self.chain.stats[index].error += 1
            name = self.chain.factories[index].name
            raise NetworkFilterFailed(f"network filter {name!r} failed: {e!r}") from e

    async def new_connection(self) -> None:
        for index in range(len(self.instances)):
            await self._run(index, "on_new_connection")

    async def downstream(self, data: bytes) -> bytes:
        """A piece from the client, through every filter in order."""
        for index in range(len(self.instances)):
            result = await self._run(index, "on_downstream_data", data)
            if result is not None:
                data = bytes(result)
        return data

    async def upstream(self, data: bytes) -> bytes:
        """A piece from the upstream, through every filter in reverse order."""
        for index in range(len(self.instances) - 1, -1, -1):
            result = await self._run(index, "on_upstream_data", data)
            if result is not None:
                data = bytes(result)
        return data

    async def close(self) -> None:
        """``on_close`` of each filter, once; a failure is counted, never raised."""
        if self.closed:
            return
        self.closed = True
        for index in range(len(self.instances)):
            try:
                await self._run(index, "on_close")
            except NetworkFilterFailed:
                pass


class FilteredSink:
    """One direction's destination stream, with the filters' hook in front of it."""

    __slots__ = ("hook", "inner")

    def __init__(self, inner: Any, hook: Callable[[bytes], Any]) -> None:
        self.inner = inner
        self.hook = hook

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        out = await self.hook(bytes(data))
        if out:
            await self.inner.send_all(out)

    async def send_eof(self) -> None:
        await self.inner.send_eof()


async def _call(hook: Callable[..., Any], *args: Any) -> Any:
    result = hook(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


class PythonNetworkFilter:
    """``NetworkFilter`` over a user's object (``gateway.filters.python``'s rules)."""

    __slots__ = ("target",)

    def __init__(self, target: Any) -> None:
        self.target = target

    async def on_new_connection(self) -> None:
        await _call(self.target.on_new_connection)

    async def on_downstream_data(self, data: bytes) -> bytes | None:
        return _bytes_or_none(await _call(self.target.on_downstream_data, data))

    async def on_upstream_data(self, data: bytes) -> bytes | None:
        return _bytes_or_none(await _call(self.target.on_upstream_data, data))

    async def on_close(self) -> None:
        await _call(self.target.on_close)


def _bytes_or_none(result: Any) -> bytes | None:
    if result is None or isinstance(result, bytes):
        return result
    if isinstance(result, bytearray | memoryview):
        return bytes(result)
    raise TypeError(f"a network filter's data hook returned {type(result).__name__}")


class PythonNetworkFilterFactory:
    __slots__ = ("_instance", "hooks", "name")

    def __init__(self, name: str, target: Any) -> None:
        self.name = name
        self.hooks = frozenset(h for h in NETWORK_HOOKS if callable(getattr(target, h, None)))
        self._instance = PythonNetworkFilter(target)

    def new_filter(self) -> PythonNetworkFilter:
        return self._instance
