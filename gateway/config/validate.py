"""Whole-config checks: ranges, uniqueness and references between listeners and clusters.

``check(config)`` returns every issue found (an empty list means the config may run).
Everything that can be wrong with a config is caught here or in ``structure.py``, before
anything starts or any change reaches the data plane.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
import ssl
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import attrs
from cryptography import x509

from gateway.config.model import (
    Cluster,
    Config,
    Discovery,
    Endpoint,
    Fault,
    HeaderMatch,
    Http2Settings,
    Listener,
    ListenerTls,
    Rollout,
    Route,
    RouteMatch,
    StoreConfig,
    UpstreamTls,
    WeightedCluster,
)
from gateway.errors import ConfigError, ConfigIssue
from policies.datagram_toxics import DATAGRAM_TOXIC_TYPES
from policies.matching import pattern_problem
from policies.toxics import parse_source


def _cluster_names(config: Config) -> list[str]:
    return [c.name for c in config.clusters]


def _unknown_cluster(name: str, known: Iterable[str]) -> str:
    """What an issue says of a reference to a cluster that is not defined: the closest
    name, and the clusters there are."""
    names = sorted(known)
    close = difflib.get_close_matches(name, names, n=1)
    guess = f"did you mean {close[0]!r}? " if close else ""
    shown = ", ".join(names[:10]) + (f", ... ({len(names)} in all)" if len(names) > 10 else "")
    there = f"the clusters: {shown}" if names else "no cluster is defined"
    return f"unknown cluster {name!r} ({guess}{there})"


def _dupes(names: Iterable[str]) -> set[str]:
    return {n for n, k in Counter(names).items() if k > 1}


def _positive(issues: list[ConfigIssue], path: str, value: float, *, allow_zero: bool) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        issues.append(ConfigIssue(path, "must be positive" if not allow_zero else "must be >= 0"))


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token: a header name
_METHOD = re.compile(r"[A-Z][A-Z_-]*")


def _check_pattern(pattern: str | None, path: str, issues: list[ConfigIssue]) -> None:
    if pattern is not None:
        problem = pattern_problem(pattern)
        if problem is not None:
            issues.append(ConfigIssue(path, problem))


def _check_match(m: RouteMatch, path: str, issues: list[ConfigIssue]) -> None:
    if sum(value is not None for value in (m.prefix, m.path, m.regex)) != 1:
        issues.append(ConfigIssue(path, "needs exactly one of 'prefix', 'path' or 'regex'"))
    for key, value in (("prefix", m.prefix), ("path", m.path)):
        if value is not None and not value.startswith("/"):
            issues.append(ConfigIssue(f"{path}.{key}", "must start with '/'"))
    _check_pattern(m.regex, f"{path}.regex", issues)
    for j, method in enumerate(m.methods):
        if not _METHOD.fullmatch(method):
            issues.append(
                ConfigIssue(f"{path}.methods[{j}]", "must be a method name in upper case")
            )
    for j, header in enumerate(m.headers):
        _check_header(header, f"{path}.headers[{j}]", issues)
    for j, param in enumerate(m.query):
        qpath = f"{path}.query[{j}]"
        if not param.name:
            issues.append(ConfigIssue(f"{qpath}.name", "must not be empty"))
        if (param.exact is not None) + (param.regex is not None) + param.present != 1:
            issues.append(ConfigIssue(qpath, "needs exactly one of exact, regex, present: true"))
        _check_pattern(param.regex, f"{qpath}.regex", issues)


def _check_header(header: HeaderMatch, path: str, issues: list[ConfigIssue]) -> None:
    """A header condition, a route's or a fault's."""
    if not _TOKEN.fullmatch(header.name):
        issues.append(ConfigIssue(f"{path}.name", "must be a header name"))
    given = (header.exact, header.prefix, header.regex)
    if sum(v is not None for v in given) + header.present + header.absent != 1:
        issues.append(
            ConfigIssue(
                path, "needs exactly one of exact, prefix, regex, present: true, absent: true"
            )
        )
    _check_pattern(header.regex, f"{path}.regex", issues)


def _check_split(
    split: tuple[WeightedCluster, ...], path: str, clusters: set[str], issues: list[ConfigIssue]
) -> None:
    """A route's or an L4 listener's weighted split (none: nothing to check)."""
    if not split:
        return
    total = 0
    for j, wc in enumerate(split):
        if wc.cluster not in clusters:
            issues.append(
                ConfigIssue(f"{path}.split[{j}].cluster", _unknown_cluster(wc.cluster, clusters))
            )
        if wc.weight < 0:
            issues.append(ConfigIssue(f"{path}.split[{j}].weight", "must be >= 0"))
        total += max(wc.weight, 0)
    if total <= 0:
        issues.append(ConfigIssue(f"{path}.split", "weights must have a positive sum"))
    for name in _dupes(wc.cluster for wc in split):
        issues.append(ConfigIssue(f"{path}.split", f"cluster {name!r} listed twice"))


def _check_route(route: Route, path: str, clusters: set[str], issues: list[ConfigIssue]) -> None:
    _check_match(route.match, f"{path}.match", issues)
    if (route.cluster is None) == (not route.split):
        issues.append(ConfigIssue(path, "needs exactly one of 'cluster' or 'split'"))
    if route.cluster is not None and route.cluster not in clusters:
        issues.append(ConfigIssue(f"{path}.cluster", _unknown_cluster(route.cluster, clusters)))
    _check_split(route.split, path, clusters, issues)
    _positive(issues, f"{path}.timeout", route.timeout, allow_zero=True)
    r = route.retry
    if not 0 <= r.attempts <= 10:
        issues.append(ConfigIssue(f"{path}.retry.attempts", "must be 0-10"))
    _positive(issues, f"{path}.retry.per_try_timeout", r.per_try_timeout, allow_zero=True)
    if r.per_request_buffer_limit_bytes < 0:
        issues.append(ConfigIssue(f"{path}.retry.per_request_buffer_limit_bytes", "must be >= 0"))
    for j, code in enumerate(r.retriable_status_codes):
        if not 100 <= code <= 599:
            issues.append(
                ConfigIssue(f"{path}.retry.retriable_status_codes[{j}]", "must be 100-599")
            )
    mirror = route.mirror
    if mirror is not None:
        if mirror.cluster not in clusters:
            issues.append(
                ConfigIssue(f"{path}.mirror.cluster", _unknown_cluster(mirror.cluster, clusters))
            )
        if not 0 <= mirror.percent <= 100:
            issues.append(ConfigIssue(f"{path}.mirror.percent", "must be 0-100"))
    key = route.split_key
    if key is not None:
        if (key.header is None) == (key.cookie is None):
            issues.append(ConfigIssue(f"{path}.split_key", "needs exactly one of header, cookie"))
        if not route.split:
            issues.append(ConfigIssue(f"{path}.split_key", "applies only to a weighted 'split'"))
    for j, hp in enumerate(route.hash_policy):
        if sum((hp.header is not None, hp.cookie is not None, hp.source_ip)) != 1:
            issues.append(
                ConfigIssue(
                    f"{path}.hash_policy[{j}]", "needs exactly one of header, cookie, source_ip"
                )
            )


def _check_reachable(routes: tuple[Route, ...], path: str, issues: list[ConfigIssue]) -> None:
    """Refuse a route that an earlier catch-all takes every request of (first match wins).

    Only the decidable cases: an earlier route without conditions whose ``prefix`` starts
    the later one's ``prefix`` or ``path``, or whose ``path`` equals its ``path``. A
    config written for longest-prefix matching (``/`` above ``/api``) fails here instead
    of quietly sending everything to the first route.
    """
    takes_all: dict[str, int] = {}  # an unconditional route's prefix -> its position
    takes_path: dict[str, int] = {}  # an unconditional route's exact path -> its position
    lengths: set[int] = set()
    for i, route in enumerate(routes):
        m = route.match
        value = m.prefix if m.prefix is not None else m.path
        if value is None:
            continue
        earlier = takes_path.get(value) if m.path is not None else None
        for n in sorted(lengths):
            if earlier is None and n <= len(value):
                earlier = takes_all.get(value[:n])
        if earlier is not None:
            e = routes[earlier].match
            what = f"prefix {e.prefix!r}" if e.prefix is not None else f"path {e.path!r}"
            issues.append(
                ConfigIssue(
                    f"{path}[{i}].match",
                    f"is never reached: {path}[{earlier}] ({what}) above it takes every "
                    "request it would (the first match wins: list the narrower route first)",
                )
            )
            continue
        if m.methods or m.headers or m.query:
            continue
        if m.prefix is not None:
            takes_all.setdefault(m.prefix, i)
            lengths.add(len(m.prefix))
        else:
            takes_path.setdefault(value, i)


def _check_listener(
    lst: Listener, path: str, clusters: set[str], issues: list[ConfigIssue]
) -> None:
    if not lst.name:
        issues.append(ConfigIssue(f"{path}.name", "must not be empty"))
    if lst.protocol in ("tcp", "udp"):
        if (lst.cluster is None) == (not lst.split):
            issues.append(
                ConfigIssue(
                    f"{path}.cluster", f"a {lst.protocol!r} listener needs a cluster or a split"
                )
            )
        elif lst.cluster is not None and lst.cluster not in clusters:
            issues.append(ConfigIssue(f"{path}.cluster", _unknown_cluster(lst.cluster, clusters)))
        _check_split(lst.split, path, clusters, issues)
        if lst.routes or lst.virtual_hosts:
            issues.append(ConfigIssue(path, f"a {lst.protocol!r} listener has no routes"))
        if lst.protocol == "udp" and lst.max_sessions < 1:
            issues.append(ConfigIssue(f"{path}.max_sessions", "must be >= 1"))
    else:
        if lst.cluster is not None or lst.split:
            issues.append(
                ConfigIssue(f"{path}.cluster", "only 'tcp' and 'udp' listeners name a cluster")
            )
        if lst.routes and lst.virtual_hosts:
            issues.append(ConfigIssue(path, "give 'routes' or 'virtual_hosts', not both"))
    if lst.tls is not None:
        if lst.protocol == "udp":
            issues.append(ConfigIssue(f"{path}.tls", "a 'udp' listener takes no tls (no DTLS)"))
        _check_listener_tls(lst.tls, f"{path}.tls", issues)
    _check_toxics(lst, path, issues)
    for i, route in enumerate(lst.routes):
        _check_route(route, f"{path}.routes[{i}]", clusters, issues)
    _check_reachable(lst.routes, f"{path}.routes", issues)
    domains: list[str] = []
    for i, vh in enumerate(lst.virtual_hosts):
        vpath = f"{path}.virtual_hosts[{i}]"
        if not vh.domains:
            issues.append(ConfigIssue(f"{vpath}.domains", "must not be empty"))
        domains.extend(d.lower() for d in vh.domains)
        for j, route in enumerate(vh.routes):
            _check_route(route, f"{vpath}.routes[{j}]", clusters, issues)
        _check_reachable(vh.routes, f"{vpath}.routes", issues)
    for d in _dupes(domains):
        issues.append(ConfigIssue(f"{path}.virtual_hosts", f"domain {d!r} is in two virtual hosts"))
    for name in _dupes(vh.name for vh in lst.virtual_hosts):
        issues.append(ConfigIssue(f"{path}.virtual_hosts", f"virtual host {name!r} defined twice"))
    _positive(issues, f"{path}.header_timeout", lst.header_timeout, allow_zero=False)
    _positive(issues, f"{path}.idle_timeout", lst.idle_timeout, allow_zero=False)
    if not 1 <= lst.max_request_headers_kb <= 1024:
        issues.append(ConfigIssue(f"{path}.max_request_headers_kb", "must be 1-1024"))
    if not 1 <= lst.max_request_headers_count <= 10000:
        issues.append(ConfigIssue(f"{path}.max_request_headers_count", "must be 1-10000"))
    _check_http2(lst.http2, f"{path}.http2", issues)
    _check_access_log(lst, path, issues)
    _check_filters(lst, path, issues)


def _check_filters(lst: Listener, path: str, issues: list[ConfigIssue]) -> None:
    """A listener's ``http_filters`` and ``network_filters``, and its routes'
    ``disabled_filters``; a filter that passes is built (``gateway.filters.factories``:
    a Python factory is imported and called with its config)."""
    # (imported here: the filters import the config model)
    from gateway.filters.chain import FAULTS
    from gateway.filters.factories import (
        FilterConfigProblem,
        build_http_factory,
        build_network_factory,
    )

    if lst.http_filters and lst.protocol != "http":
        issues.append(ConfigIssue(f"{path}.http_filters", "only 'http' listeners have them"))
    if lst.network_filters and lst.protocol != "tcp":
        issues.append(ConfigIssue(f"{path}.network_filters", "only 'tcp' listeners have them"))
    if not 1 <= lst.filter_buffer_limit_kb <= 1024 * 1024:
        issues.append(ConfigIssue(f"{path}.filter_buffer_limit_kb", "must be 1-1048576"))
    for key, filters in (
        ("http_filters", lst.http_filters),
        ("network_filters", lst.network_filters),
    ):
        for name in _dupes(f.name for f in filters):
            issues.append(ConfigIssue(f"{path}.{key}", f"filter {name!r} defined twice"))
        build = build_http_factory if key == "http_filters" else build_network_factory
        for i, flt in enumerate(filters):
            fpath = f"{path}.{key}[{i}]"
            before = len(issues)
            if not flt.name:
                issues.append(ConfigIssue(f"{fpath}.name", "must not be empty"))
            elif key == "http_filters" and flt.name == FAULTS:
                issues.append(
                    ConfigIssue(f"{fpath}.name", f"{FAULTS!r} is the built-in faults filter's")
                )
            if (flt.wasm is None) == (flt.python is None):
                issues.append(ConfigIssue(fpath, "needs exactly one of 'wasm' or 'python'"))
                continue
            wasm = flt.wasm
            if wasm is not None:
                if not os.path.isfile(wasm.path):
                    issues.append(ConfigIssue(f"{fpath}.wasm.path", f"{wasm.path}: no such file"))
                if wasm.max_memory_mb < 1:
                    issues.append(ConfigIssue(f"{fpath}.wasm.max_memory_mb", "must be >= 1"))
                if not wasm.max_ms_per_call > 0:
                    issues.append(ConfigIssue(f"{fpath}.wasm.max_ms_per_call", "must be > 0"))
            if len(issues) > before or lst.protocol not in ("http", "tcp"):
                continue
            try:
                build(flt)
            except FilterConfigProblem as e:
                issues.append(ConfigIssue(f"{fpath}.{e.field}", e.reason))
    known = {f.name for f in lst.http_filters} | {FAULTS}
    routes = [(f"{path}.routes[{i}]", r) for i, r in enumerate(lst.routes)]
    for i, vh in enumerate(lst.virtual_hosts):
        routes += [(f"{path}.virtual_hosts[{i}].routes[{j}]", r) for j, r in enumerate(vh.routes)]
    for rpath, route in routes:
        for j, name in enumerate(route.disabled_filters):
            if name not in known:
                issues.append(
                    ConfigIssue(
                        f"{rpath}.disabled_filters[{j}]",
                        f"listener {lst.name!r} has no http filter {name!r}",
                    )
                )


def _check_http2(http2: Http2Settings, path: str, issues: list[ConfigIssue]) -> None:
    """A listener's or cluster's HTTP/2 limits, within what the protocol can say."""
    if not 1 <= http2.max_concurrent_streams <= 2**31 - 1:
        issues.append(ConfigIssue(f"{path}.max_concurrent_streams", "must be 1-2147483647"))
    if not 1 <= http2.initial_stream_window_kb <= 2**21 - 1:  # RFC 9113: under 2^31 bytes
        issues.append(ConfigIssue(f"{path}.initial_stream_window_kb", "must be 1-2097151"))
    if not 1 <= http2.max_header_list_kb <= 1024:
        issues.append(ConfigIssue(f"{path}.max_header_list_kb", "must be 1-1024"))


def _load_problem(load: Callable[[], object]) -> str | None:
    """Why loading a TLS file fails (as the gateway will load it), or None."""
    try:
        load()
    except OSError as e:
        return f"cannot read: {e.strerror or e}"
    except (ssl.SSLError, ValueError) as e:
        return f"does not load: {getattr(e, 'reason', None) or e}"
    return None


def _check_pem(path: str, field: str, issues: list[ConfigIssue], *, ca: bool = False) -> bool:
    """A certificate (or CA bundle) file that exists and parses as PEM."""
    problem = _load_problem(
        (lambda: ssl.create_default_context(cafile=path))
        if ca
        else (lambda: x509.load_pem_x509_certificates(Path(path).read_bytes()))
    )
    if problem is not None:
        issues.append(ConfigIssue(field, f"{path}: {problem}"))
    return problem is None


def _check_key_pair(cert: str, key: str, path: str, issues: list[ConfigIssue]) -> None:
    """A certificate that loads, and a key that loads and is the certificate's."""
    if not _check_pem(cert, f"{path}.cert", issues):
        return
    try:
        Path(key).read_bytes()
    except OSError as e:
        issues.append(ConfigIssue(f"{path}.key", f"{key}: cannot read: {e.strerror or e}"))
        return
    problem = _load_problem(
        lambda: ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    )
    if problem is not None:
        issues.append(
            ConfigIssue(
                f"{path}.key",
                f"{key}: not the key of {cert}, or not a key: {problem}; point key at the "
                "private key this certificate was issued with",
            )
        )


