"""The gRPC policy against oracles: ``grpc-timeout`` and ``grpc-message`` over any input."""

from __future__ import annotations

import re
from fractions import Fraction
from urllib.parse import unquote_to_bytes

from hypothesis import given
from hypothesis import strategies as st

from policies.grpc import GrpcStatus, grpc_to_http, http_to_grpc, parse_timeout, percent_encode

UNITS = {
    "H": Fraction(3600),
    "M": Fraction(60),
    "S": Fraction(1),
    "m": Fraction(1, 10**3),
    "u": Fraction(1, 10**6),
    "n": Fraction(1, 10**9),
}
WELL_FORMED = re.compile(rb"([0-9]{1,8})([HMSmun])")


@given(st.integers(0, 99_999_999), st.sampled_from(sorted(UNITS)))
def test_every_well_formed_timeout_parses_to_its_value(amount: int, unit: str) -> None:
    assert parse_timeout(f"{amount}{unit}".encode()) == float(amount * UNITS[unit])


@given(
    st.binary(max_size=12) | st.text(alphabet="0123456789HMSmunsx .-", max_size=11).map(str.encode)
)
def test_a_timeout_parses_iff_it_is_well_formed(value: bytes) -> None:
    """The oracle: the spec's grammar ``TimeoutValue TimeoutUnit`` (1-8 ASCII digits)."""
    match = WELL_FORMED.fullmatch(value)
    parsed = parse_timeout(value)
    if match is None:
        assert parsed is None
    else:
        assert parsed == float(int(match[1]) * UNITS[match[2].decode()])


@given(st.text())
def test_grpc_message_round_trips_and_is_printable_ascii(message: str) -> None:
    encoded = percent_encode(message)
    assert all(0x20 <= byte < 0x7F for byte in encoded)
    assert unquote_to_bytes(encoded) == message.encode("utf-8", "surrogatepass")


@given(st.integers(100, 599))
def test_a_local_reply_maps_to_a_status_that_maps_back_to_an_error(status: int) -> None:
    grpc = http_to_grpc(status)
    assert grpc is not GrpcStatus.OK
    assert grpc_to_http(grpc) >= 400
