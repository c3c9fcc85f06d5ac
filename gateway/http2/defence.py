"""Defences against the known HTTP/2 floods, as pure counters.

Theory of operation: the connection loop spends one unit of a ``FloodBudget`` per
suspicious frame and answers GOAWAY ENHANCE_YOUR_CALM when a budget is spent. A budget
is a token bucket: ``burst`` units, refilled at ``per_second`` (``now`` is any
monotonic clock in seconds, passed in). Legitimate clients stay far below:

- rapid reset (CVE-2023-44487): streams the client opens and resets; nghttp2, Go and
  Envoy cap them per connection the same way, by rate;
- PING and SETTINGS frames (each costs an ACK: the outbound control flood);
- empty DATA frames without END_STREAM (Envoy's
  ``max_consecutive_inbound_frames_with_empty_payload``, here by rate).

``HeaderBlockGuard`` reads frame headers (9 bytes each) ahead of the h2 state machine,
which buffers a header block whole before it decodes anything: a block whose
HEADERS and CONTINUATION payloads exceed ``max_bytes`` (the listener's
``max_header_list_kb``; HPACK never makes a block smaller than its fields' name and
value bytes, so a block over it is over the list size too) or that spans more than
``max_continuations`` CONTINUATION frames is refused before it is buffered (the
CONTINUATION flood, CVE-2024-27316 and its kin).
"""

from __future__ import annotations

import enum

import attrs

#: frame types and the END_HEADERS flag (RFC 9113 section 6)
HEADERS = 0x1
CONTINUATION = 0x9
END_HEADERS = 0x4

RESET_BURST, RESET_PER_SECOND = 200, 100.0
CONTROL_BURST, CONTROL_PER_SECOND = 100, 20.0
EMPTY_DATA_BURST, EMPTY_DATA_PER_SECOND = 100, 20.0
#: CONTINUATION frames one header block may span (nghttp2 stops at 8; browsers use 0-1)
MAX_CONTINUATIONS = 16


@attrs.define
class FloodBudget:
    """A token bucket: ``spend`` is False once the frames come faster than allowed."""

    burst: float
    per_second: float
    tokens: float = attrs.field(init=False)
    last: float = attrs.field(default=0.0)

    def __attrs_post_init__(self) -> None:
        self.tokens = self.burst

    def spend(self, now: float) -> bool:
        """One more frame at ``now``; False when the budget is exhausted."""
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.per_second)
        self.last = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


def reset_budget(now: float) -> FloodBudget:
    return FloodBudget(RESET_BURST, RESET_PER_SECOND, last=now)


def control_budget(now: float) -> FloodBudget:
    return FloodBudget(CONTROL_BURST, CONTROL_PER_SECOND, last=now)


def empty_data_budget(now: float) -> FloodBudget:
    return FloodBudget(EMPTY_DATA_BURST, EMPTY_DATA_PER_SECOND, last=now)


class BlockVerdict(enum.Enum):
    """What ``HeaderBlockGuard.feed`` found wrong."""

    OVERSIZED = "header block over max_header_list_kb"
    CONTINUATION_FLOOD = "too many CONTINUATION frames in one header block"


class HeaderBlockGuard:
    """Follows the frames of one connection's inbound bytes (after the preface)."""

    __slots__ = (
        "_head",
        "_skip",
        "block_bytes",
        "continuations",
        "in_block",
        "max_bytes",
        "max_continuations",
    )

    def __init__(self, max_bytes: int, max_continuations: int = MAX_CONTINUATIONS) -> None:
        self.max_bytes = max_bytes
        self.max_continuations = max_continuations
        self._head = b""  # a frame header split across reads
        self._skip = 0  # payload bytes of the current frame still to come
        self.in_block = False
        self.block_bytes = 0
        self.continuations = 0

    def feed(self, data: bytes) -> BlockVerdict | None:
        """Account for ``data``; a verdict when a header block is refused."""
        pos = 0
        end = len(data)
        while True:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
            if pos >= end:
                return None
            need = 9 - len(self._head)
            self._head += data[pos : pos + need]
            pos += need
            if len(self._head) < 9:
                return None
            head = self._head
            self._head = b""
            length = int.from_bytes(head[:3], "big")
            kind = head[3]
            self._skip = length
            if kind == HEADERS or (kind == CONTINUATION and self.in_block):
                if kind == HEADERS:
                    self.block_bytes = 0
                    self.continuations = 0
                else:
                    self.continuations += 1
                    if self.continuations > self.max_continuations:
                        return BlockVerdict.CONTINUATION_FLOOD
                self.block_bytes += length
                if self.block_bytes > self.max_bytes:
                    return BlockVerdict.OVERSIZED
                self.in_block = not head[4] & END_HEADERS
