"""Examples of the gRPC policy: Envoy's status mappings, ``grpc-timeout``, ``grpc-message``."""

from __future__ import annotations

import pytest

from policies.grpc import (
    RETRY_ON,
    GrpcStatus,
    grpc_statuses,
    grpc_to_http,
    http_to_grpc,
    is_grpc,
    parse_timeout,
    percent_encode,
)


@pytest.mark.parametrize(
    ("http", "grpc"),
    [
        (400, GrpcStatus.INTERNAL),
        (401, GrpcStatus.UNAUTHENTICATED),
        (403, GrpcStatus.PERMISSION_DENIED),
        (404, GrpcStatus.UNIMPLEMENTED),
        (429, GrpcStatus.UNAVAILABLE),
        (502, GrpcStatus.UNAVAILABLE),
        (503, GrpcStatus.UNAVAILABLE),
        (504, GrpcStatus.UNAVAILABLE),
        (200, GrpcStatus.UNKNOWN),
        (408, GrpcStatus.UNKNOWN),
        (500, GrpcStatus.UNKNOWN),
        (501, GrpcStatus.UNKNOWN),
    ],
)
def test_http_to_grpc_is_envoys_table(http: int, grpc: GrpcStatus) -> None:
    assert http_to_grpc(http) is grpc


@pytest.mark.parametrize(
    ("grpc", "http"),
    [
        (GrpcStatus.OK, 200),
        (GrpcStatus.CANCELLED, 499),
        (GrpcStatus.UNKNOWN, 500),
        (GrpcStatus.DEADLINE_EXCEEDED, 504),
        (GrpcStatus.RESOURCE_EXHAUSTED, 429),
        (GrpcStatus.UNIMPLEMENTED, 501),
        (GrpcStatus.INTERNAL, 500),
        (GrpcStatus.UNAVAILABLE, 503),
        (GrpcStatus.DATA_LOSS, 500),
        (GrpcStatus.UNAUTHENTICATED, 401),
        (99, 500),  # not a gRPC status: a server error
    ],
)
def test_grpc_to_http_is_envoys_table(grpc: int, http: int) -> None:
    assert grpc_to_http(grpc) == http


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (b"1H", 3600.0),
        (b"2M", 120.0),
        (b"3S", 3.0),
        (b"100m", 0.1),
        (b"250u", 250e-6),
        (b"7n", 7e-9),
        (b"0S", 0.0),
        (b"99999999S", 99999999.0),  # 8 digits: the most allowed
        (b"000000100m", None),  # 9 digits
        (b"", None),
        (b"S", None),
        (b"10", None),
        (b"10s", None),  # units are case-sensitive: s is not a unit
        (b"10 S", None),
        (b"-1S", None),
        (b"1.5S", None),
        (b"\xd9\xa1S", None),  # a non-ASCII digit
    ],
)
def test_grpc_timeout(value: bytes, seconds: float | None) -> None:
    assert parse_timeout(value) == seconds


@pytest.mark.parametrize(
    ("message", "encoded"),
    [
        ("no route", b"no route"),
        ("50% off", b"50%25 off"),
        ("caf\u00e9", b"caf%C3%A9"),
        ("line\nbreak", b"line%0Abreak"),
        ("", b""),
    ],
)
def test_grpc_message_is_percent_encoded(message: str, encoded: bytes) -> None:
    assert percent_encode(message) == encoded


@pytest.mark.parametrize(
    ("content_type", "grpc"),
    [
        (b"application/grpc", True),
        (b"application/grpc+proto", True),
        (b"Application/GRPC+json", True),
        (b"application/grpc;charset=utf-8", True),
        (b"application/grpc-web", False),
        (b"application/grpcx", False),
        (b"application/json", False),
        (b"", False),
    ],
)
def test_is_grpc(content_type: bytes, grpc: bool) -> None:
    assert is_grpc(content_type) is grpc


def test_retry_on_names_are_envoys() -> None:
    assert RETRY_ON == {
        "cancelled": GrpcStatus.CANCELLED,
        "deadline-exceeded": GrpcStatus.DEADLINE_EXCEEDED,
        "internal": GrpcStatus.INTERNAL,
        "resource-exhausted": GrpcStatus.RESOURCE_EXHAUSTED,
        "unavailable": GrpcStatus.UNAVAILABLE,
    }
    assert grpc_statuses(["5xx", "unavailable", "internal"]) == {
        GrpcStatus.UNAVAILABLE,
        GrpcStatus.INTERNAL,
    }
