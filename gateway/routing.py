"""The route table a listener's connections read: compiled once per config version.

Matching, in order: the virtual host by the request's Host (exact domain, then the
longest ``*.suffix`` wildcard, then ``prefix.*``, then ``*``), then within it the route
with an exact ``path`` equal to the request path, then the route with the longest
matching ``prefix``. Longest-prefix (rather than first-listed) makes the order of routes
in a file irrelevant. The query string is not part of the match.

A table is immutable; the control plane builds a new one for every config version and
swaps it in, so a request keeps the table it started with.
"""

from __future__ import annotations

import random

import attrs

from gateway.config import HashPolicy, Listener, Route, VirtualHost
from gateway.http1.events import Headers
from policies.balancing import hash_key
from policies.retry import RetryRules
from policies.split import WeightedSplit


@attrs.frozen
class RouteEntry:
    """A compiled route: where its requests go, and when they are tried again."""

    route: Route
    #: the target clusters (one, or a weighted split)
    split: WeightedSplit
    retry: RetryRules

    @classmethod
    def compile(cls, route: Route) -> RouteEntry:
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
        )

    def hash_key(self, headers: Headers, client_ip: bytes) -> int | None:
        """The consistent-hash key of a request under the route's hash policies.

        As in Envoy, every policy that finds its value contributes (rotate and xor, in
        order); None when none does, and the balancer then picks at random.
        """
        key: int | None = None
        for policy in self.route.hash_policy:
            value = _hash_input(policy, headers, client_ip)
            if value is None:
                continue
            h = hash_key(value)
            key = h if key is None else (((key << 1) | (key >> 63)) & _MASK64) ^ h
        return key

    def pick_cluster(self, rng: random.Random) -> str:
        """The cluster for one request: weighted by the split, or the only one."""
        return self.split.pick(rng)


_MASK64 = (1 << 64) - 1


def _hash_input(policy: HashPolicy, headers: Headers, client_ip: bytes) -> bytes | None:
    if policy.source_ip:
        return client_ip
    if policy.header is not None:
        wanted = policy.header.lower().encode()
        for name, value in headers:
            if name.lower() == wanted:
                return value
        return None
    if policy.cookie is not None:
        prefix = policy.cookie.encode() + b"="
        for name, value in headers:
            if name.lower() == b"cookie":
                for part in value.split(b";"):
                    part = part.strip()
                    if part.startswith(prefix):
                        return part[len(prefix) :]
    return None


class _HostRoutes:
    __slots__ = ("exact", "prefixes")

    def __init__(self, routes: tuple[Route, ...]) -> None:
        self.exact: dict[bytes, RouteEntry] = {}
        prefixes: list[tuple[bytes, RouteEntry]] = []
        for route in routes:
            entry = RouteEntry.compile(route)
            if route.match.path is not None:
                self.exact.setdefault(route.match.path.encode(), entry)
            elif route.match.prefix is not None:
                prefixes.append((route.match.prefix.encode(), entry))
        # longest first; on equal prefixes the one listed first wins (stable sort)
        prefixes.sort(key=lambda p: -len(p[0]))
        self.prefixes = tuple(prefixes)

    def match(self, path: bytes) -> RouteEntry | None:
        entry = self.exact.get(path)
        if entry is not None:
            return entry
        for prefix, entry in self.prefixes:
            if path.startswith(prefix):
                return entry
        return None


class RouteTable:
    """Routes of one listener, ready for ``match(host, target)``."""

    __slots__ = ("_by_domain", "_default", "_prefix_wild", "_suffix_wild")

    def __init__(self, listener: Listener) -> None:
        vhosts = listener.virtual_hosts or (
            (VirtualHost(name="default", domains=("*",), routes=listener.routes),)
            if listener.routes
            else ()
        )
        self._by_domain: dict[bytes, _HostRoutes] = {}
        suffix: list[tuple[bytes, _HostRoutes]] = []
        prefix: list[tuple[bytes, _HostRoutes]] = []
        self._default: _HostRoutes | None = None
        for vh in vhosts:
            compiled = _HostRoutes(vh.routes)
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

    def _host_routes(self, host: bytes) -> _HostRoutes | None:
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

    def match(self, host: bytes, target: bytes) -> RouteEntry | None:
        """The route for a request, or None (the caller answers 404)."""
        routes = self._host_routes(host)
        if routes is None:
            return None
        q = target.find(b"?")
        return routes.match(target if q < 0 else target[:q])
