"""The HTTP filter chain of a listener: built when a config is published, run per request.

Theory of operation. ``HttpFilterChain.build`` (the control plane, once per published
config, never per request) turns a listener's ``http_filters`` into an ordered tuple of
``HttpFilterFactory``, each knowing which hooks its filters have, and works out what a
request runs on each route (``_Plan``: the members its ``disabled_filters`` leaves).
The built-in ``faults`` filter (``gateway.faults``) is the chain's last member, right
ahead of the router: the config's ``FaultTable`` (``DataPlane.faults``), which the core
consults after the other filters' request-headers hooks. A listener without filters
has no chain (``DataPlane.chains`` has no entry for it): its requests pay one truth
test for filters, and one ``is None`` test for the faults, as before there were filters.

Per request, ``HttpFilterChain.begin`` makes a ``RequestFilters`` holding an instance
of each filter that has a hook and that the request's route does not disable; a
request that no filter takes gets none (and no coroutine). The order, in the core
(``gateway.proxy.http``):

1. The route is matched from the request as it came (so that its
   ``disabled_filters`` are known), as Envoy's route cache is.
2. The request-headers hooks run in order, over a ``HeaderMap`` whose first fields are
   the pseudo-headers ``:method``, ``:path``, ``:authority`` and ``:scheme`` (as Envoy
   and proxy-wasm show them); what a hook wrote there is put back in the request. A
   hook may answer with a ``LocalReply``: the filters after it, the router and the
   upstream never see the request.
3. If a hook changed ``:path`` or ``:authority``, the route is matched again (Envoy's
   ``clearRouteCache``): the new route's cluster, timeout, retries... apply. The
   filters that ran stay as they were; the new route's ``disabled_filters`` is not
   applied again.
4. The faults filter, last, decides on the final route and cluster (``choose_fault``:
   synchronous, so a request that gets no fault pays no coroutine); a route may
   disable it by the name ``faults`` (``FAULTS``).
5. The request body, when a filter has a body hook, goes through the hooks piece by
   piece as it streams upstream, re-framed chunked (its length may change); a hook
   may return ``BUFFER`` (Envoy's ``StopIterationAndBuffer``): the pieces are held and
   given to it again, whole, with the next one, up to ``filter_buffer_limit_kb``
   (over: 413). Trailers go through the trailers hooks.
6. The response head goes through the response-headers hooks (``:status`` first)
   before any of it goes downstream; a ``LocalReply`` there replaces the upstream's
   response. Its body and trailers as the request's (a held body over the limit:
   500, if no byte of the response went down yet).
7. ``on_log`` hooks run once the request is over (after the access log has it), then
   ``on_done``.

A hook that raises fails the request with a 500 (``FilterError``, flag ``FLT``),
counted as ``listener.<name>.http_filter.<filter>.error`` (and, when the exception has
a ``stat`` attribute naming one of ``wasm_trap``, ``wasm_timeout``, ``wasm_oom``, in
that counter too: how the proxy-wasm host reports its failures); with ``fail_open`` the
filter is skipped instead, for the rest of that request. Either way, other requests
and the gateway go on.

The instance protocol (``HttpFilter``) is what every kind of filter implements: the
Python adapter (``gateway.filters.python``), the proxy-wasm host
(``gateway.filters.wasm``). Every hook is a coroutine: a paused proxy-wasm filter
simply awaits inside its hook.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

import attrs
import trio

from gateway.errors import FilterBodyTooLarge, FilterError, FilterReplied
from gateway.filters.api import Fields, HeaderMap, LocalReply

if TYPE_CHECKING:
    from gateway.http1.events import RequestReceived, ResponseReceived, Trailers
    from gateway.observe.record import RequestRecord
    from gateway.observe.stats import FilterStats, StatsRegistry
    from gateway.routing import RouteEntry

log = logging.getLogger("triogate.filters")

#: requests whose ``on_log`` hooks wait to run, per listener; one more is dropped
LOG_QUEUE: Final = 256

__all__ = [
    "BUFFER",
    "FAULTS",
    "HOOKS",
    "Buffer",
    "FilterLog",
    "HttpFilter",
    "HttpFilterChain",
    "HttpFilterFactory",
    "RequestFilters",
]

#: the name of the built-in faults filter in a chain (a route disables it by this name)
FAULTS: Final = "faults"

#: every hook an ``HttpFilter`` may have
HOOKS: Final = (
    "on_request_headers",
    "on_request_body",
    "on_request_trailers",
    "on_response_headers",
    "on_response_body",
    "on_response_trailers",
    "on_log",
)


#: the ``FilterStats`` counters a hook's exception may name in its ``stat`` attribute
_FAILURE_STATS: Final = frozenset({"wasm_trap", "wasm_timeout", "wasm_oom"})


class Buffer:
    """A body hook's answer: hold this piece, give it back with the next (to the end)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "BUFFER"


