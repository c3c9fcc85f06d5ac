"""HTTP/1.1 responses (and requests) as HTTP/2 header lists, and back.

Header names are lower-cased; hop-by-hop fields (``gateway.http1.serialize.HOP_BY_HOP``)
and those the message's ``Connection`` names are removed, as is ``via``'s absence
untouched (the proxy adds its own). The status goes into ``:status``, the reason phrase
is dropped (HTTP/2 has none).
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.http1.events import CHUNKED, LENGTH, NO_BODY, Headers, ResponseReceived
from gateway.http1.serialize import HOP_BY_HOP
from gateway.http2.request import CONNECTION_SPECIFIC

_DROPPED = HOP_BY_HOP | CONNECTION_SPECIFIC
_STATUS = {code: b"%d" % code for code in range(100, 600)}


def end_to_end(fields: Iterable[tuple[bytes, bytes]], connection: frozenset[bytes]) -> Headers:
    """``fields`` lower-cased, without hop-by-hop fields or those ``connection`` names."""
    out = []
    for name, value in fields:
        name = name.lower()
        if name not in _DROPPED and name not in connection:
            out.append((name, value))
    return out


def response_fields(resp: ResponseReceived) -> Headers:
    """The HTTP/2 header list of an HTTP/1.1 response head."""
    out = [(b":status", _STATUS.get(resp.status) or b"%d" % resp.status)]
    out += end_to_end(resp.headers, resp.connection)
    return out


def response_head(
    fields: Iterable[tuple[bytes, bytes]], head_request: bool
) -> ResponseReceived | None:
    """An HTTP/2 response's header list as an HTTP/1.1 head; None if it is malformed."""
    status = None
    headers: Headers = []
    length = None
    for name, value in fields:
        if name == b":status":
            if status is not None or not value.isdigit():
                return None
            status = int(value)
        elif name[:1] == b":" or name in CONNECTION_SPECIFIC:
            return None
        else:
            if name == b"content-length":
                if not value.isdigit():
                    return None
                length = int(value)
            headers.append((name, value))
    if status is None:
        return None
    if status < 200 or status in (204, 304) or head_request:
        framing = NO_BODY
    else:
        framing = LENGTH if length is not None else CHUNKED
        if framing == CHUNKED:
            headers.append((b"transfer-encoding", b"chunked"))
    return ResponseReceived(
        status=status,
        reason=b"",
        headers=headers,
        keep_alive=True,
        framing=framing,
        content_length=length or 0,
    )
