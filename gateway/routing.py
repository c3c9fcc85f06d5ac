"""The route table a listener's connections read: compiled once per config version.

Matching, in order: the virtual host by the request's Host (exact domain, then the
longest ``*.suffix`` wildcard, then ``prefix.*``, then ``*``), then within it the first
route, in the order listed, whose match accepts the request: its path rule (``path``,
``prefix`` or ``regex`` on the path without the query string) and its conditions
(``methods``, ``headers``, ``query``). ``policies.matching.FirstMatchIndex`` finds that
route through dicts of the exact paths and prefixes, so the cost does not grow with the
number of routes; regexes are compiled here, once per version.

A table is immutable; the control plane builds a new one for every config version and
swaps it in, so a request keeps the table it started with.

A route a staged rollout watches (``RouteTable(..., watch=...)``) carries the stats its
requests are counted in per cluster (``RouteEntry.watch``, from the registry, so they
outlive the versions the rollout's steps make); every other route carries None, and
the data path's cost for it is one attribute test.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping

import attrs

from gateway.config import HeaderMatch, Listener, Route, RouteMatch, SplitKey, VirtualHost
from gateway.http1.events import Headers, RequestReceived
from gateway.observe.stats import RouteClusterStats, StatsRegistry
from policies.balancing import hash_key
from policies.matching import (
    Conditions,
    FirstMatchIndex,
    HeaderCondition,
    PathRule,
    QueryCondition,
)
from policies.retry import RetryRules
from policies.split import WeightedSplit, key_point


@attrs.frozen
class RouteEntry:
    """A compiled route: where its requests go, and when they are tried again."""

    route: Route
    #: the target clusters (one, or a weighted split)
    split: WeightedSplit
    retry: RetryRules
    #: a sticky split's key; None: the split draws at random (also for one cluster)
    split_key: SplitKey | None = None
    #: per cluster, the stats its requests end in when a rollout watches the route;
    #: None: no rollout does
    watch: Mapping[str, RouteClusterStats] | None = None

    @classmethod
    def compile(cls, route: Route, watch: RouteWatch | None = None) -> RouteEntry:
        r = route.retry
        return cls(
            route,
            WeightedSplit.single(route.cluster)
            if route.cluster is not None
            else WeightedSplit.of((wc.cluster, wc.weight) for wc in route.split),
            RetryRules.compile(
                r.attempts,
                r.retry_on,
                r.retriable_status_codes,
                per_try_timeout=r.per_try_timeout,
                backoff=r.backoff,
                buffer_limit=r.per_request_buffer_limit_bytes,
            ),
            route.split_key if len(route.split) > 1 else None,
            None if watch is None else watch(route),
        )

    def hash_key(self, headers: Headers, client_ip: bytes) -> int | None:
        """The consistent-hash key of a request under the route's hash policies.

        As in Envoy, every policy that finds its value contributes (rotate and xor, in
        order); None when none does, and the balancer then picks at random.
        """
        key: int | None = None
        for policy in self.route.hash_policy:
            value = (
                client_ip
                if policy.source_ip
                else request_value(headers, header=policy.header, cookie=policy.cookie)
            )
            if value is None:
                continue
            h = hash_key(value)
            key = h if key is None else (((key << 1) | (key >> 63)) & _MASK64) ^ h
        return key

    def sticky_cluster(self, headers: Headers, rng: random.Random) -> str:
        """The cluster of a sticky split: the key's own, or at random without a key."""
        key = self.split_key
        assert key is not None  # the caller tests split_key: one test for every route
        value = request_value(headers, header=key.header, cookie=key.cookie)
        if value is None:
            return self.split.pick(rng)
        return self.split.pick_at(key_point(value))


_MASK64 = (1 << 64) - 1


def request_value(headers: Headers, *, header: str | None, cookie: str | None) -> bytes | None:
    """The value of header ``header`` (its first) or of cookie ``cookie``; None if absent."""
    if header is not None:
        wanted = header.lower().encode()
        for name, value in headers:
            if name.lower() == wanted:
                return value
        return None
    if cookie is not None:
        prefix = cookie.encode() + b"="
        for name, value in headers:
            if name.lower() == b"cookie":
                for part in value.split(b";"):
                    part = part.strip()
                    if part.startswith(prefix):
                        return part[len(prefix) :]
    return None


def _rule(match: RouteMatch) -> PathRule:
    if match.path is not None:
        return PathRule("path", match.path)
    if match.prefix is not None:
        return PathRule("prefix", match.prefix)
    assert match.regex is not None  # validation: exactly one of the three
    return PathRule("regex", match.regex)


