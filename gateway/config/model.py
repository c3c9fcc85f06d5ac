"""The config, as frozen attrs values.

One model serves the YAML file, the admin API (its JSON Schema is generated from these
classes by ``schema.py``) and the data plane (which compiles it into snapshots). Field
validation that needs only the field's own value lives in ``structure.py`` (types) and
``validate.py`` (semantics across the whole config: references, uniqueness, ranges).
Every field has a default where a user of Envoy would expect one.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Final, Literal

import attrs

from policies.backoff import DEFAULT_BACKOFF, BackoffConfig
from policies.balancing import DEFAULT_OPTIONS, BalancerOptions
from policies.breaker import BreakerConfig
from policies.faults import FaultAbort, FaultDelay, FaultRule
from policies.health import HealthCheckConfig
from policies.limits import CircuitBreakerThresholds
from policies.outlier import OutlierConfig
from policies.retry import DEFAULT_BUFFER_LIMIT
from policies.rollout import RolloutGates, RolloutPlan, check_steps, steps_tuple
from policies.settings import positive
from policies.toxics import ToxicAttributes as ToxicAttributes

LbPolicy = Literal["round_robin", "least_request", "random", "ring_hash", "maglev"]
EndpointState = Literal["active", "draining", "disabled"]
ListenerProtocol = Literal["http", "tcp", "udp"]
ToxicType = Literal[
    "latency",
    "bandwidth",
    "slow_close",
    "timeout",
    "reset_peer",
    "slicer",
    "limit_data",
    "noop",
    "slow_open",
    "packet_loss",
]
ToxicStream = Literal["upstream", "downstream"]
TlsVersion = Literal["1.2", "1.3"]
#: Envoy's ``forward_client_cert_details`` modes for ``x-forwarded-client-cert``
ForwardClientCert = Literal["sanitize", "forward_only", "append_forward", "sanitize_set"]
UpstreamProtocol = Literal["http1", "http2"]
DiscoveryType = Literal["static", "dns", "file", "registry"]
StoreType = Literal["file", "etcd"]
IpFamily = Literal["all", "v4", "v6"]
RolloutStateName = Literal["running", "paused", "succeeded", "rolled_back", "aborted"]
#: the states in which a rollout moves its route's split (and its route is watched)
ACTIVE_ROLLOUT_STATES: Final = frozenset({"running", "paused"})
RetryOn = Literal[
    "connect-failure",
    "reset",
    "5xx",
    "gateway-error",
    "retriable-status-codes",
    # gRPC statuses in a response's headers (policies.grpc.RETRY_ON)
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
]


@attrs.frozen(order=True)
class Address:
    """A ``host:port`` pair; IPv6 hosts are written ``[::1]:8080``."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Address:
        """Parse ``host:port``; raise ``ValueError`` with a readable reason."""
        if not isinstance(text, str):
            raise ValueError("must be a 'host:port' string")
        if text.startswith("["):
            host, sep, rest = text[1:].partition("]")
            if not sep or not rest.startswith(":"):
                raise ValueError("IPv6 address must be written [host]:port")
            port_text = rest[1:]
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise ValueError(f"{host!r} is not an IPv6 address") from None
        else:
            host, sep, port_text = text.rpartition(":")
            if not sep or not host:
                raise ValueError("must be 'host:port'")
            if ":" in host:
                raise ValueError("IPv6 address must be written [host]:port")
        if not port_text.isdigit():
            raise ValueError(f"port {port_text!r} is not a number")
        port = int(port_text)
        if not 0 <= port <= 65535:
            raise ValueError("port must be 1-65535")
        return cls(host, port)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


@attrs.frozen
class ToxiproxyApi:
    """Where Toxiproxy's REST API is served beside the native admin API."""

    #: ``host:port`` of Toxiproxy's API
    address: Address = Address("127.0.0.1", 8474)
    #: serve ``/metrics`` (toxiproxy-server's ``-proxy-metrics``)
    proxy_metrics: bool = False