#: Envoy's ``StopIterationAndBuffer``, proxy-wasm's ``Action::Pause`` on a body
BUFFER: Final = Buffer()


class HttpFilter(Protocol):
    """One filter's instance for one request: what the chain awaits.

    Only the hooks its factory lists in ``hooks`` are called. Headers hooks edit the
    ``HeaderMap`` in place and return a ``LocalReply`` to answer, or None to go on. Body
    hooks return the bytes to pass on in place of ``data`` (None: ``data`` unchanged),
    ``BUFFER``, or a ``LocalReply`` (the request ends with it: ``FilterReplied``).
    Raising fails the request (or skips the filter: ``fail_open``).
    """

    async def on_request_headers(
        self, headers: HeaderMap, end_of_stream: bool
    ) -> LocalReply | None: ...

    async def on_request_body(
        self, data: bytes, end_of_stream: bool
    ) -> bytes | Buffer | LocalReply | None: ...

    async def on_request_trailers(self, trailers: HeaderMap) -> None: ...

    async def on_response_headers(
        self, headers: HeaderMap, end_of_stream: bool
    ) -> LocalReply | None: ...

    async def on_response_body(
        self, data: bytes, end_of_stream: bool
    ) -> bytes | Buffer | LocalReply | None: ...

    async def on_response_trailers(self, trailers: HeaderMap) -> None: ...

    async def on_log(self, entry: dict[str, Any]) -> None:
        """The request is over: its figures (``log_entry``), after the access log's."""

    def on_done(self) -> None:
        """The request is over (called once, last, even when a hook failed)."""


class HttpFilterFactory(Protocol):
    """A configured filter of a listener: makes its per-request instances."""

    @property
    def name(self) -> str: ...

    @property
    def hooks(self) -> frozenset[str]:
        """The hooks (``HOOKS``) its instances have; no hook: no instance."""

    @property
    def fail_open(self) -> bool:
        """A failing instance is skipped (True) or fails the request with 500 (False)."""

    def new_filter(
        self, entry: RouteEntry | None, head: RequestReceived | None, client_ip: bytes
    ) -> HttpFilter:
        """An instance for one request (a stateless filter may return a shared one):
        its route (None: none matched), its head as it came, the client's address (what
        a proxy-wasm module reads as properties)."""


@attrs.frozen(eq=False)
class _Member:
    """A factory in a chain, with its stats."""

    factory: HttpFilterFactory
    stats: FilterStats


_REQUEST_BODY = frozenset({"on_request_body", "on_request_trailers"})
_RESPONSE = frozenset({"on_response_headers", "on_response_body", "on_response_trailers"})
_RESPONSE_BODY = frozenset({"on_response_body", "on_response_trailers"})


