"""Active health checks: one check of one endpoint, and the loop that repeats it.

Theory of operation: a cluster with a ``health_check`` has one checking task per
endpoint, started in the cluster actor's nursery and cancelled by the actor (the
endpoint left, or the cluster's ``health_check`` changed or went). The task only
checks and reports: each result goes to the actor's inbox as ``HealthChecked``; the
actor owns each endpoint's ``policies.health.HealthThresholds`` and decides what the
results add up to. Checks of different endpoints run on their own schedules
(``next_check_delay``: the interval plus a random jitter, so a cluster's checks spread
out instead of arriving together).

One check:

    http   connect, send ``GET path`` with ``Host`` (the cluster's name unless
           ``host`` is set), ``Connection: close`` and ``User-Agent:
           triogate-health-check``; it passes iff the status is in
           ``expected_statuses`` (the body is not read).
    tcp    connect; send ``send`` (if any); if ``expect`` is set, read until those
           bytes have arrived (anywhere in what was read).
    grpc   connect and speak HTTP/2 (prior knowledge in cleartext, h2 by ALPN over the
           cluster's tls, which needs ``protocol: http2``): call
           ``/grpc.health.v1.Health/Check`` with ``service`` (``:authority`` as http's
           Host); it passes iff the response is HTTP 200 with ``grpc-status`` 0 and
           its message says SERVING. The two protobuf messages are one optional field
           each, written and read here by hand (``health_request``,
           ``serving_status``): no generated code.

Each check is bounded by ``timeout`` (a cancel scope here, at the call site); a check
that runs out of time fails with detail ``timeout``. Failures carry a short detail for
the admin API: ``status 503``, ``connect refused``, ``closed before a response``...

A cluster that carried no request since an endpoint's last check is checked again
after ``no_traffic_interval`` instead of ``interval``, as Envoy does. "Traffic" is the
cluster's ``upstream_rq_total`` moving; in a primary with worker processes that is the
workers' sum, refreshed once a second, so a cluster's first traffic shortens the wait
from the check after it on.
"""

from __future__ import annotations

import errno
import random
import time
from collections.abc import Awaitable, Callable

import attrs
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import trio

from gateway.config import Address
from gateway.errors import GatewayError
from gateway.http1.events import ResponseReceived
from gateway.http1.parse import ResponseParser
from gateway.netio import SocketIO, open_connection
from gateway.observe.stats.scopes import ClusterStats
from gateway.tls import TlsOrigin, TlsStream
from policies.health import HealthCheckConfig, next_check_delay, status_expected

__all__ = [
    "USER_AGENT",
    "CheckOutcome",
    "HealthChecked",
    "check_endpoint",
    "health_request",
    "run_endpoint_checks",
    "serving_status",
]

USER_AGENT = "triogate-health-check"
#: the most a check reads while looking for a response head or ``expect``
MAX_READ = 64 * 1024


@attrs.frozen
class CheckOutcome:
    """One check's result: whether it passed, why not, and when it ended (Unix time)."""

    passed: bool
    detail: str
    at: float


@attrs.frozen
class HealthChecked:
    """Report (checker -> cluster actor): a check of the endpoint at ``key`` ended.

    ``config`` is the health check it was made under: a report from a checker the
    actor has since replaced is ignored.
    """

    key: str
    config: HealthCheckConfig
    outcome: CheckOutcome


#: one check of one endpoint: (address, health check, cluster name) -> its outcome
Check = Callable[[Address, HealthCheckConfig, str], Awaitable[CheckOutcome]]


