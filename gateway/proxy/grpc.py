"""gRPC on the data path: which streams are calls, their local replies, their deadline.

A gRPC call is an HTTP/2 stream (``gateway.proxy.http2.Http2Stream``) whose request
``content-type`` is ``application/grpc*``; the stream tells once, when it begins. For
such a stream:

- a local reply (no route, no healthy endpoint, an overflow, the breaker open, a
  timeout, a fault's abort) is a gRPC reply: HTTP 200, ``content-type:
  application/grpc``, and ``grpc-status`` / ``grpc-message`` in a *trailers-only*
  response (one HEADERS frame ending the stream). The status is Envoy's mapping of the
  HTTP status the reply would have had (``policies.grpc.http_to_grpc``), except a
  timeout (flag ``UT``), which is DEADLINE_EXCEEDED, as the client's own deadline
  would say, and a fault's ``grpc_status``, which is given;
- ``grpc-timeout`` bounds the call with the route's timeout: the smaller of the two
  (Envoy's ``max_grpc_timeout`` set to the route timeout; a route timeout of 0 leaves
  the header alone in force; a malformed header is ignored);
- the response's ``grpc-status`` (headers or trailers) is what outlier detection and
  the breaker hear, as the HTTP status Envoy maps it to (``grpc_to_http``);
- a route's gRPC ``retry_on`` conditions retry a response whose headers carry one of
  the statuses (``policies.retry``; ``retried`` is the data path's test).

Everything here is called only for HTTP/2 streams, or for a response the route may
retry on a gRPC status: an HTTP/1.1 request never pays for it.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.http1.events import Headers
from policies.grpc import GrpcStatus, http_to_grpc, is_grpc, parse_timeout, percent_encode

__all__ = ["GRPC_STATUS", "grpc_call", "grpc_status_of", "reply_fields", "retried", "timeout_of"]

GRPC_STATUS = b"grpc-status"
_CONTENT_TYPE = b"content-type"
_GRPC_TIMEOUT = b"grpc-timeout"
_STATUS_VALUES = {n: b"%d" % n for n in range(17)}


def grpc_call(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether a request with these headers is a gRPC call."""
    for name, value in headers:
        if name.lower() == _CONTENT_TYPE:
            return is_grpc(value)
    return False


def timeout_of(headers: Iterable[tuple[bytes, bytes]]) -> float | None:
    """A call's ``grpc-timeout`` in seconds; None when absent or malformed."""
    for name, value in headers:
        if name.lower() == _GRPC_TIMEOUT:
            return parse_timeout(value.strip())
    return None


def grpc_status_of(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The ``grpc-status`` among a response's headers or trailers; None without one
    (or with one that is not a number)."""
    for name, value in headers:
        if name.lower() == GRPC_STATUS:
            value = value.strip()
            return int(value) if value.isdigit() and len(value) < 6 else None
    return None


def retried(headers: Headers, relay_statuses: frozenset[int]) -> int | None:
    """A 200 response head's ``grpc-status`` if the route retries it (it is in
    ``relay_statuses`` as ``-status``: ``policies.retry``), else None."""
    status = grpc_status_of(headers)
    if status and -status in relay_statuses:
        return status
    return None


def reply_fields(
    http_status: int,
    text: str,
    flags: str,
    extra: Headers | None = None,
    grpc_status: int | None = None,
) -> Headers:
    """The HTTP/2 header list of a trailers-only gRPC local reply.

    ``http_status`` is the status an HTTP reply would have had, ``flags`` the
    request's response flags (``UT``: a timeout), ``grpc_status`` one given outright
    (a fault's abort).
    """
    if grpc_status is None:
        if "UT" in flags.split(","):
            grpc_status = GrpcStatus.DEADLINE_EXCEEDED
        else:
            grpc_status = http_to_grpc(http_status)
    fields: Headers = [
        (b":status", b"200"),
        (_CONTENT_TYPE, b"application/grpc"),
        (GRPC_STATUS, _STATUS_VALUES.get(grpc_status) or b"%d" % grpc_status),
        (b"grpc-message", percent_encode(text)),
    ]
    if extra:
        fields += extra
    return fields