@attrs.frozen(eq=False)
class _Plan:
    """The members a request runs (the chain's, or those a route's ``disabled_filters``
    leaves) and what they take: worked out when the chain is built, not per request."""

    members: tuple[_Member, ...]
    #: the indices of the members with ``on_request_headers``
    request_headers: tuple[int, ...]
    takes_request_body: bool
    takes_response: bool
    takes_response_body: bool
    logs: bool

    @classmethod
    def of(cls, members: tuple[_Member, ...]) -> _Plan | None:
        if not members:
            return None
        hooks = [m.factory.hooks for m in members]
        return cls(
            members,
            tuple(i for i, h in enumerate(hooks) if "on_request_headers" in h),
            any(h & _REQUEST_BODY for h in hooks),
            any(h & _RESPONSE for h in hooks),
            any(h & _RESPONSE_BODY for h in hooks),
            any("on_log" in h for h in hooks),
        )


@attrs.frozen(eq=False)
class HttpFilterChain:
    """A listener's HTTP filters in order (module docstring)."""

    members: tuple[_Member, ...]
    #: ``filter_buffer_limit_kb``, in bytes
    buffer_limit: int
    #: what a request runs: on a route that disables none, and by the
    #: ``disabled_filters`` of the listener's routes (None: all of them disabled)
    plan: _Plan
    plans: dict[tuple[str, ...], _Plan | None]

    @classmethod
    def build(
        cls,
        listener: str,
        factories: Sequence[HttpFilterFactory],
        registry: StatsRegistry,
        buffer_limit: int,
        disabled: Iterable[tuple[str, ...]] = (),
    ) -> HttpFilterChain | None:
        """The chain of ``listener``; None when it would have nothing to do.
        ``disabled``: the ``disabled_filters`` of its routes."""
        members = tuple(
            _Member(factory, registry.filter(listener, "http_filter", factory.name))
            for factory in factories
            if factory.hooks
        )
        if not members:
            return None
        plans = {
            names: _Plan.of(tuple(m for m in members if m.factory.name not in names))
            for names in disabled
        }
        plan = _Plan.of(members)
        assert plan is not None
        return cls(members, buffer_limit, plan, plans)

    def begin(
        self,
        entry: RouteEntry | None,
        head: RequestReceived | None = None,
        client_ip: bytes = b"",
    ) -> RequestFilters | None:
        """The filters of one request on ``entry`` (None: no route matched yet); None
        when its route disables every one. ``head`` and ``client_ip`` go to each
        ``new_filter``."""
        plan: _Plan | None = self.plan
        if entry is not None:
            disabled = entry.route.disabled_filters
            if disabled:
                plan = self.plans.get(disabled, plan)
        if plan is None:
            return None
        return RequestFilters(
            plan, [m.factory.new_filter(entry, head, client_ip) for m in plan.members], self
        )