def _check_listener_tls(tls: ListenerTls, path: str, issues: list[ConfigIssue]) -> None:
    if not tls.certificates:
        issues.append(ConfigIssue(f"{path}.certificates", "must not be empty"))
    for i, certificate in enumerate(tls.certificates):
        cpath = f"{path}.certificates[{i}]"
        _check_key_pair(certificate.cert, certificate.key, cpath, issues)
        for j, name in enumerate(certificate.server_names):
            bare = name[2:] if name.startswith("*.") else name
            if not _is_hostname(bare):
                issues.append(
                    ConfigIssue(
                        f"{cpath}.server_names[{j}]",
                        f"{name!r} is not a host name (a wildcard is '*.' and a name)",
                    )
                )
    for j, protocol in enumerate(tls.alpn):
        if not protocol or len(protocol) > 255:
            issues.append(ConfigIssue(f"{path}.alpn[{j}]", "must be 1-255 characters"))
    auth = tls.client_auth
    if auth is not None:
        _check_pem(auth.ca, f"{path}.client_auth.ca", issues, ca=True)
        for j, san in enumerate(auth.allowed_sans):
            if not (_is_hostname(san) or _is_uri(san)):
                issues.append(
                    ConfigIssue(
                        f"{path}.client_auth.allowed_sans[{j}]",
                        f"{san!r} is neither a DNS name nor a URI (spiffe://...)",
                    )
                )