async def check_endpoint(
    address: Address, config: HealthCheckConfig, cluster: str, tls: TlsOrigin | None = None
) -> CheckOutcome:
    """Check ``address`` once, bounded by ``config.timeout``; never raises ``Exception``.

    ``tls``: the cluster's, for a cluster with ``tls`` (checked over TLS, as Envoy's
    checks use the cluster's transport socket; a failed handshake fails the check).
    """
    passed, detail = False, "timeout"
    with trio.move_on_after(config.timeout):
        try:
            if config.type == "http":
                passed, detail = await _check_http(address, config, cluster, tls)
            elif config.type == "grpc":
                passed, detail = await _check_grpc(address, config, cluster, tls)
            else:
                passed, detail = await _check_tcp(address, config, tls)
        except OSError as e:
            detail = _connect_detail(e)
        except trio.BrokenResourceError:  # the stream's own translation of a reset
            detail = "connection reset"
        except GatewayError as e:  # a malformed response
            detail = str(e)
    return CheckOutcome(passed, detail, time.time())


async def _connect(address: Address, tls: TlsOrigin | None) -> SocketIO | TlsStream:
    stream = await open_connection(address.host, address.port)
    if tls is None:
        return stream
    return await tls.handshake(stream, address)  # ``UpstreamTlsError``: a GatewayError


async def _check_http(
    address: Address, config: HealthCheckConfig, cluster: str, tls: TlsOrigin | None
) -> tuple[bool, str]:
    host = config.host if config.host is not None else cluster
    request = (
        f"GET {config.path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
        f"User-Agent: {USER_AGENT}\r\n\r\n"
    ).encode()
    stream = await _connect(address, tls)
    try:
        await stream.send_all(request)
        parser = ResponseParser()
        read = 0
        while True:
            data = await stream.receive_some(MAX_READ)
            if not data:
                return False, "closed before a response"
            read += len(data)
            parser.feed(data)
            for event in parser.events:
                if isinstance(event, ResponseReceived) and event.status >= 200:
                    status = event.status
                    return status_expected(config, status), f"status {status}"
            parser.events.clear()
            if read > MAX_READ:
                return False, "no response head within 64 KiB"
    finally:
        stream.close()


#: ``grpc.health.v1.HealthCheckResponse.ServingStatus`` names, by number
SERVING_STATUSES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
SERVING = 1
HEALTH_CHECK_PATH = b"/grpc.health.v1.Health/Check"
_H2_CLIENT = h2.config.H2Configuration(client_side=True, header_encoding=None)


def health_request(service: str) -> bytes:
    """A length-prefixed ``HealthCheckRequest``: field 1 (``service``, a string) when
    not empty, else the empty message."""
    name = service.encode()
    message = b"\x0a" + _varint(len(name)) + name if name else b""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def serving_status(body: bytes) -> int | None:
    """The ``status`` (field 1, an enum) of the length-prefixed ``HealthCheckResponse``
    in ``body``; 0 (UNKNOWN) when the field is absent; None if ``body`` is not one
    uncompressed message."""
    if len(body) < 5 or body[0] != 0 or int.from_bytes(body[1:5], "big") != len(body) - 5:
        return None
    message, at, status = body[5:], 0, 0
    try:
        while at < len(message):
            key, at = _read_varint(message, at)
            field, wire = key >> 3, key & 7
            if wire == 0:
                value, at = _read_varint(message, at)
                if field == 1:
                    status = value
            elif wire == 2:
                size, at = _read_varint(message, at)
                at += size
            elif wire in (1, 5):
                at += 8 if wire == 1 else 4
            else:
                return None
    except IndexError:
        return None
    return status if at == len(message) else None


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7
        if shift > 63:
            raise IndexError("varint too long")


