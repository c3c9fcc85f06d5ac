"""Writing HTTP/1 without sockets: what ``serialize`` writes, read back by the parser.

The parser is the other end of the link (as h11's tests join two state machines): a
head, chunks or a local reply written here must parse into the events they stand for.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.http1.events import LENGTH, MESSAGE_ENDED, DataReceived, ResponseReceived
from gateway.http1.parse import ResponseParser, connection_tokens
from gateway.http1.serialize import (
    CHUNKED_LINE,
    HOP_BY_HOP,
    LAST_CHUNK,
    REASONS,
    chunk,
    local_reply,
    response_head,
    write_headers,
)
from tests.gateway.http1.helpers import feed, merged
from tests.strategies import body_pieces, header_names, header_values

#: a header the generated ones must not be, so that a read-back head frames as written
FRAMING = frozenset({b"content-length", b"transfer-encoding"})

headers = st.lists(
    st.tuples(
        st.one_of(
            header_names.filter(lambda n: n.lower() not in FRAMING),
            st.sampled_from(sorted(HOP_BY_HOP - FRAMING)),
        ),
        header_values,
    ),
    max_size=8,
)
#: statuses whose response has a body (so a chunked one is framed as written)
statuses = st.integers(200, 599).filter(lambda s: s not in (204, 304))


def test_hop_by_hop_headers_and_the_ones_connection_names_are_not_written() -> None:
    parts: list[bytes] = []
    sent = [
        (b"Date", b"today"),
        (b"Connection", b"close, X-Secret"),
        (b"Keep-Alive", b"timeout=5"),
        (b"x-secret", b"s"),
        (b"Transfer-Encoding", b"chunked"),
        (b"TE", b"trailers"),
        (b"Trailer", b"X-Sum"),
        (b"Upgrade", b"h2c"),
        (b"Proxy-Connection", b"keep-alive"),
        (b"Proxy-Authenticate", b"Basic"),
        (b"Proxy-Authorization", b"Basic eA=="),
        (b"X-Kept", b"1"),
        (b"Content-Length", b"3"),
    ]
    write_headers(parts, sent, connection_tokens(b"close, X-Secret"))
    assert b"".join(parts) == b"Date: today\r\nX-Kept: 1\r\nContent-Length: 3\r\n"


@given(
    status=statuses,
    sent=headers,
    named=st.sets(header_names.map(bytes.lower), max_size=3),
    pieces=body_pieces,
)
def test_a_written_chunked_response_reads_back_with_its_end_to_end_headers(
    status: int,
    sent: list[tuple[bytes, bytes]],
    named: set[bytes],
    pieces: list[bytes],
) -> None:
    head = response_head(status, b"", sent, frozenset(named), CHUNKED_LINE)
    stream = head + b"".join(chunk(p) for p in pieces) + LAST_CHUNK
    parsed, *rest = merged(feed(ResponseParser(), stream))
    assert isinstance(parsed, ResponseReceived)
    assert head.startswith(b"HTTP/1.1 ")
    assert parsed.status == status
    assert parsed.reason == REASONS.get(status, b"Unknown")
    kept = [(n, v) for n, v in sent if n.lower() not in HOP_BY_HOP and n.lower() not in named]
    assert parsed.headers == [*kept, (b"transfer-encoding", b"chunked")]
    assert rest == [*([DataReceived(b"".join(pieces))] if pieces else []), MESSAGE_ENDED]


def test_a_response_head_keeps_the_upstreams_reason() -> None:
    head = response_head(200, b"Fine", [], frozenset(), b"content-length: 0\r\n")
    assert head == b"HTTP/1.1 200 Fine\r\ncontent-length: 0\r\n\r\n"
    assert response_head(299, b"", [], frozenset(), b"").startswith(b"HTTP/1.1 299 Unknown\r\n")


def test_chunks_are_sized_in_hex() -> None:
    assert chunk(b"hello") == b"5\r\nhello\r\n"
    assert chunk(b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"
    assert LAST_CHUNK == b"0\r\n\r\n"


@pytest.mark.parametrize("close", [False, True])
@given(status=st.sampled_from(sorted(REASONS)), text=st.text(max_size=40))
def test_a_local_reply_reads_back_as_its_status_and_text(
    close: bool, status: int, text: str
) -> None:
    extra = [(b"retry-after", b"1")]
    head, *rest = feed(
        ResponseParser(), local_reply(status, text, close=close, extra_headers=extra)
    )
    content = text.encode() + b"\n"
    assert isinstance(head, ResponseReceived)
    assert (head.status, head.reason) == (status, REASONS[status])
    assert (head.framing, head.content_length) == (LENGTH, len(content))
    assert head.keep_alive is not close
    assert (b"content-type", b"text/plain; charset=utf-8") in head.headers
    assert (b"retry-after", b"1") in head.headers
    assert merged(rest) == [DataReceived(content), MESSAGE_ENDED]
