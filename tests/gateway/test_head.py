"""The upstream head rewrite (gateway.proxy.head): a parsed head in, bytes out."""

from __future__ import annotations

import random
import re

from hypothesis import given
from hypothesis import strategies as st

from gateway.http1.events import CHUNKED, LENGTH, NO_BODY, RequestReceived
from gateway.http1.parse import RequestParser
from gateway.observe.tracing import valid_traceparent
from gateway.proxy.head import request_id, upstream_head

UUID4 = re.compile(rb"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
VALID_PARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def parse(raw: bytes) -> RequestReceived:
    parser = RequestParser()
    parser.feed(raw)
    head = parser.events.popleft()
    assert isinstance(head, RequestReceived)
    return head


def request(*headers: str, method: str = "GET", body: str = "") -> RequestReceived:
    lines = "".join(f"{h}\r\n" for h in ("Host: example.com", *headers))
    return parse(f"{method} /p?q=1 HTTP/1.1\r\n{lines}\r\n{body}".encode())


def rewrite(
    head: RequestReceived, *, start: bool = False, seed: int = 1
) -> tuple[list[tuple[bytes, bytes]], bytes, bytes]:
    """(the upstream head's header lines, request id, traceparent)."""
    raw, rid, traceparent = upstream_head(
        head, b"10.0.0.9", b"https", random.Random(seed), start_traceparent=start
    )
    assert raw.endswith(b"\r\n\r\n")
    request_line, *lines = raw[:-4].split(b"\r\n")
    assert request_line == head.method + b" " + head.target + b" HTTP/1.1"
    fields = [(n, v) for n, _, v in (line.partition(b": ") for line in lines)]
    return fields, rid, traceparent


def names(fields: list[tuple[bytes, bytes]]) -> list[bytes]:
    return [n.lower() for n, _ in fields]


def test_hop_by_hop_and_connection_named_headers_are_dropped() -> None:
    fields, _, _ = rewrite(
        request(
            "Connection: keep-alive, X-Secret",
            "X-Secret: s",
            "Keep-Alive: timeout=5",
            "Proxy-Authorization: basic x",
            "TE: trailers",
            "Upgrade: h2c",
            "X-Kept: yes",
        )
    )
    assert (b"X-Kept", b"yes") in fields and (b"Host", b"example.com") in fields
    dropped = {b"connection", b"x-secret", b"keep-alive", b"proxy-authorization", b"te"}
    assert not dropped & set(names(fields)) and b"upgrade" not in names(fields)


def test_forwarded_for_is_appended_and_proto_replaced() -> None:
    fields, _, _ = rewrite(
        request("X-Forwarded-For: 1.1.1.1", "x-forwarded-for: 2.2.2.2", "X-Forwarded-Proto: http")
    )
    assert (b"x-forwarded-for", b"1.1.1.1, 2.2.2.2, 10.0.0.9") in fields
    assert [v for n, v in fields if n.lower() == b"x-forwarded-proto"] == [b"https"]
    fields, _, _ = rewrite(request())
    assert (b"x-forwarded-for", b"10.0.0.9") in fields


def test_a_request_id_is_generated_when_absent_and_kept_when_given() -> None:
    fields, rid, _ = rewrite(request())
    assert UUID4.match(rid) and (b"x-request-id", rid) in fields
    assert rewrite(request(), seed=1)[1] == rid  # from the injected rng alone
    fields, rid, _ = rewrite(request("X-Request-Id: abc"))
    assert rid == b"abc" and [v for n, v in fields if n.lower() == b"x-request-id"] == [b"abc"]


@given(seed=st.integers(0, 2**32))
def test_generated_request_ids_are_uuid4(seed: int) -> None:
    assert UUID4.match(request_id(random.Random(seed)))


def test_via_ends_the_headers_and_chunked_bodies_are_framed_again() -> None:
    fields, _, _ = rewrite(request())
    assert fields[-1] == (b"via", b"1.1 triogate")
    head = request("Transfer-Encoding: chunked", method="POST")
    assert head.framing == CHUNKED
    fields, _, _ = rewrite(head)
    assert fields[-2:] == [(b"via", b"1.1 triogate"), (b"transfer-encoding", b"chunked")]
    head = request("Content-Length: 3", method="POST", body="abc")
    assert head.framing == LENGTH
    fields, _, _ = rewrite(head)
    assert (b"Content-Length", b"3") in fields and b"transfer-encoding" not in names(fields)


def test_no_trace_context_is_added_unless_asked() -> None:
    fields, _, traceparent = rewrite(request())
    assert traceparent == b"" and b"traceparent" not in names(fields)


def test_a_valid_traceparent_passes_untouched_with_its_tracestate() -> None:
    for start in (False, True):
        fields, _, traceparent = rewrite(
            request(f"traceparent: {VALID_PARENT.decode()}", "tracestate: a=1"), start=start
        )
        assert traceparent == VALID_PARENT
        assert (b"traceparent", VALID_PARENT) in fields and (b"tracestate", b"a=1") in fields


def test_an_invalid_traceparent_passes_unlogged_or_is_replaced() -> None:
    bad = request("traceparent: 00-zz-nothex-01", "tracestate: a=1")
    fields, _, traceparent = rewrite(bad)
    assert traceparent == b"" and (b"traceparent", b"00-zz-nothex-01") in fields
    fields, _, traceparent = rewrite(bad, start=True)
    assert valid_traceparent(traceparent) and (b"traceparent", traceparent) in fields
    assert b"tracestate" not in names(fields)  # it described a trace we are not in


def test_a_started_trace_takes_a_generated_request_id_as_trace_id() -> None:
    _, rid, traceparent = rewrite(request(), start=True)
    assert traceparent.split(b"-")[1] == rid.replace(b"-", b"")
    _, rid, traceparent = rewrite(request("x-request-id: given"), start=True)
    assert rid == b"given" and valid_traceparent(traceparent)
    assert traceparent.split(b"-")[1] != b"given"


def test_a_body_less_request_stays_body_less() -> None:
    head = request()
    assert head.framing == NO_BODY
    fields, _, _ = rewrite(head)
    assert not {b"content-length", b"transfer-encoding"} & set(names(fields))
