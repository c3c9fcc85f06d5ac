"""The request head sent upstream: the client's end-to-end headers plus the proxy's own.

Pure: a parsed head in, bytes out, randomness from the injected ``rng``; no I/O, no
clock. The rules, in Envoy's terms:

- hop-by-hop headers (``gateway.http1.serialize.HOP_BY_HOP``) and the headers the
  request's ``Connection`` names are dropped; the body's framing is this hop's own
  (``transfer-encoding: chunked`` again for a chunked body, a ``Content-Length`` passes);
- ``x-forwarded-for``: the client's values, joined in order, then the client's address;
- ``x-forwarded-proto``: replaced by this hop's scheme;
- ``x-request-id``: passed on; when absent, a UUID4 is generated (``request_id``);
- ``via: 1.1 triogate`` is appended;
- trace context (W3C, see ``gateway.observe.tracing``): a valid ``traceparent`` passes
  untouched with its ``tracestate``; an invalid one passes untouched too unless the
  listener starts traces, which replaces it (and drops its ``tracestate``) as it starts
  one for a request without any. A trace started with a generated request id takes that
  id as its trace id, so the log line, the upstream's logs and the trace join on it.
"""

from __future__ import annotations

import random

from gateway.http1.events import CHUNKED, RequestReceived
from gateway.http1.serialize import CHUNKED_LINE, HOP_BY_HOP
from gateway.observe.tracing import new_traceparent, valid_traceparent

VIA_LINE = b"via: 1.1 triogate\r\n"

# request headers the rewrite treats specially, by lower-case name
_HOP, _XFF, _XFP, _REQUEST_ID, _TRACE = range(5)
_SPECIAL: dict[bytes, int] = {
    **dict.fromkeys(HOP_BY_HOP, _HOP),
    b"x-forwarded-for": _XFF,
    b"x-forwarded-proto": _XFP,
    b"x-request-id": _REQUEST_ID,
    b"traceparent": _TRACE,
    b"tracestate": _TRACE,
}
# a UUID4's fixed bits, set on 128 random ones: the version (4, the 13th hex digit) and
# the variant (binary 10, the top bits of the 17th)
_UUID4_KEEP = ~((0xF << 76) | (0x3 << 62)) & ((1 << 128) - 1)
_UUID4_SET = (0x4 << 76) | (0x2 << 62)


def request_id(rng: random.Random) -> bytes:
    """A UUID4 string, as Envoy generates for ``x-request-id``."""
    h = (rng.getrandbits(128) & _UUID4_KEEP | _UUID4_SET).to_bytes(16, "big").hex().encode()
    return b"-".join((h[:8], h[8:12], h[12:16], h[16:20], h[20:]))


def given_request_id(head: RequestReceived) -> bytes:
    """The client's ``x-request-id``; b"" when it sent none."""
    for name, value in head.headers:
        if name.lower() == b"x-request-id":
            return value
    return b""


def upstream_head(
    head: RequestReceived,
    client_ip: bytes,
    scheme: bytes,
    rng: random.Random,
    start_traceparent: bool = False,
    sampled: bool = True,
) -> tuple[bytes, bytes, bytes]:
    """The head for the upstream, the ``x-request-id`` in it, and its ``traceparent``.

    Returns ``(head bytes, request id, traceparent)``; the traceparent is b"" when none
    was sent or an invalid one was passed on (the access log shows only valid ones).
    ``start_traceparent`` and ``sampled`` are the listener's ``tracing`` config.
    """
    parts = [head.method, b" ", head.target, b" HTTP/1.1\r\n"]
    forwarded_for = b""
    own_id = b""
    trace: list[tuple[bytes, bytes]] | None = None
    connection = head.connection
    special = _SPECIAL
    for name, value in head.headers:
        n = name.lower()
        if n in connection:
            continue
        kind = special.get(n)
        if kind is None:
            parts += (name, b": ", value, b"\r\n")
        elif kind == _XFF:
            forwarded_for = forwarded_for + b", " + value if forwarded_for else value
        elif kind == _REQUEST_ID:
            own_id = value
            parts += (name, b": ", value, b"\r\n")
        elif kind == _TRACE:
            if trace is None:
                trace = []
            trace.append((name, value))
        # else hop-by-hop, or x-forwarded-proto (replaced: this hop's scheme)
    parts += (
        b"x-forwarded-for: ",
        forwarded_for + b", " + client_ip if forwarded_for else client_ip,
        b"\r\n",
        b"x-forwarded-proto: ",
        scheme,
        b"\r\n",
    )
    generated = not own_id
    if generated:
        own_id = request_id(rng)
        parts += (b"x-request-id: ", own_id, b"\r\n")
    if trace is None and not start_traceparent:
        traceparent = b""  # the common case: nothing to pass on or start
    else:
        traceparent = _trace_context(
            parts, trace, own_id if generated else None, rng, start_traceparent, sampled
        )
    parts.append(VIA_LINE)
    if head.framing == CHUNKED:
        parts.append(CHUNKED_LINE)
    parts.append(b"\r\n")
    return b"".join(parts), own_id, traceparent


def _trace_context(
    parts: list[bytes],
    trace: list[tuple[bytes, bytes]] | None,
    generated_id: bytes | None,
    rng: random.Random,
    start_traceparent: bool,
    sampled: bool,
) -> bytes:
    """Append the trace context headers; returns the ``traceparent`` to log (or b"")."""
    if trace is not None:
        parents = [v for n, v in trace if n.lower() == b"traceparent"]
        valid = len(parents) == 1 and valid_traceparent(parents[0])
        if valid or not start_traceparent:  # passed on untouched
            for name, value in trace:
                parts += (name, b": ", value, b"\r\n")
            # logged only when valid: the log's writer never escapes it
            return parents[0] if valid else b""
    # none, or an invalid one: a new trace, and its tracestate (if any) dropped
    trace_id = generated_id.replace(b"-", b"") if generated_id is not None else None
    traceparent = new_traceparent(rng, sampled, trace_id)
    parts += (b"traceparent: ", traceparent, b"\r\n")
    return traceparent