def _is_uri(value: str) -> bool:
    scheme, sep, rest = value.partition("://")
    return bool(sep and rest and re.fullmatch(r"[a-zA-Z][a-zA-Z0-9+.-]*", scheme))


def _check_upstream_tls(tls: UpstreamTls, path: str, issues: list[ConfigIssue]) -> None:
    if tls.sni is not None and not _is_hostname(tls.sni):
        issues.append(ConfigIssue(f"{path}.sni", f"{tls.sni!r} is not a host name"))
    if tls.ca is not None:
        _check_pem(tls.ca, f"{path}.ca", issues, ca=True)
    if (tls.cert is None) != (tls.key is None):
        issues.append(ConfigIssue(f"{path}.cert", "give both 'cert' and 'key', or neither"))
    elif tls.cert is not None and tls.key is not None:
        _check_key_pair(tls.cert, tls.key, path, issues)


#: the toxics a udp listener takes (datagrams: no stream to slice, pace or close)
_UDP_TOXICS = frozenset({"latency", "packet_loss", "noop"})


def _check_toxics(lst: Listener, path: str, issues: list[ConfigIssue]) -> None:
    """A listener's toxics: names unique across both streams, and every attribute on
    which Toxiproxy would crash, stall or misbehave refused, naming the field."""
    for name in _dupes(t.name for t in lst.toxics):
        issues.append(
            ConfigIssue(f"{path}.toxics", f"toxic {name!r} defined twice (names are per listener)")
        )
    for i, toxic in enumerate(lst.toxics):
        tpath = f"{path}.toxics[{i}]"
        apath = f"{tpath}.attributes"
        a = toxic.attributes
        if not toxic.name:
            issues.append(ConfigIssue(f"{tpath}.name", "must not be empty"))
        if not (math.isfinite(toxic.toxicity) and 0 <= toxic.toxicity <= 1):
            issues.append(ConfigIssue(f"{tpath}.toxicity", "must be 0-1"))
        if toxic.type == "packet_loss" and lst.protocol != "udp":
            issues.append(ConfigIssue(f"{tpath}.type", "'packet_loss' is for udp listeners only"))
        if lst.protocol == "udp" and toxic.type not in DATAGRAM_TOXIC_TYPES:
            issues.append(
                ConfigIssue(
                    f"{tpath}.type",
                    f"a udp listener takes latency and packet_loss, not {toxic.type!r}",
                )
            )
        for field in ("latency", "jitter", "delay", "timeout", "bytes"):
            if getattr(a, field) < 0:
                issues.append(ConfigIssue(f"{apath}.{field}", "must be >= 0"))
        if not (math.isfinite(a.percent) and 0 <= a.percent <= 100):
            issues.append(ConfigIssue(f"{apath}.percent", "must be 0-100"))
        if toxic.type == "bandwidth" and a.rate <= 0:
            issues.append(
                ConfigIssue(
                    f"{apath}.rate", "must be > 0 (KB/s): 0 stalls the stream, below 0 is nonsense"
                )
            )
        if toxic.type == "slicer":
            if a.average_size <= 0:
                issues.append(ConfigIssue(f"{apath}.average_size", "must be > 0 (bytes)"))
            if a.size_variation < 0:
                issues.append(ConfigIssue(f"{apath}.size_variation", "must be >= 0"))
            elif a.average_size > 0 and a.size_variation >= a.average_size:
                issues.append(
                    ConfigIssue(f"{apath}.size_variation", "must be less than average_size")
                )
        for j, source in enumerate(toxic.source):
            try:
                parse_source(source)
            except ValueError:
                issues.append(
                    ConfigIssue(
                        f"{tpath}.source[{j}]", f"{source!r} is not an IP address or network"
                    )
                )