@attrs.frozen
class AdminConfig:
    """Where the admin API listens and how it authenticates."""

    #: ``host:port`` of the admin API; not loopback: an API key is required
    address: Address = Address("127.0.0.1", 9901)
    #: name of an environment variable holding the API key
    api_key_env: str | None = None
    #: path of a file holding the API key
    api_key_file: str | None = None
    #: Toxiproxy's REST API served beside this one; None: not served
    toxiproxy: ToxiproxyApi | None = None
    #: where runtime changes are persisted; default: ``<config file>.state.json``
    state_file: str | None = None


@attrs.frozen
class StoreTls:
    """TLS to etcd: the CA that signed its certificate, and a client certificate."""

    #: PEM file of the CA that signed etcd's certificate
    ca: str | None = None
    #: PEM client certificate and its key, when etcd asks for one (--client-cert-auth)
    cert: str | None = None
    #: PEM file: the private key of ``cert``
    key: str | None = None


@attrs.frozen
class StoreConfig:
    """Where the config lives: this node's state file, or etcd shared by a fleet.

    Like ``admin``, it is this node's own: never stored in etcd, fixed while running.
    """

    #: ``file``: the state file, one node; ``etcd``: every key under ``prefix``
    type: StoreType = "file"
    #: etcd's client URLs (``http://host:port`` or ``https://``); tried in order
    endpoints: tuple[str, ...] = ()
    #: every key of this fleet lives under it
    prefix: str = "/triogate"
    #: seconds to connect (and for one request) before etcd counts as unreachable
    dial_timeout: float = 2.0
    #: TLS settings for ``https://`` endpoints
    tls: StoreTls | None = None
    #: names of environment variables holding etcd's user name and password
    username_env: str | None = None
    #: see ``username_env``
    password_env: str | None = None


@attrs.frozen
class HeaderMatch:
    """A request header condition: exactly one of ``exact``, ``prefix``, ``regex``,
    ``present: true`` or ``absent: true``; ``invert`` negates it.

    The name is case-insensitive; a header sent more than once is matched on its values
    joined with ``,``.
    """

    #: the header's name (case-insensitive)
    name: str
    #: the value is exactly this
    exact: str | None = None
    #: the value starts with this
    prefix: str | None = None
    #: the whole value must match (``policies.matching``: the RE2-like subset)
    regex: str | None = None
    #: true: the header is there, whatever its value
    present: bool = False
    #: true: the header is not there
    absent: bool = False
    #: negate the condition (a missing header then passes a negated ``exact``)
    invert: bool = False


@attrs.frozen
class QueryMatch:
    """A query parameter condition: exactly one of ``exact``, ``regex`` or ``present: true``.

    Names and values are compared as sent (not percent-decoded); the first occurrence of
    a name counts.
    """

    #: the parameter's name, as sent
    name: str
    #: the value is exactly this
    exact: str | None = None
    #: the whole value must match
    regex: str | None = None
    #: true: the parameter is there (``?debug`` is, with an empty value)
    present: bool = False


@attrs.frozen
class RouteMatch:
    """Which requests a route takes: exactly one of ``prefix``, ``path`` or ``regex`` (the
    whole path must match), and every one of ``methods``, ``headers`` and ``query``.
    """

    #: the path starts with this
    prefix: str | None = None
    #: the path (without the query string) is exactly this
    path: str | None = None
    #: the whole path (without the query string) matches this (``policies.matching``: the RE2-like
    #: subset)
    regex: str | None = None
    #: any of these methods (upper case); empty: every method
    methods: tuple[str, ...] = ()
    #: request header conditions, every one must hold
    headers: tuple[HeaderMatch, ...] = ()
    #: query parameter conditions, every one must hold
    query: tuple[QueryMatch, ...] = ()


