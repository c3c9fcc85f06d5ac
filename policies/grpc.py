"""gRPC over HTTP/2: status codes, their HTTP mappings, ``grpc-timeout`` and retry names.

Theory of operation
-------------------
A gRPC call is an HTTP/2 request whose ``content-type`` is ``application/grpc`` (or
``application/grpc+proto`` and so on). Its outcome is not the HTTP status (200 for
every call that reached a server) but ``grpc-status``, sent in the trailers, or in the
headers of a *trailers-only* response (one HEADERS frame that ends the stream: what a
server, or this gateway, sends when it has no message to return).

What the gateway decides with, all pure:

    http_to_grpc       the gRPC status of a local reply that would have had an HTTP
                       status (Envoy's ``Grpc::Utility::httpToGrpcStatus``, after
                       grpc's ``doc/http-grpc-status-mapping.md``)
    grpc_to_http       the HTTP status a gRPC status counts as for outlier detection
                       and the breaker (Envoy's ``Grpc::Utility::grpcToHttpStatus``:
                       UNAVAILABLE is a 503, INTERNAL, UNKNOWN and DATA_LOSS a 500,
                       DEADLINE_EXCEEDED a 504, UNIMPLEMENTED a 501)
    parse_timeout      ``grpc-timeout`` in seconds (at most 8 digits and one unit of
                       ``H M S m u n``); None when absent or malformed, which the
                       gateway ignores, as Envoy does
    percent_encode     ``grpc-message``'s encoding (the gRPC HTTP/2 spec: bytes outside
                       printable ASCII, and ``%``, as ``%XX`` of the UTF-8)
    RETRY_ON           ``retry_on`` names of gRPC statuses (Envoy's
                       ``x-envoy-retry-grpc-on`` values) -> the status they retry
    is_grpc            whether a request's ``content-type`` makes it a gRPC call

No I/O, no clock: a timeout is returned as seconds for the caller to add to its own
``now``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Final

__all__ = [
    "RETRY_ON",
    "GrpcStatus",
    "grpc_statuses",
    "grpc_to_http",
    "http_to_grpc",
    "is_grpc",
    "parse_timeout",
    "percent_encode",
]


class GrpcStatus(enum.IntEnum):
    """gRPC's status codes (``grpc/doc/statuscodes.md``)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


#: Envoy's ``httpToGrpcStatus``; every other status is UNKNOWN
_HTTP_TO_GRPC: Final[dict[int, GrpcStatus]] = {
    400: GrpcStatus.INTERNAL,
    401: GrpcStatus.UNAUTHENTICATED,
    403: GrpcStatus.PERMISSION_DENIED,
    404: GrpcStatus.UNIMPLEMENTED,
    429: GrpcStatus.UNAVAILABLE,
    502: GrpcStatus.UNAVAILABLE,
    503: GrpcStatus.UNAVAILABLE,
    504: GrpcStatus.UNAVAILABLE,
}

#: Envoy's ``grpcToHttpStatus``; a status outside the table is a 500
_GRPC_TO_HTTP: Final[dict[int, int]] = {
    GrpcStatus.OK: 200,
    GrpcStatus.CANCELLED: 499,
    GrpcStatus.UNKNOWN: 500,
    GrpcStatus.INVALID_ARGUMENT: 400,
    GrpcStatus.DEADLINE_EXCEEDED: 504,
    GrpcStatus.NOT_FOUND: 404,
    GrpcStatus.ALREADY_EXISTS: 409,
    GrpcStatus.PERMISSION_DENIED: 403,
    GrpcStatus.RESOURCE_EXHAUSTED: 429,
    GrpcStatus.FAILED_PRECONDITION: 400,
    GrpcStatus.ABORTED: 409,
    GrpcStatus.OUT_OF_RANGE: 400,
    GrpcStatus.UNIMPLEMENTED: 501,
    GrpcStatus.INTERNAL: 500,
    GrpcStatus.UNAVAILABLE: 503,
    GrpcStatus.DATA_LOSS: 500,
    GrpcStatus.UNAUTHENTICATED: 401,
}

#: ``retry_on`` names of gRPC statuses (Envoy's ``retry_grpc_on``), and what each retries
RETRY_ON: Final[dict[str, GrpcStatus]] = {
    "cancelled": GrpcStatus.CANCELLED,
    "deadline-exceeded": GrpcStatus.DEADLINE_EXCEEDED,
    "internal": GrpcStatus.INTERNAL,
    "resource-exhausted": GrpcStatus.RESOURCE_EXHAUSTED,
    "unavailable": GrpcStatus.UNAVAILABLE,
}

#: nanoseconds per unit of ``grpc-timeout`` (one division at the end rounds once)
_UNITS: Final[dict[int, int]] = {
    ord("H"): 3600 * 10**9,
    ord("M"): 60 * 10**9,
    ord("S"): 10**9,
    ord("m"): 10**6,
    ord("u"): 10**3,
    ord("n"): 1,
}
_MAX_DIGITS: Final = 8

#: bytes ``grpc-message`` carries as they are: printable ASCII except ``%``
_UNRESERVED: Final = frozenset(range(0x20, 0x7F)) - {ord("%")}


def http_to_grpc(status: int) -> GrpcStatus:
    """The gRPC status of a local reply that would have had HTTP ``status``."""
    return _HTTP_TO_GRPC.get(status, GrpcStatus.UNKNOWN)


def grpc_to_http(status: int) -> int:
    """The HTTP status a response's ``grpc-status`` counts as (for outlier detection)."""
    return _GRPC_TO_HTTP.get(status, 500)


def grpc_statuses(retry_on: Iterable[str]) -> frozenset[GrpcStatus]:
    """The gRPC statuses among ``retry_on``'s conditions (other names are left out)."""
    return frozenset(RETRY_ON[name] for name in retry_on if name in RETRY_ON)


def parse_timeout(value: bytes) -> float | None:
    """``grpc-timeout`` (``b"100m"``: 100 ms) in seconds; None if it is malformed
    (empty, not 1 to 8 ASCII digits, or an unknown unit)."""
    if not 2 <= len(value) <= _MAX_DIGITS + 1:
        return None
    unit = _UNITS.get(value[-1])
    digits = value[:-1]
    if unit is None or not digits.isdigit():
        return None
    # int / int is correctly rounded; int / 1e9 would round the product first (an
    # 8-digit count of hours is over 2**53 nanoseconds)
    return int(digits) * unit / 10**9


def percent_encode(message: str) -> bytes:
    """``message`` as a ``grpc-message`` value: UTF-8, each byte outside printable
    ASCII (and ``%`` itself) as ``%XX``."""
    raw = message.encode()
    if all(byte in _UNRESERVED for byte in raw):
        return raw
    return b"".join(bytes((byte,)) if byte in _UNRESERVED else b"%%%02X" % byte for byte in raw)


def is_grpc(content_type: bytes) -> bool:
    """Whether a request with this ``content-type`` is a gRPC call (``application/grpc``,
    or ``application/grpc+proto``, ``;charset``... after it; any case)."""
    lowered = content_type.lower()
    if not lowered.startswith(b"application/grpc"):
        return False
    rest = lowered[len(b"application/grpc") :]
    return not rest or rest[0] in b"+;"