def _check_access_log(lst: Listener, path: str, issues: list[ConfigIssue]) -> None:
    log = lst.access_log
    if not log.path:
        issues.append(ConfigIssue(f"{path}.access_log.path", "must be a file path or '-'"))
    if not 1 <= log.buffer_kb <= 1048576:
        issues.append(ConfigIssue(f"{path}.access_log.buffer_kb", "must be 1-1048576"))


def check_endpoint(ep: Endpoint, path: str) -> list[ConfigIssue]:
    """What is wrong with one endpoint (from the config, a file or a registration)."""
    at = f"{path}." if path else ""
    issues = []
    if ep.address.port == 0:
        issues.append(ConfigIssue(f"{at}address", "port must be 1-65535"))
    if not 0 <= ep.weight <= 10000:
        issues.append(ConfigIssue(f"{at}weight", "must be 0-10000"))
    if not 0 <= ep.priority <= 127:
        issues.append(ConfigIssue(f"{at}priority", "must be 0-127"))
    return issues


def check_endpoints(endpoints: Iterable[Endpoint], path: str) -> list[ConfigIssue]:
    """What is wrong with a cluster's endpoint list at ``path``."""
    endpoints = tuple(endpoints)
    issues: list[ConfigIssue] = []
    for i, ep in enumerate(endpoints):
        issues += check_endpoint(ep, f"{path}[{i}]")
    for addr in _dupes(str(ep.address) for ep in endpoints):
        issues.append(ConfigIssue(path, f"endpoint {addr} listed twice"))
    return issues