@attrs.frozen
class WeightedCluster:
    #: a cluster's name
    cluster: str
    #: its share, relative to the others' weights (0: none)
    weight: int


@attrs.frozen
class RetryPolicy:
    """Envoy-style retries: ``attempts`` extra tries on the listed conditions."""

    #: retries after the first try (0: none)
    attempts: int = 0
    #: what a retry is for (Envoy's ``retry_on``): connect failures, resets, 5xx, 502/503/504
    #: (``gateway-error``), ``retriable_status_codes``, gRPC statuses
    retry_on: tuple[RetryOn, ...] = ("connect-failure",)
    #: statuses retried when ``retry_on`` lists ``retriable-status-codes``
    retriable_status_codes: tuple[int, ...] = ()
    #: per-try timeout in seconds; 0 means the route timeout covers all tries
    per_try_timeout: float = 0.0
    #: the wait before each retry: exponential with full jitter (Envoy's 25 ms / 250 ms)
    backoff: BackoffConfig = DEFAULT_BACKOFF
    #: the largest request body held so that an idempotent request with a body can be
    #: retried (Envoy's route ``per_request_buffer_limit_bytes``); 0 holds none
    per_request_buffer_limit_bytes: int = DEFAULT_BUFFER_LIMIT


@attrs.frozen
class HashPolicy:
    """Where a consistent-hash key comes from: a header, a cookie, or the client address."""

    #: the key is this request header's value
    header: str | None = None
    #: the key is this cookie's value
    cookie: str | None = None
    #: true: the key is the client's IP address
    source_ip: bool = False


@attrs.frozen
class MirrorPolicy:
    """A share of a route's requests copied, fire and forget, to a shadow cluster."""

    #: the shadow cluster the copies go to
    cluster: str
    #: the share of the route's requests copied, 0-100
    percent: float = 100.0


@attrs.frozen
class SplitKey:
    """Where a sticky split's key comes from: exactly one of a header or a cookie."""

    #: the key is this request header's value
    header: str | None = None
    #: the key is this cookie's value
    cookie: str | None = None


@attrs.frozen
class Route:
    """A match and where matching requests go: one ``cluster`` or a weighted ``split``."""

    #: which requests it takes
    match: RouteMatch
    #: its name: what the admin API, faults and rollouts call it by (unnamed routes go by their
    #: position)
    name: str | None = None
    #: the cluster every matching request goes to (or ``split``)
    cluster: str | None = None
    #: clusters with weights; each request goes to one drawn at random (sticky with ``split_key``)
    split: tuple[WeightedCluster, ...] = ()
    #: seconds for the whole upstream exchange; 0 disables
    timeout: float = 15.0
    #: retries of failed attempts (off unless ``attempts`` > 0)
    retry: RetryPolicy = RetryPolicy()
    #: where the key of a ``ring_hash`` or ``maglev`` cluster comes from
    hash_policy: tuple[HashPolicy, ...] = ()
    #: the same key always picks the same cluster of the ``split`` (``policies.split``);
    #: a request without it is split at random
    split_key: SplitKey | None = None
    #: copy a share of the requests to a shadow cluster (``gateway.proxy.mirror``)
    mirror: MirrorPolicy | None = None
    #: the listener's ``http_filters`` (by name; ``faults`` too) skipped on this route
    disabled_filters: tuple[str, ...] = ()


@attrs.frozen
class VirtualHost:
    """Routes for requests whose Host matches one of ``domains`` (``*`` and ``*.x`` allowed)."""

    #: unique within its listener
    name: str
    #: the ``Host`` names it serves: exact, ``*.example.com``, or ``*`` for any
    domains: tuple[str, ...]
    #: its routes, the first that matches wins
    routes: tuple[Route, ...]


@attrs.frozen
class AccessLogConfig:
    """One JSON line per request; ``path`` ``-`` means stdout."""

    #: write the log
    enabled: bool = False
    #: the file the lines are appended to; ``-``: stdout
    path: str = "-"
    #: KiB of lines waiting for the writer; past it lines are dropped (and counted)
    buffer_kb: int = 4096


