"""HTTP fault decisions: which requests get a delay, an abort or a slow response.

Theory of operation
-------------------
A ``FaultRule`` is the decision part of one configured fault (``faults[]`` in the
config): a ``percent`` of the requests it matches, a ``first_n`` cap, and what it
injects: a ``delay`` (``FaultDelay``: fixed, uniform or lognormal seconds), an
``abort`` (``FaultAbort``: a status, or a broken response), a ``response_rate_kbps``
(the response body trickles at that many KiB/s, Envoy's unit) and whether Envoy's
request headers may ask for faults (``headers_enabled``).

``FaultRule.decide(injected, headers, rng)`` decides one request that the fault's scope
and match already took, and returns an ``Injection`` (the delay in seconds, the abort,
the rate) or None. It draws once, ``u = 100 * rng.random()``: an aspect (delay, abort,
rate) applies when ``u < its percentage``, so with one ``percent`` the whole fault
applies to that share of requests, and Envoy's per-aspect header percentages nest. As
in Envoy, a header's percentage is capped by the configured one. A delay's length is
drawn (from the same ``rng``) only when the delay applies.

``first_n > 0``: only while ``injected`` (the requests this fault was injected into so
far, which the caller keeps and passes in) is below it does the fault apply; after that
it passes. ``decide`` changes nothing: the caller counts an injection only when it
applies it (a fault skipped because too many are active does not count).

With ``headers_enabled`` Envoy's request headers (``HEADERS``) take the place of the
configured aspect they name: ``x-envoy-fault-delay-request`` (milliseconds),
``x-envoy-fault-abort-request`` (an HTTP status, 200-599), ``...-percentage`` for each
(an integer numerator over 100, capped by ``percent``), and
``x-envoy-fault-throughput-response`` (KiB/s, > 0). A header that does not parse is
ignored, as Envoy ignores it. Without ``headers_enabled`` the headers are not read.

Pure and synchronous: no clock, no I/O; the randomness is the injected ``rng``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from typing import Final

import attrs

from policies import settings

__all__ = [
    "ABORT_KINDS",
    "DELAY_HEADER",
    "HEADERS",
    "NO_HEADERS",
    "FaultAbort",
    "FaultDelay",
    "FaultHeaders",
    "FaultRule",
    "Injection",
    "LognormalDelay",
    "read_fault_headers",
]


@attrs.frozen
class LognormalDelay:
    """A delay whose logarithm is normal: ``median * exp(sigma * N(0, 1))`` seconds."""

    #: seconds: half the delays are shorter
    median: float = attrs.field(validator=settings.positive)
    #: the spread of the logarithm (0: always ``median``)
    sigma: float = attrs.field(validator=settings.at_least(0))


def _pair(value: object) -> tuple[float, ...]:
    return tuple(value) if isinstance(value, list | tuple) else value  # type: ignore[return-value]


@attrs.frozen
class FaultDelay:
    """How long a delayed request waits: exactly one of ``fixed``, ``uniform``, ``lognormal``."""

    #: seconds
    fixed: float | None = None
    #: ``[low, high]`` seconds, uniform
    uniform: tuple[float, ...] = attrs.field(default=(), converter=_pair)
    #: a delay with a long tail
    lognormal: LognormalDelay | None = None

    def seconds(self, rng: random.Random) -> float:
        """One delay in seconds (draws from ``rng`` unless ``fixed``)."""
        if self.fixed is not None:
            return self.fixed
        if self.uniform:
            low, high = self.uniform
            return rng.uniform(low, high)
        assert self.lognormal is not None  # validation: exactly one is set
        return self.lognormal.median * math.exp(self.lognormal.sigma * rng.gauss(0.0, 1.0))


#: the kinds of abort: an HTTP status, or a broken response (``kind`` of ``FaultAbort``)
ABORT_KINDS: Final = ("status", "reset", "empty", "garbage", "truncate", "grpc_status")


@attrs.frozen
class FaultAbort:
    """How an aborted request ends: exactly one of the ``ABORT_KINDS``.

    ``status``: a local reply with that status. ``reset``: the client connection is
    reset (RST). ``empty``: it is closed with no response. ``garbage``: bytes that are
    not HTTP, then close. ``truncate``: the upstream's response head and that fraction
    of its body, then close. ``grpc_status``: a gRPC call gets a trailers-only reply with
    that status (any other request the HTTP status it maps to, ``policies.grpc``).
    """

    #: a local reply with this status (200-599), body ``fault filter abort``
    status: int | None = None
    #: true: the client connection is reset (RST)
    reset: bool = False
    #: true: the connection is closed with no response
    empty: bool = False
    #: true: bytes that are not HTTP, then a close
    garbage: bool = False
    #: the fraction of the response body sent, in [0, 1)
    truncate: float | None = None
    #: a gRPC call gets a trailers-only reply with this ``grpc-status`` (1-16)
    grpc_status: int | None = None

    def kinds(self) -> list[str]:
        """The kinds set (validation wants exactly one)."""
        # (``is``: a ``truncate`` of 0.0 equals False, and is set)
        return [
            kind
            for kind in ABORT_KINDS
            if getattr(self, kind) is not None and getattr(self, kind) is not False
        ]

    @property
    def kind(self) -> str:
        return self.kinds()[0]


@attrs.frozen
class Injection:
    """What one request gets: ``delay`` seconds (0: none), an ``abort``, a response rate."""

    delay: float = 0.0
    abort: FaultAbort | None = None
    #: KiB/s the response body is held to; 0: not limited
    rate_kbps: float = 0.0


DELAY_HEADER: Final = b"x-envoy-fault-delay-request"
DELAY_PERCENT_HEADER: Final = b"x-envoy-fault-delay-request-percentage"
ABORT_HEADER: Final = b"x-envoy-fault-abort-request"
ABORT_PERCENT_HEADER: Final = b"x-envoy-fault-abort-request-percentage"
THROUGHPUT_HEADER: Final = b"x-envoy-fault-throughput-response"
#: Envoy's fault request headers, lower case: honoured with ``headers_enabled``, and then
#: stripped before the request goes upstream
HEADERS: Final = frozenset(
    (DELAY_HEADER, DELAY_PERCENT_HEADER, ABORT_HEADER, ABORT_PERCENT_HEADER, THROUGHPUT_HEADER)
)


@attrs.frozen
class FaultHeaders:
    """What a request's Envoy fault headers ask for; None where absent or unparsable."""

    delay_ms: int | None = None
    delay_percent: int | None = None
    abort_status: int | None = None
    abort_percent: int | None = None
    throughput_kbps: int | None = None