_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


def _is_hostname(name: str) -> bool:
    labels = name.removesuffix(".").split(".")
    return len(name) <= 253 and all(_LABEL.fullmatch(label) for label in labels)


# which fields each discovery type reads; any other field set away from its default is
# refused, so that a field the type ignores cannot pass for one that works
_DISCOVERY_FIELDS = {
    "static": set(),
    "dns": {"hostname", "port", "ip_family", "resolver", "timeout", "interval"},
    "file": {"path", "interval"},
    "registry": {"default_ttl"},
}


def _check_discovery(cluster: Cluster, path: str, issues: list[ConfigIssue]) -> None:
    d = cluster.discovery
    dpath = f"{path}.discovery"
    default = Discovery()
    for field in attrs.fields(Discovery):
        name = field.name
        ignored = name != "type" and name not in _DISCOVERY_FIELDS[d.type]
        if ignored and getattr(d, name) != getattr(default, name):
            issues.append(ConfigIssue(f"{dpath}.{name}", f"does not apply to type {d.type!r}"))
    if d.type == "dns":
        if d.hostname is None:
            issues.append(ConfigIssue(f"{dpath}.hostname", "is required for type 'dns'"))
        elif not _is_hostname(d.hostname):
            issues.append(ConfigIssue(f"{dpath}.hostname", f"{d.hostname!r} is not a host name"))
        if not 1 <= d.port <= 65535:
            issues.append(ConfigIssue(f"{dpath}.port", "must be 1-65535 for type 'dns'"))
        if d.resolver is not None:
            if d.resolver.port == 0:
                issues.append(ConfigIssue(f"{dpath}.resolver", "port must be 1-65535"))
            try:
                ipaddress.ip_address(d.resolver.host)
            except ValueError:
                issues.append(ConfigIssue(f"{dpath}.resolver", "must be an IP address and port"))
        _positive(issues, f"{dpath}.timeout", d.timeout, allow_zero=False)
    if d.type == "file" and not d.path:
        issues.append(ConfigIssue(f"{dpath}.path", "is required for type 'file'"))
    if d.type in ("dns", "file"):
        _positive(issues, f"{dpath}.interval", d.interval, allow_zero=False)
    if d.type == "registry":
        _positive(issues, f"{dpath}.default_ttl", d.default_ttl, allow_zero=True)
        if cluster.endpoints:
            issues.append(
                ConfigIssue(
                    f"{path}.endpoints",
                    "a 'registry' cluster lists no endpoints: instances register at runtime",
                )
            )
    for name in ("timeout", "interval", "default_ttl"):
        if not math.isfinite(getattr(d, name)):
            issues.append(ConfigIssue(f"{dpath}.{name}", "must be a finite number"))