@attrs.frozen
class TracingConfig:
    """W3C trace context: ``traceparent``/``tracestate`` pass through; one is started if absent."""

    #: start a ``traceparent`` for a request that has none (or an invalid one); off by
    #: default (it costs about a microsecond a request, and ``x-request-id`` is always set)
    start_traceparent: bool = False
    #: the ``sampled`` flag of a started ``traceparent``
    sampled: bool = True


#: field metadata: changing the field needs new listening sockets
REBIND = "triogate.rebind"


@attrs.frozen
class CertificateConfig:
    """A certificate chain and its key (PEM files), for the server names it serves."""

    #: PEM file: the certificate and its chain
    cert: str
    #: PEM file: its private key
    key: str
    #: the SNI names it is picked for (``*.example.com`` allowed); empty: the names in
    #: the certificate's SANs
    server_names: tuple[str, ...] = ()


@attrs.frozen
class ClientAuth:
    """mTLS: clients present a certificate from ``ca``."""

    #: PEM file: the CA client certificates must come from
    ca: str
    #: false: a client without a certificate is served too
    required: bool = True
    #: DNS or URI SANs a client certificate must carry one of; empty: any from ``ca``
    allowed_sans: tuple[str, ...] = ()


@attrs.frozen
class ListenerTls:
    """TLS termination on a listener."""

    #: picked by SNI: an exact name, then a wildcard, then the first
    certificates: tuple[CertificateConfig, ...]
    #: protocols offered by ALPN, of those served (``h2``, ``http/1.1``)
    alpn: tuple[str, ...] = ("h2", "http/1.1")
    #: the oldest TLS version accepted
    min_version: TlsVersion = "1.2"
    #: None: no client certificate asked for
    client_auth: ClientAuth | None = None
    #: what happens to ``x-forwarded-client-cert`` (Envoy's modes)
    forward_client_cert: ForwardClientCert = "sanitize"


@attrs.frozen
class Http2Settings:
    """HTTP/2 limits: a listener's (of its clients' connections) or a ``protocol: http2``
    cluster's (of its connections to each endpoint: streams per connection, the most
    each stream buffers, the largest response header list taken)."""

    #: streams open at once on one connection
    max_concurrent_streams: int = 100
    #: KiB a stream may receive before it is read (its flow-control window)
    initial_stream_window_kb: int = 64
    #: KiB a header list may take at most
    max_header_list_kb: int = 60


@attrs.frozen
class UpstreamTls:
    """TLS origination to a cluster's endpoints."""

    #: the SNI sent and the name verified; None: the endpoint's host
    sni: str | None = None
    #: the CA bundle (PEM) endpoints are verified against; None: the system's
    ca: str | None = None
    #: a client certificate and key (PEM) for mTLS; None: none presented
    cert: str | None = None
    #: PEM file: the private key of ``cert``
    key: str | None = None
    #: false: the endpoints' certificates are not verified
    verify: bool = True


@attrs.frozen
class Toxic:
    """A network fault on a listener's connections (Toxiproxy's toxics, ``gateway.faults``).

    ``stream``: ``upstream`` is client to server, ``downstream`` server to client.
    """

    #: unique on its listener, across both streams
    name: str
    #: Toxiproxy's toxic types, plus ``slow_open``; udp listeners take ``latency`` and
    #: ``packet_loss``
    type: ToxicType
    #: ``upstream`` (client to server) or ``downstream`` (server to client)
    stream: ToxicStream = "downstream"
    #: the probability that a connection gets the toxic (rolled per connection)
    toxicity: float = 1.0
    #: the type's settings, in Toxiproxy's names and units
    attributes: ToxicAttributes = attrs.field(factory=ToxicAttributes)
    #: only connections from these client addresses or networks (``10.0.0.0/8``); () all
    source: tuple[str, ...] = ()


