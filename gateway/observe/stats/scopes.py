"""The stats of one listener, one cluster and one endpoint, as slotted attrs objects.

Theory of operation: each stat is an ``int`` attribute (or a ``Histogram``, or a list of
counts per status class), written by the data path with a plain increment: every task
runs on the event loop's thread, so no lock is needed and a request never waits. Which
attribute is what (counter, gauge, histogram, status classes) is field metadata, read
by the exporters, so adding a stat is one line here (later issues add theirs: breaker
overflow, ejections, faults injected, health check results).

Names follow Envoy's: ``downstream_rq_2xx`` is ``downstream_rq_xx[2]``. Counters only
grow until ``reset``; gauges go up and down and survive a reset; a gauge whose truth
lives elsewhere (``upstream_cx_active`` is the pools' open connections) is refreshed
from there when the stats are read, never kept in step on the data path.

Each scope also keeps a short history of itself (``frames``), one frame per tick of the
registry, for the figures "over a recent window": quantiles, success rate, and the
per-cluster time series the dashboard draws.
"""

from __future__ import annotations

import json
from collections import deque
from typing import TYPE_CHECKING, Any, ClassVar, Final

import attrs

from gateway.observe.stats.histogram import Histogram
from policies.limits import CircuitBreakerThresholds

if TYPE_CHECKING:
    from gateway.cluster.breaker import ClusterBreaker
    from gateway.cluster.outcomes import OutcomeBuffer

COUNTER: Final = "counter"
GAUGE: Final = "gauge"
HISTOGRAM: Final = "histogram"
#: a list of counts indexed by ``status // 100``; exported as ``<name>_1xx`` ... ``_5xx``
STATUS_CLASSES: Final = "status_classes"
#: the status classes exported (Envoy's: 1xx to 5xx)
CLASSES = (1, 2, 3, 4, 5)


def counter(name: str | None = None, *, control: bool = False) -> Any:
    """A counter field; ``name`` is its exported name when the attribute's cannot be
    (Envoy's dotted ``health_check.attempt``); ``control``: see ``control_stats``."""
    return attrs.field(default=0, metadata=_metadata(COUNTER, name, control))


def gauge(name: str | None = None, *, control: bool = False) -> Any:
    return attrs.field(default=0, metadata=_metadata(GAUGE, name, control))


def _metadata(kind: str, name: str | None, control: bool) -> dict[str, Any]:
    metadata: dict[str, Any] = {"kind": kind}
    if name is not None:
        metadata["name"] = name
    if control:
        metadata["control"] = True
    return metadata


_HISTOGRAM = {"kind": HISTOGRAM}
_STATUS_CLASSES = {"kind": STATUS_CLASSES}


def _ten_zeros() -> list[int]:
    # one slot per status // 100: an upstream may send any three-digit status, 100-999
    return [0] * 10


def class_name(field: str, cls: int) -> str:
    """``downstream_rq_xx``, 2 -> ``downstream_rq_2xx``."""
    return f"{field.removesuffix('xx')}{cls}xx"


@attrs.frozen
class Frame:
    """A scope's figures at one tick: the counters and histogram counts that windows need."""

    t: float
    values: tuple[int, ...]
    histograms: tuple[tuple[int, ...], ...]