def _check_cluster(cluster: Cluster, path: str, issues: list[ConfigIssue]) -> None:
    if cluster.tls is not None:
        _check_upstream_tls(cluster.tls, f"{path}.tls", issues)
        check = cluster.health_check
        if check is not None and check.type == "grpc" and cluster.protocol != "http2":
            # the check speaks h2, offered by ALPN only to a protocol: http2 cluster
            issues.append(
                ConfigIssue(
                    f"{path}.health_check.type",
                    "a gRPC check over TLS needs the cluster's protocol: http2",
                )
            )
    _check_http2(cluster.http2, f"{path}.http2", issues)
    if not cluster.name:
        issues.append(ConfigIssue(f"{path}.name", "must not be empty"))
    issues += check_endpoints(cluster.endpoints, f"{path}.endpoints")
    _check_discovery(cluster, path, issues)
    pool = cluster.pool
    if pool.max_connections < 1:
        issues.append(ConfigIssue(f"{path}.pool.max_connections", "must be >= 1"))
    if pool.max_idle < 0:
        issues.append(ConfigIssue(f"{path}.pool.max_idle", "must be >= 0"))
    _positive(issues, f"{path}.pool.idle_timeout", pool.idle_timeout, allow_zero=False)
    _positive(issues, f"{path}.pool.connect_timeout", pool.connect_timeout, allow_zero=False)


def _route_names(lst: Listener) -> set[str]:
    return {r.name for r in lst.all_routes() if r.name is not None}


