"""W3C trace context (``traceparent``, ``tracestate``) for requests crossing the gateway.

The gateway does not record spans: it passes a client's trace context on untouched, so
the services behind it continue the client's trace, and it starts one for a request
that has none (``tracing.start_traceparent``), so a request can still be followed from
the gateway inward (its ``traceparent`` is in the access log).

What the W3C Trace Context recommendation asks of a participant that does this:

- a ``traceparent`` is ``version-traceid-parentid-flags`` in lower-case hex; version
  ``ff`` is invalid, a trace or parent id of all zeros is invalid, a version ``00``
  header is exactly 55 characters, a later version at least that (its extra fields
  follow a ``-``); two ``traceparent`` headers make it invalid;
- an invalid or missing ``traceparent`` is replaced by a new one, and the
  ``tracestate`` that came with it is dropped (it describes a trace we are not in).

A trace the gateway starts for a request whose ``x-request-id`` it generated too takes
that id (a UUID4: 122 random bits) without its dashes as trace id, so the access log
line, the upstream's logs and the trace join on one value.
"""

from __future__ import annotations

import random

_HEX = b"0123456789abcdef"
_DASH = 0x2D


def valid_traceparent(value: bytes) -> bool:
    """Whether ``value`` is a ``traceparent`` this gateway may pass on."""
    n = len(value)
    if n < 55 or value[2] != _DASH or value[35] != _DASH or value[52] != _DASH:
        return False
    version = value[:2]
    if version == b"00":
        if n != 55:
            return False
    elif version == b"ff" or (n > 55 and value[55] != _DASH):
        return False
    if (value[:2] + value[3:35] + value[36:52] + value[53:55]).translate(None, _HEX):
        return False  # something other than lower-case hex
    return value[3:35] != b"0" * 32 and value[36:52] != b"0" * 16


def new_traceparent(
    rng: random.Random, sampled: bool = True, trace_id: bytes | None = None
) -> bytes:
    """A version-00 ``traceparent`` with random (never all-zero) ids.

    ``trace_id``, when given, is 32 lower-case hex digits, not all zero: the gateway
    passes its own ``x-request-id`` without the dashes, so a trace it starts and the
    request's log line share one id.
    """
    if trace_id is None:
        trace_id = b"%032x" % (rng.getrandbits(128) or 1)
    return b"00-%s-%016x-%s" % (trace_id, rng.getrandbits(64) or 1, b"01" if sampled else b"00")