@attrs.define(slots=True, eq=False)
class Scope:
    """What every stats scope has besides its stats: a name and its recent frames."""

    name: str
    #: one frame per registry tick, the oldest at most one window old
    frames: deque[Frame] = attrs.field(factory=deque, init=False)
    #: the name as a JSON string, ready for access log lines
    quoted: bytes = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.quoted = json.dumps(self.name).encode()

    #: counters computed from others (properties), exported like counters
    DERIVED_COUNTERS: ClassVar[tuple[str, ...]] = ()

    def counters(self) -> dict[str, int]:
        """Every counter by name, status classes spelled out."""
        out: dict[str, int] = {}
        for f in self.DERIVED_COUNTERS:
            out[f] = getattr(self, f)
        for f in _fields(type(self), COUNTER):
            out[exported_name(type(self), f)] = getattr(self, f)
        for f in _fields(type(self), STATUS_CLASSES):
            counts = getattr(self, f)
            for c in CLASSES:
                out[class_name(f, c)] = counts[c]
        return out

    def gauges(self) -> dict[str, int]:
        return {exported_name(type(self), f): getattr(self, f) for f in _fields(type(self), GAUGE)}

    def histograms(self) -> dict[str, Histogram]:
        return {f: getattr(self, f) for f in _fields(type(self), HISTOGRAM)}

    def reset(self) -> None:
        """Counters and histograms to zero; gauges are left alone (they are levels)."""
        for f in _fields(type(self), COUNTER):
            setattr(self, f, 0)
        for f in _fields(type(self), STATUS_CLASSES):
            counts = getattr(self, f)
            for i in range(len(counts)):
                counts[i] = 0
        for h in self.histograms().values():
            h.reset()
        self.frames.clear()

    # -- windows -----------------------------------------------------------------------

    def frame_values(self) -> tuple[int, ...]:
        """The counters a frame keeps: the ones window figures are computed from."""
        return ()

    def take_frame(self, now: float, window: float) -> Frame:
        """Record a frame at ``now``; frames older than needed for ``window`` go."""
        frame = Frame(
            now,
            self.frame_values(),
            tuple(h.snapshot() for h in self.histograms().values()),
        )
        frames = self.frames
        frames.append(frame)
        # keep the newest frame at least ``window`` old: it is the window's start
        while len(frames) > 1 and frames[1].t <= now - window:
            frames.popleft()
        return frame

    def window_start(self) -> Frame | None:
        return self.frames[0] if self.frames else None


def _fields(cls: type, kind: str) -> tuple[str, ...]:
    cache = _FIELDS.get(cls)
    if cache is None:
        cache = {}
        for f in attrs.fields(cls):
            k = f.metadata.get("kind")
            if k is not None:
                cache.setdefault(k, []).append(f.name)
        _FIELDS[cls] = cache
    return tuple(cache.get(kind, ()))


_FIELDS: dict[type, dict[str, list[str]]] = {}


def stat_names(cls: type, kind: str) -> tuple[str, ...]:
    """The attribute names of ``cls``'s stats of one kind (``COUNTER``, ``GAUGE``, ...)."""
    return _fields(cls, kind)


def exported_name(cls: type, field: str) -> str:
    """The name a stat is exported under (after the scope's prefix): its attribute's
    name unless its field says otherwise."""
    name: str = attrs.fields_dict(cls)[field].metadata.get("name", field)
    return name


def control_stats(cls: type) -> frozenset[str]:
    """The attribute names of stats that the control side counts (health checks run in
    the primary process): with worker processes they are the primary's own, not a sum
    of the workers' (``merge.absorb`` leaves them alone)."""
    return frozenset(f.name for f in attrs.fields(cls) if f.metadata.get("control"))