def _check_fault(fault: Fault, path: str, config: Config, issues: list[ConfigIssue]) -> None:
    if not fault.name:
        issues.append(ConfigIssue(f"{path}.name", "must not be empty"))
    if fault.listener is not None:
        lst = config.listener(fault.listener)
        if lst is None or lst.protocol != "http":
            issues.append(
                ConfigIssue(f"{path}.listener", f"no http listener named {fault.listener!r}")
            )
        elif fault.route is not None and fault.route not in _route_names(lst):
            issues.append(
                ConfigIssue(f"{path}.route", f"listener {lst.name!r} has no route {fault.route!r}")
            )
    elif fault.route is not None:
        issues.append(ConfigIssue(f"{path}.route", "a route is named within a 'listener'"))
    if fault.cluster is not None and config.cluster(fault.cluster) is None:
        issues.append(
            ConfigIssue(f"{path}.cluster", _unknown_cluster(fault.cluster, _cluster_names(config)))
        )
    for i, header in enumerate(fault.match.headers):
        _check_header(header, f"{path}.match.headers[{i}]", issues)
    if not 0 <= fault.percent <= 100:
        issues.append(ConfigIssue(f"{path}.percent", "must be 0-100"))
    if fault.first_n < 0:
        issues.append(ConfigIssue(f"{path}.first_n", "must be >= 0"))
    _positive(issues, f"{path}.response_rate_kbps", fault.response_rate_kbps, allow_zero=True)
    if (
        fault.delay is None
        and fault.abort is None
        and not fault.response_rate_kbps
        and not fault.headers_enabled
    ):
        issues.append(
            ConfigIssue(path, "needs a delay, an abort, response_rate_kbps or headers_enabled")
        )
    delay = fault.delay
    if delay is not None:
        given = (delay.fixed is not None) + bool(delay.uniform) + (delay.lognormal is not None)
        if given != 1:
            issues.append(
                ConfigIssue(f"{path}.delay", "needs exactly one of fixed, uniform, lognormal")
            )
        if delay.fixed is not None:
            _positive(issues, f"{path}.delay.fixed", delay.fixed, allow_zero=True)
        if delay.uniform and (
            len(delay.uniform) != 2 or not 0 <= delay.uniform[0] <= delay.uniform[1]
        ):
            issues.append(
                ConfigIssue(f"{path}.delay.uniform", "must be [low, high] with 0 <= low <= high")
            )
    abort = fault.abort
    if abort is not None:
        if len(abort.kinds()) != 1:
            issues.append(
                ConfigIssue(
                    f"{path}.abort",
                    "needs exactly one of status, reset, empty, garbage, truncate, grpc_status",
                )
            )
        if abort.status is not None and not 200 <= abort.status <= 599:
            issues.append(ConfigIssue(f"{path}.abort.status", "must be 200-599"))
        if abort.truncate is not None and not 0 <= abort.truncate < 1:
            issues.append(ConfigIssue(f"{path}.abort.truncate", "must be in [0, 1)"))
        if abort.grpc_status is not None and not 1 <= abort.grpc_status <= 16:
            issues.append(ConfigIssue(f"{path}.abort.grpc_status", "must be a gRPC error, 1-16"))


def _check_rollout(
    rollout: Rollout,
    path: str,
    config: Config,
    watched: dict[tuple[str, str], str],
    issues: list[ConfigIssue],
) -> None:
    if not rollout.name:
        issues.append(ConfigIssue(f"{path}.name", "must not be empty"))
    for side in ("stable", "canary"):
        cluster = getattr(rollout, side)
        if config.cluster(cluster) is None:
            issues.append(
                ConfigIssue(f"{path}.{side}", _unknown_cluster(cluster, _cluster_names(config)))
            )
    if rollout.stable == rollout.canary:
        issues.append(ConfigIssue(f"{path}.canary", "must differ from 'stable'"))
    status = rollout.status
    if not 0 <= status.step < len(rollout.steps):
        issues.append(ConfigIssue(f"{path}.status.step", f"must be 0-{len(rollout.steps) - 1}"))
    if not 0 <= status.weight <= 100:
        issues.append(ConfigIssue(f"{path}.status.weight", "must be 0-100"))
    lst = config.listener(rollout.listener)
    if lst is None or lst.protocol != "http":
        issues.append(
            ConfigIssue(f"{path}.listener", f"no http listener named {rollout.listener!r}")
        )
        return
    routes = [r for r in lst.all_routes() if r.name == rollout.route]
    if len(routes) != 1:
        issues.append(
            ConfigIssue(
                f"{path}.route",
                f"listener {lst.name!r} has no route {rollout.route!r}"
                if not routes
                else f"listener {lst.name!r} has {len(routes)} routes named {rollout.route!r}",
            )
        )
        return
    if not rollout.active:
        return
    # the rollout owns the route's split while it runs: only its two clusters
    route = routes[0]
    targets = {route.cluster} if route.cluster is not None else {wc.cluster for wc in route.split}
    if not targets <= {rollout.stable, rollout.canary}:
        others = ", ".join(sorted(repr(t) for t in targets - {rollout.stable, rollout.canary}))
        issues.append(
            ConfigIssue(
                f"{path}.route",
                f"route {rollout.route!r} also goes to {others}: a rollout's route splits "
                "between its stable and canary clusters only",
            )
        )
    key = (rollout.listener, rollout.route)
    other = watched.setdefault(key, rollout.name)
    if other != rollout.name:
        issues.append(
            ConfigIssue(f"{path}.route", f"rollout {other!r} is already moving this route")
        )


