"""What the HTTP/1 parsers report, named in the past tense like h2's events.

Headers are kept as a list of ``(name, value)`` byte pairs in wire order, names as the
peer sent them (comparisons use ``name.lower()``).
"""

from __future__ import annotations

import attrs

Headers = list[tuple[bytes, bytes]]
#: a chunked message's trailer fields, in wire order (empty for nearly every message)
Trailers = tuple[tuple[bytes, bytes], ...]

#: how a message's body is framed on the wire
NO_BODY = 0
LENGTH = 1
CHUNKED = 2
UNTIL_CLOSE = 3


@attrs.define(slots=True)
class RequestReceived:
    """A request's head arrived and passed every check."""

    method: bytes
    target: bytes
    version: bytes
    headers: Headers
    keep_alive: bool
    framing: int
    content_length: int
    host: bytes
    #: bytes of request line and headers, as received
    head_size: int
    #: header names listed in ``Connection`` (hop-by-hop for this message), lower case
    connection: frozenset[bytes] = frozenset()


@attrs.define(slots=True)
class ResponseReceived:
    """A response's head arrived (1xx heads arrive as their own event).

    No HTTP version: the proxy answers in HTTP/1.1 whatever the upstream spoke, and
    llhttp's ``keep_alive`` already says what an HTTP/1.0 upstream meant (httptools
    formats the version as a string on every call: a cost per response for nothing).
    """

    status: int
    reason: bytes
    headers: Headers
    keep_alive: bool
    framing: int
    content_length: int
    #: header names listed in ``Connection`` (hop-by-hop for this message), lower case
    connection: frozenset[bytes] = frozenset()


@attrs.define(slots=True)
class DataReceived:
    """A piece of a message body (chunked framing already removed)."""

    data: bytes


@attrs.define(slots=True)
class MessageEnded:
    """The current message's body is complete; a chunked one may end with trailers."""

    trailers: Trailers = ()


#: the end of a message without trailers (one object for all of them)
MESSAGE_ENDED = MessageEnded()

Event = RequestReceived | ResponseReceived | DataReceived | MessageEnded