@attrs.define(slots=True, eq=False)
class ListenerStats(Scope):
    """``listener.<name>.*``: what clients did and got on one listener.

    A request is counted when it ends, in one slot of ``downstream_rq_xx``: its status
    class, or slot 0 when no response was sent (the client left). So
    ``downstream_rq_total`` is derived, the sum of the slots, and the data path makes
    one increment per request instead of two.
    """

    DERIVED_COUNTERS = ("downstream_rq_total",)

    downstream_cx_total: int = counter()
    downstream_cx_active: int = gauge()
    #: bytes read from clients and written to them (TCP listeners; counted per chunk)
    downstream_cx_rx_bytes_total: int = counter()
    downstream_cx_tx_bytes_total: int = counter()
    downstream_rq_xx: list[int] = attrs.field(factory=_ten_zeros, metadata=_STATUS_CLASSES)
    #: malformed requests answered 400/431
    downstream_cx_protocol_error: int = counter()
    #: request heads that did not arrive within ``header_timeout`` (408)
    downstream_rq_header_timeout: int = counter()
    #: from the first byte of a request's head to the end of its response
    downstream_rq_time: Histogram = attrs.field(factory=Histogram, metadata=_HISTOGRAM)
    #: access log lines handed to the writer, and dropped because it fell behind
    access_log_written: int = counter()
    access_log_dropped: int = counter()
    #: HTTP faults (``gateway.faults``), Envoy's names: delays and aborts injected,
    #: responses slowed, faults skipped over ``max_active_faults``, faults being applied
    fault_delays_injected: int = counter("fault.delays_injected")
    fault_aborts_injected: int = counter("fault.aborts_injected")
    fault_response_rl_injected: int = counter("fault.response_rl_injected")
    fault_faults_overflow: int = counter("fault.faults_overflow")
    fault_active_faults: int = gauge("fault.active_faults")
    #: request copies to shadow clusters (``gateway.proxy.mirror``): answered; failed
    #: (connect, reset, no answer in time); dropped (too many in flight); not made (a
    #: streamed or too large body)
    mirror_rq_sent: int = counter()
    mirror_rq_failed: int = counter()
    mirror_rq_dropped: int = counter()
    mirror_rq_body_skipped: int = counter()
    # -- udp listeners (``gateway.proxy.udp``), Envoy's udp_proxy names -------------
    #: client sessions started, and open now
    downstream_sess_total: int = counter()
    downstream_sess_active: int = gauge()
    #: datagrams and bytes from clients (rx) and to clients (tx)
    downstream_sess_rx_datagrams: int = counter()
    downstream_sess_tx_datagrams: int = counter()
    downstream_sess_rx_bytes: int = counter()
    downstream_sess_tx_bytes: int = counter()
    #: datagrams of new clients dropped at ``max_sessions``
    downstream_sess_overflow: int = counter()
    #: datagrams not passed on: no endpoint for a new session; the listener socket's
    #: read or send failed (kernel buffer full, ICMP error)
    downstream_sess_no_route: int = counter()
    downstream_sess_rx_errors: int = counter()
    downstream_sess_tx_errors: int = counter()
    #: sessions closed after ``idle_timeout`` with no datagram either way
    idle_timeout: int = counter()
    #: datagrams dropped by ``packet_loss`` toxics, delayed by ``latency`` toxics, and
    #: dropped because a direction already held ``udp.DELAY_QUEUE`` delayed datagrams
    toxic_datagrams_dropped: int = counter("toxics.datagrams_dropped")
    toxic_datagrams_delayed: int = counter("toxics.datagrams_delayed")
    toxic_delay_overflow: int = counter("toxics.delay_overflow")
    #: HTTP/2 (``gateway.proxy.http2``), Envoy's ``http2.*`` names: streams reset by the
    #: client and by the gateway; connections closed for opening streams over
    #: ``max_concurrent_streams``, for a header block over ``max_header_list_kb``; streams
    #: refused for malformed headers or a body unlike its ``content-length``; GOAWAYs
    #: sent (drain, error, flood); streams open; requests with trailers; and the floods
    #: answered with GOAWAY ENHANCE_YOUR_CALM (``gateway.http2.defence``): rapid reset
    #: (CVE-2023-44487), CONTINUATION, PING/SETTINGS, empty DATA frames
    http2_rx_reset: int = counter("http2.rx_reset")
    http2_tx_reset: int = counter("http2.tx_reset")
    http2_too_many_streams: int = counter("http2.too_many_streams")
    http2_header_overflow: int = counter("http2.header_overflow")
    http2_rx_messaging_error: int = counter("http2.rx_messaging_error")
    http2_goaway_sent: int = counter("http2.goaway_sent")
    http2_streams_active: int = gauge("http2.streams_active")
    http2_trailers: int = counter("http2.trailers")
    http2_rapid_reset: int = counter("http2.rapid_reset_flood")
    http2_continuation_flood: int = counter("http2.continuation_flood")
    http2_control_flood: int = counter("http2.inbound_control_frames_flood")
    http2_empty_frames_flood: int = counter("http2.inbound_empty_frames_flood")

    # TLS termination (Envoy's listener ``ssl.*``): handshakes done (resumed ones also in
    # ``session_reused``), failed (a timeout, a bad or unverified certificate), clients
    # without a certificate (accepted: ``no_certificate``; refused: ``fail_verify_no_cert``),
    # certificates that did not verify or carry none of ``allowed_sans``, and the
    # certificate files' reloads taken and refused
    ssl_handshake: int = counter("ssl.handshake")
    ssl_session_reused: int = counter("ssl.session_reused")
    ssl_connection_error: int = counter("ssl.connection_error")
    ssl_no_certificate: int = counter("ssl.no_certificate")
    ssl_fail_verify_no_cert: int = counter("ssl.fail_verify_no_cert")
    ssl_fail_verify_error: int = counter("ssl.fail_verify_error")
    ssl_fail_verify_san: int = counter("ssl.fail_verify_san")
    ssl_certificate_update_success: int = counter("ssl.certificate_update_success")
    ssl_certificate_update_rejected: int = counter("ssl.certificate_update_rejected")

    @property
    def downstream_rq_total(self) -> int:
        return sum(self.downstream_rq_xx)

    def frame_values(self) -> tuple[int, ...]:
        return (sum(self.downstream_rq_xx), self.downstream_rq_xx[5])