def _check_store_endpoint(url: str, path: str, issues: list[ConfigIssue]) -> None:
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as e:
        issues.append(ConfigIssue(path, f"{url!r} is not a URL: {e}"))
        return
    if parts.scheme not in ("http", "https") or not parts.hostname:
        issues.append(
            ConfigIssue(path, f"must be http://host:port or https://host:port, not {url!r}")
        )
    elif port is None:
        issues.append(ConfigIssue(path, f"{url!r} names no port (etcd's client port is 2379)"))
    elif parts.path not in ("", "/") or parts.query or parts.fragment:
        issues.append(ConfigIssue(path, f"{url!r}: a client URL has no path"))


def _check_config_store(store: StoreConfig, issues: list[ConfigIssue]) -> None:
    """``config_store``: a file store takes no etcd settings; an etcd store needs them right."""
    path = "config_store"
    if store.type == "file":
        default = StoreConfig()
        for field in attrs.fields(StoreConfig):
            if field.name != "type" and getattr(store, field.name) != getattr(default, field.name):
                issues.append(ConfigIssue(f"{path}.{field.name}", "does not apply to type 'file'"))
        return
    if not store.endpoints:
        issues.append(ConfigIssue(f"{path}.endpoints", "is required for type 'etcd'"))
    for i, url in enumerate(store.endpoints):
        _check_store_endpoint(url, f"{path}.endpoints[{i}]", issues)
    prefix = store.prefix
    if not prefix.startswith("/") or prefix == "/" or prefix.endswith("/") or "//" in prefix:
        issues.append(
            ConfigIssue(f"{path}.prefix", f"must be a key path like /triogate/prod, not {prefix!r}")
        )
    if not math.isfinite(store.dial_timeout) or store.dial_timeout <= 0:
        issues.append(ConfigIssue(f"{path}.dial_timeout", "must be a positive number of seconds"))
    if (store.username_env is None) != (store.password_env is None):
        missing = "password_env" if store.password_env is None else "username_env"
        issues.append(ConfigIssue(f"{path}.{missing}", "is required with the other of the pair"))
    tls = store.tls
    if tls is None:
        return
    for i, url in enumerate(store.endpoints):
        if url.startswith("http://"):
            issues.append(ConfigIssue(f"{path}.endpoints[{i}]", "must be https:// when tls is set"))
    if (tls.cert is None) != (tls.key is None):
        missing = "key" if tls.key is None else "cert"
        issues.append(
            ConfigIssue(f"{path}.tls.{missing}", "is required with the other of the pair")
        )
    if tls.ca is not None:
        _check_pem(tls.ca, f"{path}.tls.ca", issues, ca=True)
    if tls.cert is not None and tls.key is not None:
        _check_key_pair(tls.cert, tls.key, f"{path}.tls", issues)


def check(config: Config) -> list[ConfigIssue]:
    """Every problem in ``config``, by path."""
    issues: list[ConfigIssue] = []
    names = {c.name for c in config.clusters}
    for name in _dupes(c.name for c in config.clusters):
        issues.append(ConfigIssue("clusters", f"cluster {name!r} defined twice"))
    for name in _dupes(lst.name for lst in config.listeners):
        issues.append(ConfigIssue("listeners", f"listener {name!r} defined twice"))
    bound = [str(lst.address) for lst in config.listeners if lst.address.port != 0]
    for addr in _dupes([*bound, str(config.admin.address)]):
        issues.append(ConfigIssue("listeners", f"address {addr} is used twice"))
    for i, lst in enumerate(config.listeners):
        _check_listener(lst, f"listeners[{i}]", names, issues)
    for i, cluster in enumerate(config.clusters):
        _check_cluster(cluster, f"clusters[{i}]", issues)
    for name in _dupes(f.name for f in config.faults):
        issues.append(ConfigIssue("faults", f"fault {name!r} defined twice"))
    for i, fault in enumerate(config.faults):
        _check_fault(fault, f"faults[{i}]", config, issues)
    if config.max_active_faults < 0:
        issues.append(ConfigIssue("max_active_faults", "must be >= 0"))
    for name in _dupes(r.name for r in config.rollouts):
        issues.append(ConfigIssue("rollouts", f"rollout {name!r} defined twice"))
    watched: dict[tuple[str, str], str] = {}
    for i, rollout in enumerate(config.rollouts):
        _check_rollout(rollout, f"rollouts[{i}]", config, watched, issues)
    _check_config_store(config.config_store, issues)
    if config.version < 1:
        issues.append(ConfigIssue("version", "must be >= 1"))
    return issues


def ensure_valid(config: Config) -> Config:
    """Return ``config`` unchanged, or raise ``ConfigError`` with every issue."""
    issues = check(config)
    if issues:
        raise ConfigError(issues)
    return config
