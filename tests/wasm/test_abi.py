"""The ABI's serialized header map, and the dict-backed metrics sink."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.filters.wasm import DictMetricsSink, MetricKind
from gateway.filters.wasm.abi import decode_pairs, encode_pairs

field = st.binary(max_size=20).filter(lambda b: b"\0" not in b)


def test_the_spec_s_example() -> None:
    # {"a": "1", "b": "22"}, as spec v0.2.1 draws it
    encoded = encode_pairs([(b"a", b"1"), (b"b", b"22")])
    assert encoded == (
        b"\x02\0\0\0" + b"\x01\0\0\0\x01\0\0\0" + b"\x01\0\0\0\x02\0\0\0" + b"a\x001\x00b\x0022\x00"
    )
    assert decode_pairs(encoded) == [(b"a", b"1"), (b"b", b"22")]


@given(st.lists(st.tuples(field, field), max_size=8))
def test_pairs_round_trip(pairs: list[tuple[bytes, bytes]]) -> None:
    assert decode_pairs(encode_pairs(pairs)) == pairs


def test_an_empty_map_has_two_spellings() -> None:
    assert encode_pairs([]) == b""
    assert decode_pairs(b"") == decode_pairs(b"\0") == []


@pytest.mark.parametrize(
    "data",
    [b"\x01\0", b"\x05\0\0\0", b"\x01\0\0\0\x09\0\0\0\x01\0\0\0ab\0c\0", b"\x01"],
)
def test_a_map_that_does_not_parse(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode_pairs(data)


def test_dict_metrics_sink() -> None:
    sink = DictMetricsSink()
    counter = sink.define(MetricKind.COUNTER, "requests")
    assert sink.define(MetricKind.COUNTER, "requests") == counter
    gauge = sink.define(MetricKind.GAUGE, "in_flight")
    histogram = sink.define(MetricKind.HISTOGRAM, "sizes")
    sink.increment(counter, 2)
    sink.increment(gauge, 3)
    sink.increment(gauge, -1)
    sink.record(histogram, 7)
    sink.record(histogram, 9)
    assert (sink.get(counter), sink.get(gauge), sink.get(histogram)) == (2, 2, 2)
    assert sink.values["sizes"] == [7, 9]
    with pytest.raises(ValueError):
        sink.increment(counter, -1)
    with pytest.raises(ValueError):
        sink.define(MetricKind.GAUGE, "requests")
    with pytest.raises(KeyError):
        sink.get(99)
    assert sink["never_defined"] == 0