def header_condition(h: HeaderMatch) -> HeaderCondition:
    """A header condition of the config (a route's, a fault's), compiled."""
    if h.exact is not None:
        return HeaderCondition.of(h.name, "exact", h.exact, invert=h.invert)
    if h.prefix is not None:
        return HeaderCondition.of(h.name, "prefix", h.prefix, invert=h.invert)
    if h.regex is not None:
        return HeaderCondition.of(h.name, "regex", h.regex, invert=h.invert)
    return HeaderCondition.of(h.name, "present" if h.present else "absent", invert=h.invert)


def _conditions(match: RouteMatch) -> Conditions | None:
    """The match's conditions beyond the path; None when it has none (the common case)."""
    if not (match.methods or match.headers or match.query):
        return None
    headers = [header_condition(h) for h in match.headers]
    query = []
    for q in match.query:
        if q.exact is not None:
            query.append(QueryCondition.of(q.name, "exact", q.exact))
        elif q.regex is not None:
            query.append(QueryCondition.of(q.name, "regex", q.regex))
        else:
            query.append(QueryCondition.of(q.name, "present"))
    return Conditions(
        frozenset(m.encode("ascii") for m in match.methods), tuple(headers), tuple(query)
    )


def _compile_routes(
    routes: tuple[Route, ...], watch: RouteWatch | None
) -> FirstMatchIndex[RouteEntry]:
    return FirstMatchIndex(
        (_rule(r.match), _conditions(r.match), RouteEntry.compile(r, watch)) for r in routes
    )


#: a route's stats per cluster when a rollout watches it, else None
RouteWatch = Callable[[Route], "Mapping[str, RouteClusterStats] | None"]


def watch_routes(listener: str, routes: frozenset[str], stats: StatsRegistry) -> RouteWatch:
    """The ``watch`` of a listener whose routes named in ``routes`` a rollout watches."""

    def watch(route: Route) -> Mapping[str, RouteClusterStats] | None:
        if route.name is None or route.name not in routes:
            return None
        clusters = (
            (route.cluster,) if route.cluster is not None else [wc.cluster for wc in route.split]
        )
        return {c: stats.route_cluster(listener, route.name, c) for c in clusters}

    return watch


class RouteTable:
    """Routes of one listener, ready for ``match(host, target)``."""

    __slots__ = ("_by_domain", "_default", "_prefix_wild", "_suffix_wild")

    def __init__(self, listener: Listener, watch: RouteWatch | None = None) -> None:
        vhosts = listener.virtual_hosts or (
            (VirtualHost(name="default", domains=("*",), routes=listener.routes),)
            if listener.routes
            else ()
        )
        self._by_domain: dict[bytes, FirstMatchIndex[RouteEntry]] = {}
        suffix: list[tuple[bytes, FirstMatchIndex[RouteEntry]]] = []
        prefix: list[tuple[bytes, FirstMatchIndex[RouteEntry]]] = []
        self._default: FirstMatchIndex[RouteEntry] | None = None
        for vh in vhosts:
            compiled = _compile_routes(vh.routes, watch)
            for domain in vh.domains:
                d = domain.lower().encode()
                if d == b"*":
                    self._default = compiled
                elif d.startswith(b"*"):
                    suffix.append((d[1:], compiled))
                elif d.endswith(b"*"):
                    prefix.append((d[:-1], compiled))
                else:
                    self._by_domain[d] = compiled
        suffix.sort(key=lambda p: -len(p[0]))
        prefix.sort(key=lambda p: -len(p[0]))
        self._suffix_wild = tuple(suffix)
        self._prefix_wild = tuple(prefix)

    def _host_routes(self, host: bytes) -> FirstMatchIndex[RouteEntry] | None:
        if host.startswith(b"["):
            host = host[: host.find(b"]") + 1]
        else:
            host = host.partition(b":")[0]
        host = host.lower()
        found = self._by_domain.get(host)
        if found is not None:
            return found
        for suffix, routes in self._suffix_wild:
            if host.endswith(suffix):
                return routes
        for prefix, routes in self._prefix_wild:
            if host.startswith(prefix):
                return routes
        return self._default

    def match(self, head: RequestReceived) -> RouteEntry | None:
        """The route for a request, or None (the caller answers 404)."""
        routes = self._host_routes(head.host)
        if routes is None:
            return None
        target = head.target
        q = target.find(b"?")
        return routes.match(target if q < 0 else target[:q], head)