class RequestFilters:
    """The filter instances of one request and where each stands (module docstring)."""

    __slots__ = (
        "chain",
        "failed",
        "held_request",
        "held_response",
        "instances",
        "members",
        "plan",
        "rerouted",
        "takes_request_body",
        "takes_response",
        "takes_response_body",
    )

    def __init__(self, plan: _Plan, instances: list[HttpFilter], chain: HttpFilterChain) -> None:
        self.chain = chain
        self.plan = plan
        self.members = plan.members
        self.instances = instances
        #: per member: skipped for the rest of the request (``fail_open`` after a failure)
        self.failed = [False] * len(instances)
        #: whether the request's body goes through hooks (re-framed chunked)
        self.takes_request_body = plan.takes_request_body
        #: whether the response goes through hooks before any of it goes down
        self.takes_response = plan.takes_response
        #: whether the response body goes through hooks (re-framed)
        self.takes_response_body = plan.takes_response_body
        #: whether a request-headers hook changed ``:path`` or ``:authority``
        self.rerouted = False
        #: per member, the body pieces it holds (``BUFFER``), by direction
        self.held_request: list[list[bytes]] | None = None
        self.held_response: list[list[bytes]] | None = None

    def _failed(self, index: int, error: Exception) -> None:
        """A hook of member ``index`` raised: counted; skipped (fail_open) or raised."""
        if isinstance(error, FilterReplied):
            raise error
        member = self.members[index]
        stats = member.stats
        stats.error += 1
        # a failure may name its own counter too (the proxy-wasm host's ``wasm_trap``,
        # ``wasm_timeout``, ``wasm_oom``: ``FilterStats`` fields)
        kind = getattr(error, "stat", None)
        if isinstance(kind, str) and kind in _FAILURE_STATS:
            setattr(stats, kind, getattr(stats, kind) + 1)
        name = member.factory.name
        log.warning("http filter %r failed: %r", name, error)
        if member.factory.fail_open:
            self.failed[index] = True
            return
        raise FilterError(f"filter {name!r} failed", filter_name=name) from error

    # -- request --------------------------------------------------------------------------

    async def request_headers(self, head: RequestReceived, scheme: bytes) -> LocalReply | None:
        """The request-headers hooks over ``head`` (edited in place); a local reply, or None."""
        fields: Fields = [
            (b":method", head.method),
            (b":path", head.target),
            (b":authority", head.host),
            (b":scheme", scheme),
        ]
        fields += head.headers
        headers = HeaderMap(fields)
        end = head.framing == 0  # NO_BODY
        reply: LocalReply | None = None
        instances, failed = self.instances, self.failed
        for index in self.plan.request_headers:
            if failed[index]:
                continue
            try:
                reply = await instances[index].on_request_headers(headers, end)
            except Exception as e:
                self._failed(index, e)
                continue
            if reply is not None:
                break
        rest: Fields = []
        method, target, host = head.method, head.target, head.host
        for pair in fields:
            name = pair[0]
            if name[:1] != b":":
                rest.append(pair)
            elif name == b":path":
                target = pair[1]
            elif name == b":authority":
                host = pair[1]
            elif name == b":method":
                method = pair[1]
        head.headers = rest
        head.method = method
        if target != head.target or host != head.host:
            self.rerouted = True
            head.target = target
            if host != head.host:
                head.host = host
                HeaderMap(rest).set_bytes(b"host", host)
        return reply

    async def request_body(self, data: bytes, end_of_stream: bool) -> bytes:
        """A piece of the request body through the body hooks; what goes upstream."""
        return await self._body(data, end_of_stream, "on_request_body", 413)

    async def request_trailers(self, trailers: Trailers) -> Trailers:
        return await self._trailers(trailers, "on_request_trailers")

    # -- response -------------------------------------------------------------------------

    async def response_headers(self, resp: ResponseReceived) -> LocalReply | None:
        """The response-headers hooks, last filter first (as Envoy's encoders run)."""
        fields = [(b":status", b"%d" % resp.status), *resp.headers]
        headers = HeaderMap(fields)
        end = resp.framing == 0  # NO_BODY
        reply: LocalReply | None = None
        for index in range(len(self.instances) - 1, -1, -1):
            if self.failed[index] or "on_response_headers" not in self.members[index].factory.hooks:
                continue
            try:
                reply = await self.instances[index].on_response_headers(headers, end)
            except Exception as e:
                self._failed(index, e)
                continue
            if reply is not None:
                break
        status = resp.status
        for name, value in fields:
            if name == b":status":
                status = int(value) if value.isdigit() and 200 <= int(value) <= 599 else status
        resp.status = status
        resp.headers = [(n, v) for n, v in fields if n[:1] != b":"]
        return reply

    async def response_body(self, data: bytes, end_of_stream: bool) -> bytes:
        return await self._body(data, end_of_stream, "on_response_body", 500, reverse=True)

    async def response_trailers(self, trailers: Trailers) -> Trailers:
        return await self._trailers(trailers, "on_response_trailers", reverse=True)

    # -- both -----------------------------------------------------------------------------

    async def _body(
        self, data: bytes, end: bool, hook: str, over_status: int, *, reverse: bool = False
    ) -> bytes:
        """``data`` through each filter's ``hook`` in order; ``BUFFER`` holds it in that
        filter's place (``_held``) until the end or the limit."""
        held = self._held(hook)
        order = range(len(self.instances) - 1, -1, -1) if reverse else range(len(self.instances))
        for index in order:
            if self.failed[index] or hook not in self.members[index].factory.hooks:
                continue
            pending = held[index]
            if pending:
                data = b"".join(pending) + data
                pending.clear()
            try:
                result = await getattr(self.instances[index], hook)(data, end)
            except Exception as e:
                self._failed(index, e)
                continue
            if result is BUFFER:
                if end:
                    result = None  # nothing after the end: what it held goes on
                else:
                    if len(data) > self.chain.buffer_limit:
                        name = self.members[index].factory.name
                        raise FilterBodyTooLarge(
                            f"a body held for filter {name!r} is over filter_buffer_limit_kb",
                            status=over_status,
                            filter_name=name,
                        )
                    pending.append(data)
                    return b""
            if result is not None:
                if isinstance(result, LocalReply):
                    raise FilterReplied(result, filter_name=self.members[index].factory.name)
                data = bytes(result)
        return data

    def _held(self, hook: str) -> list[list[bytes]]:
        """The pieces each filter holds in ``hook``'s direction (made on first use)."""
        if hook == "on_request_body":
            if self.held_request is None:
                self.held_request = [[] for _ in self.instances]
            return self.held_request
        if self.held_response is None:
            self.held_response = [[] for _ in self.instances]
        return self.held_response

    async def _trailers(self, trailers: Trailers, hook: str, *, reverse: bool = False) -> Trailers:
        fields = list(trailers)
        headers = HeaderMap(fields)
        order = range(len(self.instances) - 1, -1, -1) if reverse else range(len(self.instances))
        for index in order:
            if self.failed[index] or hook not in self.members[index].factory.hooks:
                continue
            try:
                await getattr(self.instances[index], hook)(headers)
            except Exception as e:
                self._failed(index, e)
        return tuple(fields)

    # -- the end --------------------------------------------------------------------------

    async def log(self, entry: dict[str, Any]) -> None:
        """The ``on_log`` hooks, then every instance's ``on_done``; never raises."""
        for index, instance in enumerate(self.instances):
            if "on_log" in self.members[index].factory.hooks and not self.failed[index]:
                try:
                    await instance.on_log(entry)
                except Exception as e:
                    self.members[index].stats.error += 1
                    log.warning("http filter %r failed in on_log: %r", self.members[index], e)
        self.done()

    def done(self) -> None:
        for index, instance in enumerate(self.instances):
            try:
                instance.on_done()
            except Exception:
                self.members[index].stats.error += 1