async def _check_grpc(
    address: Address, config: HealthCheckConfig, cluster: str, tls: TlsOrigin | None
) -> tuple[bool, str]:
    host = config.host if config.host is not None else cluster
    conn = h2.connection.H2Connection(config=_H2_CLIENT)
    conn.initiate_connection()
    conn.send_headers(
        1,
        [
            (b":method", b"POST"),
            (b":scheme", b"https" if tls is not None else b"http"),
            (b":path", HEALTH_CHECK_PATH),
            (b":authority", host.encode()),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
            (b"user-agent", USER_AGENT.encode()),
        ],
    )
    conn.send_data(1, health_request(config.service), end_stream=True)
    stream = await _connect(address, tls)  # over TLS: h2 offered by ALPN (protocol: http2)
    try:
        await stream.send_all(conn.data_to_send())
        fields: dict[bytes, bytes] = {}
        body = bytearray()
        while True:
            data = await stream.receive_some(MAX_READ)
            if not data:
                return False, "closed before a response"
            try:
                events = conn.receive_data(data)
            except h2.exceptions.ProtocolError as e:
                return False, f"HTTP/2 protocol error: {e}"
            for event in events:
                if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    fields.update(event.headers or ())
                    status = fields.get(b":status", b"200")
                    if status != b"200":
                        return False, f"status {status.decode()}"
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data or b""
                    if len(body) > MAX_READ:
                        return False, "response over 64 KiB"
                    conn.acknowledge_received_data(event.flow_controlled_length or 0, 1)
                elif isinstance(event, h2.events.StreamEnded):
                    return _grpc_verdict(fields, bytes(body))
                elif isinstance(event, h2.events.StreamReset):
                    return False, "stream reset"
                elif isinstance(event, h2.events.ConnectionTerminated):
                    return False, "connection closed (GOAWAY)"
            out = conn.data_to_send()
            if out:
                await stream.send_all(out)
    finally:
        stream.close()


def _grpc_verdict(fields: dict[bytes, bytes], body: bytes) -> tuple[bool, str]:
    grpc_status = fields.get(b"grpc-status")
    if grpc_status != b"0":
        status = "none" if grpc_status is None else grpc_status.decode("latin-1")
        return False, f"grpc-status {status}"
    serving = serving_status(body)
    if serving is None:
        return False, "malformed HealthCheckResponse"
    return serving == SERVING, SERVING_STATUSES.get(serving, f"status {serving}")


async def _check_tcp(
    address: Address, config: HealthCheckConfig, tls: TlsOrigin | None
) -> tuple[bool, str]:
    stream = await _connect(address, tls)
    try:
        send, expect = config.send_bytes, config.expect_bytes
        if send:
            await stream.send_all(send)
        if not expect:
            return True, "connected"
        received = bytearray()
        while expect not in received:
            data = await stream.receive_some(MAX_READ)
            if not data:
                return False, "closed before the expected bytes"
            received += data
            if len(received) > MAX_READ:
                return False, "expected bytes not within 64 KiB"
        return True, "expected bytes received"
    finally:
        stream.close()


def _connect_detail(error: OSError) -> str:
    if error.errno == errno.ECONNREFUSED:
        return "connect refused"
    if error.errno in (errno.ECONNRESET, errno.EPIPE):
        return "connection reset"
    return f"connect failed: {error.strerror or error}"


async def run_endpoint_checks(
    key: str,
    address: Address,
    config: HealthCheckConfig,
    cluster: str,
    report: trio.MemorySendChannel[HealthChecked],
    rng: random.Random,
    stats: ClusterStats | None = None,
    check: Check = check_endpoint,
) -> None:
    """Check one endpoint now and then every ``next_check_delay``, reporting each result
    to ``report`` (the cluster actor's inbox), until cancelled.

    ``stats``: the cluster's, whose ``upstream_rq_total`` tells whether it carried
    traffic since the last check (None: take it that it did). ``check`` performs one
    check (``check_endpoint``; a test passes its own).
    """
    seen = -1 if stats is None else stats.upstream_rq_total
    while True:
        outcome = await check(address, config, cluster)
        try:
            await report.send(HealthChecked(key, config, outcome))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return  # the actor is gone
        had_traffic = True
        if stats is not None:
            total = stats.upstream_rq_total
            had_traffic, seen = total != seen, total
        await trio.sleep(next_check_delay(config, rng, had_traffic))
