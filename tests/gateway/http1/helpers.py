"""Driving the sans-IO HTTP/1 code: bytes in, events out, no sockets (as h11's tests)."""

from __future__ import annotations

from collections.abc import Iterable

from gateway.http1.events import DataReceived, Event
from gateway.http1.parse import RequestParser, ResponseParser

Parser = RequestParser | ResponseParser


def feed(parser: Parser, *pieces: bytes) -> list[Event]:
    """Feed ``pieces`` in turn; the events they made, in order (taken off the parser)."""
    for piece in pieces:
        parser.feed(piece)
    return taken(parser)


def feed_eof(parser: Parser) -> list[Event]:
    """The peer closed: the events that made."""
    parser.feed_eof()
    return taken(parser)


def taken(parser: Parser) -> list[Event]:
    events = list(parser.events)
    parser.events.clear()
    return events


def bytewise(data: bytes) -> list[bytes]:
    """``data`` one byte at a time: the finest way it can arrive."""
    return [data[i : i + 1] for i in range(len(data))]


def merged(events: Iterable[Event]) -> list[Event]:
    """``events`` with each run of ``DataReceived`` joined into one.

    How a body is cut into pieces depends on how its bytes arrived; what the pieces add
    up to does not.
    """
    out: list[Event] = []
    for event in events:
        if isinstance(event, DataReceived) and out and isinstance(out[-1], DataReceived):
            out[-1] = DataReceived(out[-1].data + event.data)
        else:
            out.append(event)
    return out


def chunked(pieces: Iterable[bytes], *, upper: bool = False) -> bytes:
    """``pieces`` as a chunked body, last chunk included (written here, not by serialize)."""
    size = b"%X" if upper else b"%x"
    return b"".join(size % len(p) + b"\r\n" + p + b"\r\n" for p in pieces) + b"0\r\n\r\n"