def log_entry(record: RequestRecord) -> dict[str, Any]:
    """A request's figures as plain values, taken when it ends (the record is reused)."""
    head = record.head
    return {
        "method": head.method.decode("latin-1"),
        "path": head.target.decode("latin-1"),
        "authority": head.host.decode("latin-1"),
        "status": record.status,
        "flags": record.flags,
        "bytes_in": record.bytes_in,
        "bytes_out": record.bytes_out,
        "duration_ms": record.duration_ms,
        "request_id": record.request_id.decode("latin-1"),
    }


class FilterLog:
    """Runs the ``on_log`` hooks of ended requests in the listener's task (``run``), so
    that a request never waits for them; over ``LOG_QUEUE`` waiting, a request's hooks
    are dropped (counted as ``log_dropped`` of each of its filters), its ``on_done`` run."""

    def __init__(self) -> None:
        self._tx, self._rx = trio.open_memory_channel[tuple[RequestFilters, dict[str, Any]]](
            LOG_QUEUE
        )

    def offer(self, filters: RequestFilters, record: RequestRecord) -> None:
        """The request of ``filters`` ended as ``record`` says (never blocks)."""
        if not filters.plan.logs:
            filters.done()
            return
        try:
            self._tx.send_nowait((filters, log_entry(record)))
        except trio.WouldBlock:
            for member in filters.members:
                member.stats.log_dropped += 1
            filters.done()

    async def run(self) -> None:
        """Run the hooks offered, in order, until cancelled."""
        async for filters, entry in self._rx:
            await filters.log(entry)