@attrs.frozen
class WasmFilter:
    """A proxy-wasm module as a filter (``gateway.filters.wasm``)."""

    #: the module file (``.wasm``), loaded once per worker process and config version
    path: str
    #: passed to the module's ``on_configure``, as bytes
    config: str = ""
    #: a trapping or over-budget module: 500 (False) or the filter skipped (True)
    fail_open: bool = False
    #: the most memory the module's instance may grow to (MiB); past it: out of memory
    max_memory_mb: int = 64
    #: the deadline of one callback (milliseconds)
    max_ms_per_call: float = 50.0
    #: Envoy's: the root context the module's SDK starts (the AssemblyScript SDK refuses
    #: to start without one it registered under this id)
    root_id: str = ""
    #: Envoy's: modules of one ``vm_id`` share their shared data (per process)
    vm_id: str = ""


@attrs.frozen
class PythonFilter:
    """A filter written in Python: ``factory`` (``module:attribute``) called with ``config``."""

    #: ``module:attribute``, imported and called with ``config`` when the config is published
    factory: str
    #: any YAML value, handed to ``factory`` as is
    config: Any = attrs.field(factory=dict, hash=False)


@attrs.frozen
class FilterConfig:
    """One filter of a listener's chain: exactly one of ``wasm`` or ``python``."""

    #: unique in its chain: a route's ``disabled_filters`` and the filter's stats name it
    name: str
    #: a proxy-wasm module (exclusive with ``python``)
    wasm: WasmFilter | None = None
    #: a Python object's hooks (exclusive with ``wasm``)
    python: PythonFilter | None = None


@attrs.frozen
class Listener:
    """A bound address and how its traffic is handled.

    ``routes`` is shorthand for one virtual host matching every domain.
    """

    #: unique among the listeners; the admin API's ``/listeners/{name}``
    name: str
    #: ``host:port`` to bind; port 0 binds a free port (``GET /status`` says which)
    address: Address = attrs.field(metadata={REBIND: True})
    #: ``http`` (HTTP/1.1, and HTTP/2 by ALPN or prior knowledge), or ``tcp`` or ``udp`` (proxied to
    #: ``cluster`` or ``split``; no routes)
    protocol: ListenerProtocol = "http"
    #: http: the routes for every ``Host``, the first that matches wins (shorthand for one virtual
    #: host matching ``*``)
    routes: tuple[Route, ...] = ()
    #: http: routes per ``Host``: a request gets the routes of the virtual host whose ``domains``
    #: match its ``Host``
    virtual_hosts: tuple[VirtualHost, ...] = ()
    #: for ``protocol: tcp`` or ``udp``: the cluster every connection (session) goes
    #: to, or a weighted ``split`` between clusters
    cluster: str | None = None
    #: for ``protocol: tcp`` or ``udp``: clusters with weights, one drawn per connection (session)
    split: tuple[WeightedCluster, ...] = ()
    #: False: the listener is down (new connections refused, open ones closed); its
    #: settings and toxics are kept
    enabled: bool = True
    #: network faults on its connections (tcp, udp, and the client side of http), in
    #: chain order per stream
    toxics: tuple[Toxic, ...] = ()
    #: for ``protocol: udp``: client sessions at most (over it a new client's datagrams
    #: are dropped and counted)
    max_sessions: int = 10000
    #: seconds a client may take to send a request's headers
    header_timeout: float = 10.0
    #: seconds an idle keep-alive client connection is kept (tcp: a connection with no
    #: byte either way; udp: a session with no datagram)
    idle_timeout: float = 60.0
    #: KiB a request's head may take at most; over it: 431
    max_request_headers_kb: int = 60
    #: headers a request may carry at most; over it: 431
    max_request_headers_count: int = 100
    #: one JSON line per request (off by default)
    access_log: AccessLogConfig = AccessLogConfig()
    #: W3C trace context (``traceparent``) handling
    tracing: TracingConfig = TracingConfig()
    #: TLS termination; None: cleartext (an http listener then also takes HTTP/2 with
    #: prior knowledge)
    tls: ListenerTls | None = None
    #: limits of its clients' HTTP/2 connections
    http2: Http2Settings = Http2Settings()
    #: HTTP filters, in order, on every request (``gateway.filters.chain``)
    http_filters: tuple[FilterConfig, ...] = ()
    #: network filters, in order, on the bytes of each connection (``protocol: tcp``)
    network_filters: tuple[FilterConfig, ...] = ()
    #: the most a filter that asks for a whole body may hold (KiB): over it, 413 (a
    #: request's) or 500 (a response's)
    filter_buffer_limit_kb: int = 1024

    def all_routes(self) -> list[Route]:
        """Every route, those of the virtual hosts included, in order."""
        return [*self.routes, *(r for vh in self.virtual_hosts for r in vh.routes)]