def _natural(value: bytes) -> int | None:
    # Envoy parses these as unsigned integers; anything else is ignored
    text = value.strip()
    return int(text) if text.isdigit() and len(text) <= 18 else None


def read_fault_headers(headers: Iterable[tuple[bytes, bytes]]) -> FaultHeaders:
    """The Envoy fault headers among ``headers`` (names in any case; the first of a name wins)."""
    found: dict[bytes, int] = {}
    for name, value in headers:
        lowered = name.lower()
        if lowered in HEADERS and lowered not in found:
            number = _natural(value)
            if number is not None:
                found[lowered] = number
    status = found.get(ABORT_HEADER)
    throughput = found.get(THROUGHPUT_HEADER)
    return FaultHeaders(
        delay_ms=found.get(DELAY_HEADER),
        delay_percent=found.get(DELAY_PERCENT_HEADER),
        abort_status=status if status is not None and 200 <= status <= 599 else None,
        abort_percent=found.get(ABORT_PERCENT_HEADER),
        throughput_kbps=throughput if throughput else None,
    )


NO_HEADERS: Final = FaultHeaders()


@attrs.frozen
class FaultRule:
    """The decision settings of one fault (see the module docstring)."""

    percent: float = attrs.field(default=100.0, validator=settings.between(0, 100))
    first_n: int = attrs.field(default=0, validator=settings.integer_at_least(0))
    delay: FaultDelay | None = None
    abort: FaultAbort | None = None
    response_rate_kbps: float = attrs.field(default=0.0, validator=settings.at_least(0))
    headers_enabled: bool = False

    def decide(self, injected: int, headers: FaultHeaders, rng: random.Random) -> Injection | None:
        """The faults one request gets, or None; ``injected``: see ``first_n``.

        ``headers`` are the request's Envoy fault headers (``read_fault_headers``), read
        only with ``headers_enabled``.
        """
        if 0 < self.first_n <= injected:
            return None
        percent = self.percent
        delay_share = abort_share = rate_share = percent
        delay, abort, rate = self.delay, self.abort, self.response_rate_kbps
        delay_fixed: float | None = None
        if self.headers_enabled:
            if headers.delay_ms is not None:
                delay_fixed = headers.delay_ms / 1000.0
                if headers.delay_percent is not None:
                    delay_share = min(float(headers.delay_percent), percent)
            if headers.abort_status is not None:
                abort = FaultAbort(status=headers.abort_status)
                if headers.abort_percent is not None:
                    abort_share = min(float(headers.abort_percent), percent)
            if headers.throughput_kbps is not None:
                rate = float(headers.throughput_kbps)
        if delay is None and delay_fixed is None and abort is None and not rate:
            return None
        draw = 100.0 * rng.random()
        seconds = 0.0
        if draw < delay_share:
            if delay_fixed is not None:
                seconds = delay_fixed
            elif delay is not None:
                seconds = delay.seconds(rng)
        chosen = abort if draw < abort_share else None
        kbps = rate if draw < rate_share else 0.0
        if seconds <= 0.0 and chosen is None and not kbps:
            return None
        return Injection(seconds, chosen, kbps)
