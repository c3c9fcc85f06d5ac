"""The proxy-wasm ABI's numbers and its one wire format, with no runtime attached.

The values are the ABI's (spec ``abi-versions/v0.2.1``, the same in 0.2.0): what a
module returns from a callback (``Action``), what a hostcall returns (``Status``), and
the ids a module names maps, buffers and streams by. ``encode_pairs``/``decode_pairs``
are the ABI's serialized header map: a little-endian ``u32`` count, then a ``u32`` key
size and value size per pair, then each key and value followed by a NUL byte.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence

__all__ = [
    "Action",
    "BufferType",
    "LogLevel",
    "MapType",
    "MetricKind",
    "PeerType",
    "Status",
    "StreamType",
    "decode_pairs",
    "encode_pairs",
]


class Action(enum.IntEnum):
    """What a stream callback asks of the host (``proxy_action_t``)."""

    CONTINUE = 0
    PAUSE = 1


class Status(enum.IntEnum):
    """A hostcall's result (``proxy_status_t``)."""

    OK = 0
    NOT_FOUND = 1
    BAD_ARGUMENT = 2
    SERIALIZATION_FAILURE = 3
    PARSE_FAILURE = 4
    INVALID_MEMORY_ACCESS = 6
    EMPTY = 7
    CAS_MISMATCH = 8
    INTERNAL_FAILURE = 10
    UNIMPLEMENTED = 12


class LogLevel(enum.IntEnum):
    TRACE = 0
    DEBUG = 1
    INFO = 2
    WARN = 3
    ERROR = 4
    CRITICAL = 5


class MapType(enum.IntEnum):
    HTTP_REQUEST_HEADERS = 0
    HTTP_REQUEST_TRAILERS = 1
    HTTP_RESPONSE_HEADERS = 2
    HTTP_RESPONSE_TRAILERS = 3
    GRPC_CALL_INITIAL_METADATA = 4
    GRPC_CALL_TRAILING_METADATA = 5
    HTTP_CALL_RESPONSE_HEADERS = 6
    HTTP_CALL_RESPONSE_TRAILERS = 7


class BufferType(enum.IntEnum):
    HTTP_REQUEST_BODY = 0
    HTTP_RESPONSE_BODY = 1
    DOWNSTREAM_DATA = 2
    UPSTREAM_DATA = 3
    HTTP_CALL_RESPONSE_BODY = 4
    GRPC_CALL_MESSAGE = 5
    VM_CONFIGURATION = 6
    PLUGIN_CONFIGURATION = 7
    FOREIGN_FUNCTION_ARGUMENTS = 8


class StreamType(enum.IntEnum):
    HTTP_REQUEST = 0
    HTTP_RESPONSE = 1
    DOWNSTREAM = 2
    UPSTREAM = 3


class PeerType(enum.IntEnum):
    """Who closed a connection (``proxy_on_*_connection_close``)."""

    UNKNOWN = 0
    LOCAL = 1
    REMOTE = 2


class MetricKind(enum.IntEnum):
    COUNTER = 0
    GAUGE = 1
    HISTOGRAM = 2


_U32 = struct.Struct("<I")


def encode_pairs(pairs: Sequence[tuple[bytes, bytes]]) -> bytes:
    """``pairs`` in the ABI's serialized map form (an empty map is empty bytes)."""
    if not pairs:
        return b""
    sizes = [_U32.pack(len(pairs))]
    data = []
    for name, value in pairs:
        sizes.append(struct.pack("<II", len(name), len(value)))
        data.append(name)
        data.append(b"\0")
        data.append(value)
        data.append(b"\0")
    return b"".join(sizes) + b"".join(data)


def decode_pairs(data: bytes) -> list[tuple[bytes, bytes]]:
    """A serialized map's pairs; raises ``ValueError`` when it does not parse.

    An empty map may come as no bytes or as one NUL byte (the spec allows both).
    """
    if len(data) <= 1:
        if data not in (b"", b"\0"):
            raise ValueError("a serialized map is at least 4 bytes")
        return []
    if len(data) < 4:
        raise ValueError("a serialized map is at least 4 bytes")
    (count,) = _U32.unpack_from(data, 0)
    offset = 4 + 8 * count
    if offset > len(data):
        raise ValueError(f"a map of {count} pairs cannot fit in {len(data)} bytes")
    pairs = []
    for i in range(count):
        name_size, value_size = struct.unpack_from("<II", data, 4 + 8 * i)
        end = offset + name_size + 1 + value_size + 1
        if end > len(data):
            raise ValueError("a serialized map's pair runs past its end")
        name = data[offset : offset + name_size]
        value_at = offset + name_size + 1
        value = data[value_at : value_at + value_size]
        pairs.append((name, value))
        offset = end
    return pairs