def needs_rebind(old: Listener, new: Listener) -> bool:
    """Whether going from ``old`` to ``new`` needs new sockets (fields marked ``REBIND``,
    or a protocol to or from ``udp``).

    Every other field of a listener changes live, without refusing a connection.
    """
    if (old.protocol == "udp") != (new.protocol == "udp"):
        return True  # datagram sockets for stream ones, or back
    return any(
        getattr(old, f.name) != getattr(new, f.name)
        for f in attrs.fields(Listener)
        if f.metadata.get(REBIND)
    )


@attrs.frozen
class Endpoint:
    #: ``host:port``; a host name is resolved at each connect
    address: Address
    #: its share of the cluster's traffic, relative to the others'
    weight: int = 1
    #: its priority level (Envoy's): 0 is served first, a higher level takes traffic as the levels
    #: before it lose healthy endpoints
    priority: int = 0
    #: its locality (a zone, say), for locality-aware balancing
    locality: str = ""
    #: ``active``; ``draining``: requests in flight finish, no new ones; ``disabled``: none
    state: EndpointState = "active"


@attrs.frozen
class PoolConfig:
    """The upstream connection pool kept per endpoint."""

    #: most connections (busy + idle) to one endpoint
    max_connections: int = 1024
    #: most idle connections kept for reuse
    max_idle: int = 128
    #: seconds an idle pooled connection is kept
    idle_timeout: float = 60.0
    #: seconds a connect may take before it counts as failed
    connect_timeout: float = 5.0


@attrs.frozen
class Discovery:
    """Where a cluster's endpoints come from: ``static``, ``dns``, ``file`` or ``registry``.

    ``static`` serves the cluster's ``endpoints``. For ``dns`` and ``file`` those are a
    seed, served until the source's first good answer replaces them; a ``registry``
    cluster lists none: its endpoints are the instances registered at runtime.
    """

    #: ``static`` (the cluster's ``endpoints``), ``dns``, ``file`` or ``registry``
    type: DiscoveryType = "static"
    #: dns: the name resolved; every A/AAAA record is an endpoint
    hostname: str | None = None
    #: dns: the port of every resolved endpoint
    port: int = 0
    #: dns: which record types are asked for
    ip_family: IpFamily = "all"
    #: dns: a DNS server asked directly over UDP (TCP when truncated); default: the system's
    resolver: Address | None = None
    #: dns: seconds one resolution may take before it counts as failed
    timeout: float = 5.0
    #: dns: seconds between resolutions; file: seconds between checks of the file
    interval: float = 5.0
    #: file: a JSON or YAML list of endpoints, re-read when it is replaced
    path: str | None = None
    #: registry: seconds a registration lives without a heartbeat when it names no ttl;
    #: 0 means registrations never expire
    default_ttl: float = 0.0


#: Envoy's default ``circuit_breakers``: every cluster has thresholds
DEFAULT_THRESHOLDS: Final = CircuitBreakerThresholds()