@attrs.define(slots=True, eq=False)
class EndpointStats(Scope):
    """``cluster.<name>.endpoint.<address>.*``: one endpoint's attempts and outcomes.

    ``rq_error`` counts the attempts that ended in a 5xx, whether the endpoint sent it or
    the attempt failed (connect failure, reset, timeout): what a success rate is made of.
    """

    rq_total: int = counter()
    rq_error: int = counter()
    rq_timeout: int = counter()
    cx_total: int = counter()
    cx_connect_fail: int = counter()
    #: refreshed when read, from the endpoint's runtime: requests in flight (connected),
    #: open connections, and of those the idle ones in the pool
    rq_active: int = gauge()
    cx_active: int = gauge()
    cx_idle: int = gauge()

    def frame_values(self) -> tuple[int, ...]:
        return (self.rq_total, self.rq_error)

    def success_rate(self) -> float | None:
        """Share of recent attempts that did not fail; None without recent attempts."""
        start = self.window_start()
        total, errors = self.rq_total, self.rq_error
        if start is not None and start.values[0] <= total and start.values[1] <= errors:
            total -= start.values[0]
            errors -= start.values[1]
        return None if total <= 0 else 1.0 - errors / total


@attrs.define(slots=True, eq=False)
class ClusterStats(Scope):
    """``cluster.<name>.*``: the requests a cluster carried, per attempt.

    Every attempt on an endpoint is counted when it ends, in one slot of
    ``upstream_rq_xx``: the upstream's status class, or the local reply's when the
    attempt failed (connect failure 502, overflow 503, reset 502, timeout 504), as Envoy
    charges aborted upstream requests, or slot 0 when the client went away first.
    ``upstream_rq_total`` is derived, the sum of the slots; attempts in
    flight are ``upstream_rq_active`` and ``upstream_rq_pending_active``. A request with
    no endpoint to pick counts only in ``upstream_cx_none_healthy``.
    """

    upstream_cx_total: int = counter()
    upstream_cx_connect_fail: int = counter()
    upstream_cx_connect_timeout: int = counter()
    # TLS origination (Envoy's cluster ``ssl.*``): handshakes done and failed (the
    # reason is logged), and the TLS files' reloads taken and refused
    ssl_handshake: int = counter("ssl.handshake")
    ssl_connection_error: int = counter("ssl.connection_error")
    ssl_certificate_update_success: int = counter("ssl.certificate_update_success")
    ssl_certificate_update_rejected: int = counter("ssl.certificate_update_rejected")
    #: a connection was needed and ``pool.max_connections`` were busy, or the
    #: cluster's ``circuit_breakers.max_connections`` were open (UO)
    upstream_cx_overflow: int = counter()
    #: refused at once (UO, 503) by ``circuit_breakers.max_requests`` or
    #: ``max_pending_requests`` (Envoy counts both here)
    upstream_rq_pending_overflow: int = counter()
    #: refused at once by the open classic breaker (HTTP: a 503 with
    #: ``x-triogate-breaker: open``; TCP: the client connection closed)
    breaker_rq_rejected: int = counter("breaker.rq_rejected")
    upstream_cx_none_healthy: int = counter()
    #: TCP client connections closed because every connect attempt failed (Envoy's
    #: tcp_proxy ``max_connect_attempts`` reached)
    upstream_cx_connect_attempts_exceeded: int = counter()
    #: bytes read from the cluster's endpoints and written to them (TCP proxy)
    upstream_cx_rx_bytes_total: int = counter()
    upstream_cx_tx_bytes_total: int = counter()
    upstream_rq_xx: list[int] = attrs.field(factory=_ten_zeros, metadata=_STATUS_CLASSES)
    upstream_rq_timeout: int = counter()
    #: tries that outlived the route's ``per_try_timeout`` (not in ``upstream_rq_timeout``)
    upstream_rq_per_try_timeout: int = counter()
    #: retries made; retries whose answer was final (a success, or an outcome the route
    #: does not retry); requests whose every try failed the way retries are for (URX);
    #: retries the rules allowed but the cluster's ``max_retries`` or ``retry_budget``
    #: refused (the outcome before stands)
    upstream_rq_retry: int = counter()
    upstream_rq_retry_success: int = counter()
    upstream_rq_retry_limit_exceeded: int = counter()
    upstream_rq_retry_overflow: int = counter()
    #: from an attempt's start (connection asked for) to the end of its response
    upstream_rq_time: Histogram = attrs.field(factory=Histogram, metadata=_HISTOGRAM)
    #: refreshed from the endpoints when read: open connections, requests in flight,
    #: requests waiting for a connection to be established
    upstream_cx_active: int = gauge()
    upstream_rq_active: int = gauge()
    upstream_rq_pending_active: int = gauge()
    #: 1 while open connections / requests in flight / waiting for a connection / retries
    #: in flight are at their ``circuit_breakers`` threshold (refreshed when read; with
    #: workers, the workers' sum)
    circuit_breakers_cx_open: int = gauge("circuit_breakers.cx_open")
    circuit_breakers_rq_open: int = gauge("circuit_breakers.rq_open")
    circuit_breakers_rq_pending_open: int = gauge("circuit_breakers.rq_pending_open")
    circuit_breakers_rq_retry_open: int = gauge("circuit_breakers.rq_retry_open")
    #: 1 while the classic breaker is open or half-open (refreshed when read); with
    #: workers each has its own breaker, so the sum is how many workers have it open
    breaker_open: int = gauge("breaker.open")
    #: active health checks made, passed and failed, and endpoints healthy now (Envoy's
    #: ``health_check.*``); counted by the cluster actor, in the primary process
    health_check_attempt: int = counter("health_check.attempt", control=True)
    health_check_success: int = counter("health_check.success", control=True)
    health_check_failure: int = counter("health_check.failure", control=True)
    health_check_healthy: int = gauge("health_check.healthy", control=True)
    #: outlier detection (Envoy's ``outlier_detection.*``), counted by the cluster actor
    #: that runs the detector, in the primary process: endpoints ejected now, ejections
    #: made (in all and by detector), and ejections the cap refused
    outlier_detection_ejections_active: int = gauge(
        "outlier_detection.ejections_active", control=True
    )
    outlier_detection_ejections_enforced_total: int = counter(
        "outlier_detection.ejections_enforced_total", control=True
    )
    outlier_detection_ejections_enforced_consecutive_5xx: int = counter(
        "outlier_detection.ejections_enforced_consecutive_5xx", control=True
    )
    outlier_detection_ejections_enforced_consecutive_gateway_failure: int = counter(
        "outlier_detection.ejections_enforced_consecutive_gateway_failure", control=True
    )
    outlier_detection_ejections_enforced_success_rate: int = counter(
        "outlier_detection.ejections_enforced_success_rate", control=True
    )
    outlier_detection_ejections_enforced_failure_percentage: int = counter(
        "outlier_detection.ejections_enforced_failure_percentage", control=True
    )
    outlier_detection_ejections_overflow: int = counter(
        "outlier_detection.ejections_overflow", control=True
    )
    #: attempts' results dropped on their way to the detector (a full ``OutcomeBuffer``);
    #: counted where the buffer is, so with workers the workers' sum
    outlier_detection_outcomes_dropped: int = counter("outlier_detection.outcomes_dropped")
    #: wake-ups of the detector (an endpoint's run of failures at the threshold) that
    #: the cluster actor's inbox had no room for: those results waited for the timer
    outlier_detection_wakes_dropped: int = counter("outlier_detection.wakes_dropped")
    #: with workers: a worker's report of results the primary's cluster actor had no
    #: room for (its inbox full)
    outlier_detection_outcome_batches_dropped: int = counter(
        "outlier_detection.outcome_batches_dropped", control=True
    )
    #: not a stat: where the data path leaves each attempt's result for the outlier
    #: detector (``gateway.cluster.outcomes``); None: the cluster has no outlier detection
    outcomes: OutcomeBuffer | None = attrs.field(default=None)
    #: not stats: the cluster's ``circuit_breakers`` thresholds (set by its cluster
    #: actor), and the data path's counts they are checked against: requests in flight
    #: to the cluster, and requests waiting for a new connection (this process's)
    thresholds: CircuitBreakerThresholds = attrs.field(factory=CircuitBreakerThresholds)
    rq_in_flight: int = attrs.field(default=0)
    rq_connecting: int = attrs.field(default=0)
    #: not a stat: retries in flight (from the decision to retry, backoff included, to
    #: the end of the retry), checked against ``max_retries`` or the retry budget
    rq_retry_active: int = attrs.field(default=0)
    #: not a stat: the cluster's classic breaker in this process
    #: (``gateway.cluster.breaker``); None: the cluster has no ``breaker``
    breaker: ClusterBreaker | None = attrs.field(default=None)

    #: per endpoint address; an endpoint's stats outlive its runtime (a pool replaced by
    #: a config change, a restarted cluster actor) and go when it leaves the cluster
    endpoints: dict[str, EndpointStats] = attrs.field(factory=dict)
    # -- udp sessions (``gateway.proxy.udp``), Envoy's udp_proxy cluster names: a session
    # -- to an endpoint also counts in ``upstream_cx_total`` (and the endpoint's ``cx_total``)
    #: datagrams from the endpoints (rx) and to them (tx); sends and receives that failed
    #: (an ICMP error from the endpoint, a full kernel buffer)
    udp_sess_rx_datagrams: int = counter("udp.sess_rx_datagrams")
    udp_sess_tx_datagrams: int = counter("udp.sess_tx_datagrams")
    udp_sess_rx_errors: int = counter("udp.sess_rx_errors")
    udp_sess_tx_errors: int = counter("udp.sess_tx_errors")

    def endpoint(self, key: str) -> EndpointStats:
        """The stats of the endpoint at address ``key``, made on first use."""
        stats = self.endpoints.get(key)
        if stats is None:
            stats = self.endpoints[key] = EndpointStats(key)
        return stats

    DERIVED_COUNTERS = ("upstream_rq_total",)

    @property
    def upstream_rq_total(self) -> int:
        return sum(self.upstream_rq_xx)

    def frame_values(self) -> tuple[int, ...]:
        return (sum(self.upstream_rq_xx), self.upstream_cx_none_healthy, self.upstream_rq_xx[5])


