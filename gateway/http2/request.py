"""An HTTP/2 request's header list, checked strictly, as the HTTP/1.1 head the proxy uses.

Rules (RFC 9113 section 8, and what Envoy's codec refuses); any of them broken makes the
request *malformed*, a stream error (RST_STREAM PROTOCOL_ERROR), never a forward:

- pseudo-headers first, each of ``:method``, ``:scheme``, ``:path`` exactly once,
  ``:authority`` at most once, no other (``:status`` is a response's); CONNECT is not
  served (no ``:path`` to route on);
- ``:path`` starts with ``/`` (``*`` only for OPTIONS);
- field names are lower-case tokens, values carry no NUL, CR or LF and no leading or
  trailing whitespace;
- no connection-specific field: ``connection``, ``keep-alive``, ``proxy-connection``,
  ``transfer-encoding``, ``upgrade``; ``te`` only as ``trailers``;
- ``content-length`` all digits, repeated only with one value, 0 when the HEADERS
  frame ends the stream; then the DATA must add up to it (``BodyLength``);
- a ``host`` field, if any, names what ``:authority`` names.

The HTTP/1.1 head: ``:authority`` (or ``host``) becomes ``Host``, ``:path`` the
target, the version reads ``2`` (the access log's protocol); split ``cookie`` crumbs
are joined with ``; `` (RFC 9113 8.2.3). A body is framed by its length when the
client gave one, else chunked, so that trailers can follow it upstream.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import attrs

from gateway.http1.events import CHUNKED, LENGTH, NO_BODY, RequestReceived

#: fields that belong to one HTTP/1.1 connection and are malformed in HTTP/2
CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
_PSEUDO = frozenset({b":method", b":scheme", b":path", b":authority"})
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+\Z")
_BAD_VALUE = re.compile(rb"[\x00\r\n]|\A[ \t]|[ \t]\Z")


@attrs.frozen
class Malformed:
    """Why a request's header list was refused."""

    reason: str


def request_head(
    headers: Iterable[tuple[bytes, bytes]], end_stream: bool
) -> RequestReceived | Malformed:
    """The HTTP/1.1 head of an HTTP/2 request, or why it is malformed."""
    method = scheme = path = authority = None
    regular: list[tuple[bytes, bytes]] = []
    cookies: list[bytes] = []
    host = None
    content_length: int | None = None
    size = 0
    token = _TOKEN.match
    bad_value = _BAD_VALUE.search
    for name, value in headers:
        size += len(name) + len(value) + 32
        if bad_value(value) is not None:
            return Malformed(f"invalid value for {name!r}")
        if name[:1] == b":":
            if regular or cookies or host is not None:
                return Malformed(f"pseudo-header {name!r} after a regular field")
            if name not in _PSEUDO:
                return Malformed(f"unknown pseudo-header {name!r}")
            if name == b":method":
                if method is not None:
                    return Malformed("repeated :method")
                method = value
            elif name == b":scheme":
                if scheme is not None:
                    return Malformed("repeated :scheme")
                scheme = value
            elif name == b":path":
                if path is not None:
                    return Malformed("repeated :path")
                path = value
            else:
                if authority is not None:
                    return Malformed("repeated :authority")
                authority = value
            continue
        if token(name) is None:
            return Malformed(f"invalid field name {name!r}")
        if name in CONNECTION_SPECIFIC:
            return Malformed(f"connection-specific field {name!r}")
        if name == b"te":
            if value.lower() != b"trailers":
                return Malformed("te other than trailers")
            continue  # hop-by-hop: not forwarded
        if name == b"cookie":
            cookies.append(value)
            continue
        if name == b"host":
            if host is not None:
                return Malformed("repeated host")
            host = value
            continue
        if name == b"content-length":
            if not value.isdigit():
                return Malformed("invalid content-length")
            length = int(value)
            if content_length is not None and length != content_length:
                return Malformed("conflicting content-length")
            if content_length is not None:
                continue
            content_length = length
        regular.append((name, value))
    if method is None or scheme is None or path is None:
        return Malformed("missing :method, :scheme or :path")
    if method == b"CONNECT":
        return Malformed("CONNECT is not served")
    if not path.startswith(b"/") and not (path == b"*" and method == b"OPTIONS"):
        return Malformed(":path does not start with /")
    if authority is None:
        authority = host
    elif host is not None and host != authority:
        return Malformed("host differs from :authority")
    if authority is None:
        return Malformed("no :authority and no host")
    if end_stream:
        if content_length:
            return Malformed("content-length disagrees with the DATA sent")
        framing = NO_BODY
    else:
        framing = LENGTH if content_length is not None else CHUNKED
    out = [(b"host", authority)]
    out += regular
    if cookies:
        out.append((b"cookie", b"; ".join(cookies)))
    return RequestReceived(
        method=method,
        target=path,
        version=b"2",
        headers=out,
        keep_alive=True,
        framing=framing,
        content_length=content_length or 0,
        host=authority,
        head_size=size,
    )


def trailer_fields(
    headers: Iterable[tuple[bytes, bytes]],
) -> tuple[tuple[bytes, bytes], ...] | Malformed:
    """A request's trailers as chunked trailers; no pseudo-header nor framing field."""
    out = []
    for name, value in headers:
        if name[:1] == b":" or _TOKEN.match(name) is None or _BAD_VALUE.search(value):
            return Malformed(f"invalid trailer field {name!r}")
        if name in CONNECTION_SPECIFIC or name in (b"te", b"content-length", b"host"):
            return Malformed(f"trailer field {name!r} not allowed")
        out.append((name, value))
    return tuple(out)


class BodyLength:
    """The DATA of one request against its ``content-length`` (None: not given)."""

    __slots__ = ("expected", "received")

    def __init__(self, expected: int | None) -> None:
        self.expected = expected
        self.received = 0

    def add(self, size: int) -> bool:
        """``size`` more bytes came; False if that is more than announced."""
        self.received += size
        return self.expected is None or self.received <= self.expected

    def short(self) -> bool:
        """Whether more body is still to come (True when its length is unknown)."""
        return self.expected is None or self.received < self.expected

    def ended(self) -> bool:
        """The stream ended; False if its body fell short of what was announced."""
        return self.expected is None or self.received == self.expected