@attrs.frozen
class Cluster:
    #: unique among the clusters; what routes and listeners name
    name: str
    #: its endpoints (static discovery), or a seed until discovery answers
    endpoints: tuple[Endpoint, ...] = ()
    #: how an endpoint is picked for each request (connection)
    lb_policy: LbPolicy = "round_robin"
    #: the balancer's knobs (least_request choices, ring sizes, slow start, panic...)
    lb_options: BalancerOptions = DEFAULT_OPTIONS
    #: the connections kept to each endpoint
    pool: PoolConfig = PoolConfig()
    #: where its endpoints come from: the ``endpoints`` list, DNS, a file or a registry
    discovery: Discovery = Discovery()
    #: active health checks of every endpoint (``policies.health``); None: off
    health_check: HealthCheckConfig | None = None
    #: passive health checking: eject endpoints that fail (``policies.outlier``); None: off
    outlier_detection: OutlierConfig | None = None
    #: Envoy's ``circuit_breakers`` thresholds, always on (Envoy's defaults, 1024)
    circuit_breakers: CircuitBreakerThresholds = DEFAULT_THRESHOLDS
    #: the classic breaker guarding the cluster (``policies.breaker``); None: off
    breaker: BreakerConfig | None = None
    #: how requests go to its endpoints: HTTP/1.1, or HTTP/2 (prior knowledge in
    #: cleartext, ALPN over ``tls``)
    protocol: UpstreamProtocol = "http1"
    #: ``protocol: http2``: the limits of each connection (as Envoy's cluster
    #: ``http2_protocol_options``); more streams than it takes open another connection
    http2: Http2Settings = Http2Settings()
    #: TLS to its endpoints; None: cleartext
    tls: UpstreamTls | None = None


@attrs.frozen
class FaultMatch:
    """Which requests in a fault's scope it takes: every header condition must hold
    (the route match's ``headers``, ``HeaderMatch``)."""

    #: request header conditions, as a route's
    headers: tuple[HeaderMatch, ...] = ()


@attrs.frozen
class Fault:
    """An HTTP fault injected into the requests of its scope (``policies.faults``).

    Scope: a ``listener`` (optionally one of its routes by ``name``), a ``cluster`` (the
    one a request was routed to), both, or neither (every HTTP request).
    """

    #: unique among the faults; the admin API's ``/faults/{name}``
    name: str
    #: scope: only requests on this listener (absent: any)
    listener: str | None = None
    #: scope: only requests on this route of ``listener``, by name
    route: str | None = None
    #: scope: only requests routed to this cluster
    cluster: str | None = None
    #: which requests in its scope it takes (every header condition must hold)
    match: FaultMatch = FaultMatch()
    #: of the matching requests
    percent: float = 100.0
    #: > 0: only the first N requests it is injected into get it, then it passes
    first_n: int = 0
    #: the request waits this long before going on (before the abort, if any)
    delay: FaultDelay | None = None
    #: how the request ends instead of reaching the upstream (or, for ``truncate``, after)
    abort: FaultAbort | None = None
    #: > 0: the response body trickles at this many KiB/s
    response_rate_kbps: float = 0.0
    #: honour Envoy's ``x-envoy-fault-*`` request headers (stripped before upstream)
    headers_enabled: bool = False

    def rule(self) -> FaultRule:
        """The fault's decision settings."""
        return FaultRule(
            percent=self.percent,
            first_n=self.first_n,
            delay=self.delay,
            abort=self.abort,
            response_rate_kbps=self.response_rate_kbps,
            headers_enabled=self.headers_enabled,
        )


