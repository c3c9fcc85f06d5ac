"""The header map filters edit (in place, case-insensitive, multi-valued) and a filter's
local reply, against a plain list oracle."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.filters.api import HeaderMap, LocalReply

NAMES = st.sampled_from([b"a", b"A", b"x-id", b"X-Id", b"b"])
VALUES = st.binary(max_size=4)


def test_edits_land_in_the_wrapped_list() -> None:
    fields = [(b"Host", b"example.com"), (b"X-Tag", b"1"), (b"x-tag", b"2")]
    headers = HeaderMap(fields)
    assert headers["host"] == "example.com"
    assert headers.get_all("X-TAG") == ["1", "2"]
    headers["x-tag"] = "3"
    headers.add("via", "triogate")
    del headers["HOST"]
    assert fields == [(b"x-tag", b"3"), (b"via", b"triogate")]
    assert "Via" in headers and "host" not in headers
    with pytest.raises(KeyError):
        del headers["host"]
    headers.remove("absent")  # no error


@given(st.lists(st.tuples(NAMES, VALUES), max_size=8), NAMES, VALUES)
def test_set_leaves_one_value_where_the_first_was(
    pairs: list[tuple[bytes, bytes]], name: bytes, value: bytes
) -> None:
    headers = HeaderMap(list(pairs))
    headers.set_bytes(name, value)
    key = name.lower()
    assert [v for n, v in headers.fields if n.lower() == key] == [value]
    others = [(n, v) for n, v in pairs if n.lower() != key]
    assert [(n, v) for n, v in headers.fields if n.lower() != key] == others
    first = next((i for i, (n, _) in enumerate(pairs) if n.lower() == key), len(others))
    assert headers.fields.index((key, value)) == first


def test_a_local_reply() -> None:
    reply = LocalReply(403, "no", {"X-Why": "policy"})
    assert (reply.body_bytes(), reply.header_fields()) == (b"no", [(b"x-why", b"policy")])
    with pytest.raises(ValueError, match="200-599"):
        LocalReply(700)