@attrs.define(slots=True, eq=False)
class FilterStats(Scope):
    """``listener.<listener>.http_filter.<filter>.*`` (or ``network_filter``): how one
    filter of one listener failed requests or connections. ``name`` is ``(listener,
    kind, filter)`` joined by ``/``.

    ``error``: a Python filter's hook raised (the request got a 500, or the filter was
    skipped with ``fail_open``); the ``wasm.*`` counters are a proxy-wasm module's
    failures by kind (``gateway.filters.wasm``): a trap, a callback over
    ``max_ms_per_call``, a module over ``max_memory_mb``.
    """

    error: int = counter()
    #: requests whose ``on_log`` hooks were dropped (the listener's queue of them full)
    log_dropped: int = counter()
    wasm_trap: int = counter("wasm.trap")
    wasm_timeout: int = counter("wasm.timeout")
    wasm_oom: int = counter("wasm.oom")


@attrs.define(slots=True, eq=False)
class RouteClusterStats(Scope):
    """``listener.<listener>.route.<route>.cluster.<cluster>.*``: the requests one route
    sent to one of its clusters, counted per request when it ends (not per attempt), as
    its client saw it: the status class of the response (an upstream's, or the local
    reply of a failure: 502, 503, 504), or slot 0 when the client went away first, and
    the request's time.

    Kept only for the routes a staged rollout watches (``gateway.control.rollouts``
    judges its canary by them); ``name`` is ``(listener, route, cluster)`` joined by
    ``/``.
    """

    upstream_rq_xx: list[int] = attrs.field(factory=_ten_zeros, metadata=_STATUS_CLASSES)
    #: from the first byte of the request's head to the end of its response
    upstream_rq_time: Histogram = attrs.field(factory=Histogram, metadata=_HISTOGRAM)

    def record(self, status: int, ms: float) -> None:
        """One request ended (status 0: the client went away first)."""
        self.upstream_rq_xx[status // 100] += 1
        self.upstream_rq_time.record(ms)