@attrs.frozen
class RolloutEvent:
    """One line of a rollout's history: what happened, when, and where it left the rollout."""

    #: wall-clock time, Unix seconds
    at: float
    #: ``started``, or the input that moved it (``policies.rollout.RolloutInput``):
    #: ``step_passed``, ``last_step_passed``, ``gate_breached``, ``pause``, ``resume``,
    #: ``abort``, ``promote``
    event: str
    #: the rollout's state after it
    state: RolloutStateName
    #: the step (index in ``steps``) after it
    step: int
    #: the canary's percent after it
    weight: int
    #: for ``gate_breached``: the gate, the value measured and its limit
    gate: str | None = None
    #: for ``gate_breached``: the figure measured
    value: float | None = None
    #: for ``gate_breached``: the gate's limit
    limit: float | None = None


@attrs.frozen
class RolloutStatus:
    """Where a rollout is; written by the gateway's rollout actor, persisted with the config."""

    #: ``running``, ``paused``, ``succeeded``, ``rolled_back`` or ``aborted``
    state: RolloutStateName = "running"
    #: the index of the current (or last) step in ``steps``
    step: int = 0
    #: the canary's percent of the route's traffic
    weight: int = 0
    #: what happened to it, oldest first
    history: tuple[RolloutEvent, ...] = ()


@attrs.frozen
class Rollout:
    """A staged rollout: the gateway moves ``route``'s traffic from ``stable`` to
    ``canary`` along ``steps``, judged by ``gates`` (``gateway.control.rollouts``)."""

    #: unique among the rollouts; the admin API's ``/rollouts/{name}``
    name: str
    #: the listener of ``route``
    listener: str
    #: a route of the listener, by ``name``
    route: str
    #: the cluster the route sends to before
    stable: str
    #: the cluster the route moves to
    canary: str
    #: the canary's percent at each step, increasing, 1-100
    steps: tuple[int, ...] = attrs.field(
        default=(5, 25, 50, 100), converter=steps_tuple, validator=check_steps
    )
    #: seconds each step holds at least
    dwell: float = attrs.field(default=60.0, validator=positive)
    #: seconds between judgements of the canary's figures
    interval: float = attrs.field(default=5.0, validator=positive)
    #: the limits the canary's requests are judged against at each step
    gates: RolloutGates = attrs.field(factory=RolloutGates)
    #: written by the gateway: where the rollout is (persisted with the config)
    status: RolloutStatus = RolloutStatus()

    def plan(self) -> RolloutPlan:
        return RolloutPlan(self.steps, self.dwell, self.interval, self.gates)

    @property
    def active(self) -> bool:
        """Whether it still moves its route's split (running or paused)."""
        return self.status.state in ACTIVE_ROLLOUT_STATES


@attrs.frozen
class Config:
    """The whole gateway config. ``version`` grows by one with every accepted change."""

    #: where traffic comes in: HTTP, tcp and udp listeners
    listeners: tuple[Listener, ...] = ()
    #: where traffic goes: groups of endpoints, and how they are picked and guarded
    clusters: tuple[Cluster, ...] = ()
    #: the admin API (this node's own: fixed while running, never in a fleet's store)
    admin: AdminConfig = AdminConfig()
    #: HTTP faults injected on the data path
    faults: tuple[Fault, ...] = ()
    #: faults applied at once (per process); over it a fault is skipped and counted
    max_active_faults: int = 1000
    #: staged rollouts, with where each is (``status``)
    rollouts: tuple[Rollout, ...] = ()
    #: where the config is kept (this node's own, like ``admin``)
    config_store: StoreConfig = StoreConfig()
    #: written by the gateway: the config's version, one more with every accepted change (a ``PUT
    #: /config`` naming another is refused, 412)
    version: int = 1

    def cluster(self, name: str) -> Cluster | None:
        for c in self.clusters:
            if c.name == name:
                return c
        return None

    def listener(self, name: str) -> Listener | None:
        for lst in self.listeners:
            if lst.name == name:
                return lst
        return None

    def rollout(self, name: str) -> Rollout | None:
        for rollout in self.rollouts:
            if rollout.name == name:
                return rollout
        return None
