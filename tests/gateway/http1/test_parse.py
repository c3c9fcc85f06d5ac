"""The HTTP/1 parsers without sockets: bytes in, events out.

Each test feeds a parser the bytes a peer would send and checks the events it reports.
Hypothesis cuts the same bytes at any points and expects the same events, a body's
pieces joined (``merged``): what a parser reports must not depend on how its input
arrived. Malformed input raises the error the proxy answers with, its ``status_hint``
the status of the reply (400, 431, 501 for a client; 502 for an upstream).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import DownstreamProtocolError, UpstreamProtocolError, UpstreamResetError
from gateway.http1.events import (
    CHUNKED,
    LENGTH,
    MESSAGE_ENDED,
    NO_BODY,
    UNTIL_CLOSE,
    DataReceived,
    Event,
    MessageEnded,
    RequestReceived,
    ResponseReceived,
)
from gateway.http1.parse import RequestParser, ResponseParser
from tests.gateway.http1.helpers import bytewise, chunked, feed, feed_eof, merged
from tests.gateway.test_bad_input import BODY_CASES, CASES
from tests.strategies import body_pieces, splits

GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
OK_EMPTY = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
CHUNKED_POST = b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
CHUNKED_OK = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


def kinds(events: list[Event]) -> list[type]:
    return [type(e) for e in events]


def body(pieces: list[bytes]) -> list[Event]:
    """What a body of ``pieces`` comes out as, merged: one ``DataReceived``, or none."""
    return [DataReceived(b"".join(pieces))] if pieces else []


# -- requests ------------------------------------------------------------------------------


def test_a_request_is_its_head_then_its_end() -> None:
    request = b"GET /p?q=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n"
    head, end = feed(RequestParser(), request)
    assert isinstance(head, RequestReceived)
    assert (head.method, head.target, head.version) == (b"GET", b"/p?q=1", b"1.1")
    assert head.headers == [(b"Host", b"example.com"), (b"Accept", b"*/*")]
    assert (head.host, head.framing, head.keep_alive) == (b"example.com", NO_BODY, True)
    assert end == MESSAGE_ENDED


@pytest.mark.parametrize(
    ("request_bytes", "keep_alive"),
    [
        (b"GET / HTTP/1.0\r\n\r\n", False),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", True),
        (GET, True),
        (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", False),
    ],
    ids=["1.0", "1.0 keep-alive", "1.1", "1.1 close"],
)
def test_keep_alive_follows_the_version_and_connection(
    request_bytes: bytes, keep_alive: bool
) -> None:
    head, end = feed(RequestParser(), request_bytes)
    assert isinstance(head, RequestReceived)
    assert head.keep_alive is keep_alive
    assert end == MESSAGE_ENDED


def test_an_http10_request_needs_no_host() -> None:
    head, _ = feed(RequestParser(), b"GET / HTTP/1.0\r\n\r\n")
    assert isinstance(head, RequestReceived)
    assert (head.version, head.host) == (b"1.0", b"")


def test_connection_tokens_are_lower_case_whatever_the_header_says() -> None:
    request = (
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive, X-Hop\r\nconnection: TE\r\n\r\n"
    )
    head, _ = feed(RequestParser(), request)
    assert isinstance(head, RequestReceived)
    assert head.connection == frozenset({b"keep-alive", b"x-hop", b"te"})


@pytest.mark.parametrize(
    ("framing_header", "framing", "length"),
    [(b"Content-Length: 5", LENGTH, 5), (b"Transfer-Encoding: chunked", CHUNKED, -1)],
)
def test_a_request_body_comes_between_head_and_end(
    framing_header: bytes, framing: int, length: int
) -> None:
    content = b"hello" if framing == LENGTH else chunked([b"he", b"llo"])
    request = b"POST / HTTP/1.1\r\nHost: a\r\n" + framing_header + b"\r\n\r\n" + content
    head, *rest = merged(feed(RequestParser(), request))
    assert isinstance(head, RequestReceived)
    assert (head.framing, head.content_length) == (framing, length)
    assert rest == [DataReceived(b"hello"), MESSAGE_ENDED]


def test_a_request_takes_nothing_from_the_one_before_it_or_from_trailers() -> None:
    # each head's fields are noted as they arrive: none of it may leak into the next head
    first = (
        b"POST /a HTTP/1.1\r\nHost: one\r\nConnection: X-Hop\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"
        b"Host: trailer\r\nX-Sum: 9\r\n\r\n"
    )
    second = b"GET /b HTTP/1.1\r\nHost: two\r\n\r\n"
    events = merged(feed(RequestParser(), first, second))
    head1, data, end1, head2, end2 = events
    assert isinstance(head1, RequestReceived) and isinstance(head2, RequestReceived)
    assert (head1.host, head1.framing, head1.connection) == (b"one", CHUNKED, {b"x-hop"})
    assert data == DataReceived(b"hello")
    # the trailers ride on the end: a Host among them is not a second Host
    assert end1 == MessageEnded(((b"Host", b"trailer"), (b"X-Sum", b"9")))
    assert (head2.host, head2.framing, head2.content_length) == (b"two", NO_BODY, -1)
    assert head2.connection == frozenset()
    assert end2 == MESSAGE_ENDED


def test_pipelined_requests_come_out_in_order_from_one_read() -> None:
    stream = (
        b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
        b"GET /3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    events = feed(RequestParser(), stream)
    assert kinds(events) == [
        RequestReceived,
        MessageEnded,
        RequestReceived,
        DataReceived,
        MessageEnded,
        RequestReceived,
        MessageEnded,
    ]
    first, _, second, data, _, third, _ = events
    assert isinstance(first, RequestReceived)
    assert isinstance(second, RequestReceived)
    assert isinstance(third, RequestReceived)
    assert [h.target for h in (first, second, third)] == [b"/1", b"/2", b"/3"]
    assert (second.framing, second.content_length, data) == (LENGTH, 5, DataReceived(b"hello"))
    assert [h.keep_alive for h in (first, second, third)] == [True, True, False]


@given(pieces=body_pieces, upper=st.booleans(), data=st.data())
def test_a_chunked_request_cut_anywhere_gives_the_same_events(
    pieces: list[bytes], upper: bool, data: st.DataObject
) -> None:
    stream = CHUNKED_POST + chunked(pieces, upper=upper) + GET  # and the next one, pipelined
    whole = merged(feed(RequestParser(), stream))
    post, *rest, get, end = whole
    assert isinstance(post, RequestReceived) and (post.method, post.framing) == (b"POST", CHUNKED)
    assert rest == [*body(pieces), MESSAGE_ENDED]
    assert isinstance(get, RequestReceived) and get.method == b"GET" and end == MESSAGE_ENDED
    assert merged(feed(RequestParser(), *data.draw(splits(stream)))) == whole


def test_a_chunked_request_fed_one_byte_at_a_time() -> None:
    stream = CHUNKED_POST + chunked([b"hello", b" ", b"x" * 300]) + GET
    assert merged(feed(RequestParser(), *bytewise(stream))) == merged(feed(RequestParser(), stream))


def test_a_close_in_the_middle_of_a_head_is_an_error_and_between_requests_is_not() -> None:
    parser = RequestParser()
    assert kinds(feed(parser, GET)) == [RequestReceived, MessageEnded]
    assert feed_eof(parser) == []
    parser = RequestParser()
    assert feed(parser, b"GET / HTTP/1.1\r\nHo") == []
    with pytest.raises(DownstreamProtocolError) as refused:
        parser.feed_eof()
    assert refused.value.status_hint == 400


#: the end-to-end cases (test_bad_input's), and one more the parser alone refuses
HEAD_CASES = [
    *CASES,
    (
        "transfer-encoding on 1.0",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
]


@pytest.mark.parametrize("arrival", ["whole", "bytewise"])
@pytest.mark.parametrize(("name", "payload", "status"), HEAD_CASES, ids=[c[0] for c in HEAD_CASES])
def test_a_malformed_head_is_refused_with_its_status_and_never_reported(
    name: str, payload: bytes, status: int, arrival: str
) -> None:
    parser = RequestParser()
    with pytest.raises(DownstreamProtocolError) as refused:
        feed(parser, *([payload] if arrival == "whole" else bytewise(payload)))
    assert refused.value.status_hint == status
    assert not any(isinstance(e, RequestReceived) for e in parser.events)


@pytest.mark.parametrize("arrival", ["whole", "bytewise"])
@pytest.mark.parametrize(
    "payload",
    [
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
    ],
    ids=["upgrade", "CONNECT"],
)
def test_upgrade_and_connect_are_not_implemented(payload: bytes, arrival: str) -> None:
    with pytest.raises(DownstreamProtocolError) as refused:
        feed(RequestParser(), *([payload] if arrival == "whole" else bytewise(payload)))
    assert refused.value.status_hint == 501


@pytest.mark.parametrize("arrival", ["whole", "bytewise"])
@pytest.mark.parametrize(("name", "payload", "status"), BODY_CASES, ids=[c[0] for c in BODY_CASES])
def test_a_malformed_body_is_refused_with_its_status_and_never_ends(
    name: str, payload: bytes, status: int, arrival: str
) -> None:
    parser = RequestParser()
    with pytest.raises(DownstreamProtocolError) as refused:
        feed(parser, *([payload] if arrival == "whole" else bytewise(payload)))
    assert refused.value.status_hint == status
    assert MESSAGE_ENDED not in parser.events


def test_the_limits_are_the_parsers_own() -> None:
    three_headers = b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n"
    assert kinds(feed(RequestParser(max_headers=3), three_headers))[0] is RequestReceived
    for parser in (RequestParser(max_headers=2), RequestParser(max_head_bytes=20)):
        with pytest.raises(DownstreamProtocolError) as refused:
            feed(parser, three_headers)
        assert refused.value.status_hint == 431


# -- responses -----------------------------------------------------------------------------


def test_a_response_is_its_head_its_body_and_its_end() -> None:
    parser = ResponseParser()
    head, data, end = feed(parser, b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope")
    assert isinstance(head, ResponseReceived)
    assert (head.status, head.reason) == (404, b"Not Found")
    assert (head.framing, head.content_length, head.keep_alive) == (LENGTH, 4, True)
    assert (data, end) == (DataReceived(b"nope"), MESSAGE_ENDED)
    assert not parser.broken  # ready for the next response on the connection


@pytest.mark.parametrize("framing_header", [b"Content-Length: 5", b"Transfer-Encoding: chunked"])
def test_the_response_to_head_ends_with_its_head(framing_header: bytes) -> None:
    parser = ResponseParser()
    parser.expect_no_body()
    head, end = feed(parser, b"HTTP/1.1 200 OK\r\n" + framing_header + b"\r\n\r\n")
    assert isinstance(head, ResponseReceived)
    assert (head.status, head.framing) == (200, NO_BODY)
    assert head.headers == [tuple(framing_header.split(b": "))]  # kept, for the client
    assert end == MESSAGE_ENDED
    assert parser.broken  # llhttp would wait for that body: the next response needs a new parser


@given(data=st.data())
def test_the_response_to_head_cut_anywhere_gives_the_same_events(data: st.DataObject) -> None:
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: y\r\n\r\n"
    whole, cut = ResponseParser(), ResponseParser()
    whole.expect_no_body()
    cut.expect_no_body()
    assert feed(cut, *data.draw(splits(response))) == feed(whole, response)


def test_interim_responses_come_before_the_final_one_each_with_its_end() -> None:
    stream = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    )
    events = feed(ResponseParser(), stream)
    assert kinds(events) == [
        ResponseReceived,
        MessageEnded,
        ResponseReceived,
        MessageEnded,
        ResponseReceived,
        DataReceived,
        MessageEnded,
    ]
    heads = [e for e in events if isinstance(e, ResponseReceived)]
    assert [(h.status, h.framing) for h in heads] == [(100, NO_BODY), (103, NO_BODY), (200, LENGTH)]
    assert heads[1].headers == [(b"Link", b"</s.css>; rel=preload")]
    assert events[5] == DataReceived(b"ok")


def test_the_response_to_head_after_an_interim_one_ends_each() -> None:
    parser = ResponseParser()
    parser.expect_no_body()
    events = feed(
        parser, b"HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"
    )
    assert kinds(events) == [ResponseReceived, MessageEnded, ResponseReceived, MessageEnded]
    assert [e.status for e in events if isinstance(e, ResponseReceived)] == [103, 200]


@pytest.mark.parametrize("status", [b"204 No Content", b"304 Not Modified"])
@pytest.mark.parametrize("framing_header", [b"Content-Length: 5", b"Transfer-Encoding: chunked"])
def test_204_and_304_have_no_body_whatever_the_headers_say(
    status: bytes, framing_header: bytes
) -> None:
    parser = ResponseParser()
    stream = b"HTTP/1.1 " + status + b"\r\n" + framing_header + b"\r\n\r\n" + OK_EMPTY
    head, end, following, following_end = feed(parser, stream)
    assert isinstance(head, ResponseReceived)
    assert (head.framing, end) == (NO_BODY, MESSAGE_ENDED)
    # what came after the head was the next response, not a body
    assert isinstance(following, ResponseReceived) and following.status == 200
    assert following_end == MESSAGE_ENDED
    assert not parser.broken


@pytest.mark.parametrize(
    ("head_bytes", "keep_alive"),
    [
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n", False),
    ],
    ids=["1.0", "1.0 keep-alive", "1.1", "1.1 close"],
)
def test_response_keep_alive_follows_the_version_and_connection(
    head_bytes: bytes, keep_alive: bool
) -> None:
    head, data, end = feed(ResponseParser(), head_bytes + b"ok")
    assert isinstance(head, ResponseReceived)
    assert (head.keep_alive, head.framing) == (keep_alive, LENGTH)
    assert (data, end) == (DataReceived(b"ok"), MESSAGE_ENDED)


@pytest.mark.parametrize("version", [b"1.0", b"1.1"])
def test_a_body_without_a_length_ends_when_the_upstream_closes(version: bytes) -> None:
    parser = ResponseParser()
    head, data = feed(parser, b"HTTP/" + version + b" 200 OK\r\n\r\nhello ")
    assert isinstance(head, ResponseReceived)
    assert (head.framing, head.keep_alive, data) == (UNTIL_CLOSE, False, DataReceived(b"hello "))
    assert feed(parser, b"world") == [DataReceived(b"world")]
    assert feed_eof(parser) == [MESSAGE_ENDED]
    assert parser.broken


def test_a_response_takes_nothing_from_the_one_before_it() -> None:
    first = CHUNKED_OK[:-2] + b"Connection: X-Hop\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    second = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: Keep-Alive\r\n\r\nok"
    head1, data1, end1, head2, data2, end2 = feed(ResponseParser(), first, second)
    assert isinstance(head1, ResponseReceived) and isinstance(head2, ResponseReceived)
    assert (head1.framing, head1.connection) == (CHUNKED, {b"x-hop"})
    assert (head2.framing, head2.content_length) == (LENGTH, 2)
    assert head2.connection == frozenset({b"keep-alive"})
    assert (data1, data2, end1, end2) == (
        DataReceived(b"abc"),
        DataReceived(b"ok"),
        MESSAGE_ENDED,
        MESSAGE_ENDED,
    )


def test_a_close_between_responses_is_no_error() -> None:
    parser = ResponseParser()
    assert kinds(feed(parser, OK_EMPTY)) == [ResponseReceived, MessageEnded]
    assert feed_eof(parser) == []


@pytest.mark.parametrize(
    "partial",
    [
        b"HTTP/1.1 200 OK\r\nContent-Le",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab",
        CHUNKED_OK + b"5\r\nab",
    ],
    ids=["in the head", "in a sized body", "in a chunk"],
)
def test_a_response_cut_short_by_a_close_is_a_reset(partial: bytes) -> None:
    parser = ResponseParser()
    feed(parser, partial)
    with pytest.raises(UpstreamResetError) as reset:
        parser.feed_eof()
    assert reset.value.status_hint == 502


@given(pieces=body_pieces, data=st.data())
def test_a_chunked_response_cut_anywhere_gives_the_same_events(
    pieces: list[bytes], data: st.DataObject
) -> None:
    stream = CHUNKED_OK + chunked(pieces) + b"HTTP/1.1 204 No Content\r\n\r\n"
    whole = merged(feed(ResponseParser(), stream))
    ok, *rest, no_content, end = whole
    assert isinstance(ok, ResponseReceived) and (ok.status, ok.framing) == (200, CHUNKED)
    assert rest == [*body(pieces), MESSAGE_ENDED]
    assert isinstance(no_content, ResponseReceived) and no_content.reason == b"No Content"
    assert end == MESSAGE_ENDED
    assert merged(feed(ResponseParser(), *data.draw(splits(stream)))) == whole


MALFORMED_RESPONSES: list[tuple[str, bytes]] = [
    ("no status code", b"HTTP/1.1 OK\r\n\r\n"),
    ("not HTTP", b"SSH-2.0-OpenSSH_9.2\r\n"),
    ("non-numeric content-length", b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"),
    (
        "content-length and transfer-encoding",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    ("headers over 96 KiB", b"HTTP/1.1 200 OK\r\nX: " + b"v" * (97 * 1024) + b"\r\n\r\n"),
    (
        "switched protocols unasked",
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    ),
    ("invalid chunk size", CHUNKED_OK + b"zz\r\n"),
    ("bare LF", b"HTTP/1.1 200 OK\nContent-Length: 0\n\n"),
    ("space before colon", b"HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n"),
]


@pytest.mark.parametrize("arrival", ["whole", "bytewise"])
@pytest.mark.parametrize(
    ("name", "payload"), MALFORMED_RESPONSES, ids=[c[0] for c in MALFORMED_RESPONSES]
)
def test_a_malformed_response_is_a_protocol_error(name: str, payload: bytes, arrival: str) -> None:
    parser = ResponseParser()
    with pytest.raises(UpstreamProtocolError) as refused:
        feed(parser, *([payload] if arrival == "whole" else bytewise(payload)))
    assert refused.value.status_hint == 502
    assert parser.broken


# -- both ways at once ---------------------------------------------------------------------


def test_a_response_may_start_before_the_request_body_ends() -> None:
    # an upstream may answer (413, say) while the body is still going up: the two
    # directions are two parsers that share nothing, each fed as its bytes arrive
    requests, responses = RequestParser(), ResponseParser()
    head, part = feed(requests, b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhel")
    assert isinstance(head, RequestReceived) and part == DataReceived(b"hel")
    early = b"HTTP/1.1 413 Content Too Large\r\nConnection: close\r\nContent-Length: 4\r\n\r\nbig!"
    answer = feed(responses, early[:20])
    assert feed(requests, b"lo") == [DataReceived(b"lo")]
    answer += feed(responses, early[20:])
    status, data, end = answer
    assert isinstance(status, ResponseReceived)
    assert (status.status, status.keep_alive) == (413, False)
    assert (data, end) == (DataReceived(b"big!"), MESSAGE_ENDED)
    assert feed(requests, b"world") == [DataReceived(b"world"), MESSAGE_ENDED]
