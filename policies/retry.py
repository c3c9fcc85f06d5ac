"""Retries: whether a request whose attempt failed, or was answered badly, is tried again.

Theory of operation
-------------------
A request is sent in *attempts*, each one try on one endpoint. An attempt ends in a
failure before any response (``Failure``) or in a response with a status. After each,
the proxy asks the route's ``RetryRules`` for a ``Decision``:

    RETRY      the route retries this outcome and a try is left: pick again, try again
    FINAL      the outcome stands (a success, or a condition the route does not retry)
    EXHAUSTED  the route retries this outcome but every try was used up, after at least
               one retry (Envoy's ``URX`` response flag)

Which outcomes a route retries is its ``retry_on`` list, with Envoy's meanings:

    connect-failure          the connection could not be opened (refused, timed out, or
                             no room in the pool)
    reset                    the connection was reset or closed before a whole response,
                             or the try timed out (``per_try_timeout``)
    gateway-error            any of those, or a 502, 503 or 504 response
    5xx                      any of those, or any 5xx response
    retriable-status-codes   a response whose status is in ``retriable_status_codes``

and, for gRPC calls, Envoy's ``retry_grpc_on`` names (``policies.grpc.RETRY_ON``):
``cancelled``, ``deadline-exceeded``, ``internal``, ``resource-exhausted``,
``unavailable``: a response whose *headers* carry that ``grpc-status`` (a trailers-only
response, the only kind a proxy can still drop: once a message went downstream the
call stands, as in Envoy).

The data path checks a response head against one set, ``relay_statuses``: the HTTP
statuses retried and, when gRPC statuses are, 200 (a gRPC response's status) and each
gRPC status N retried as ``-N`` (gRPC statuses retried are never OK, 0; ``0`` in the
set, ``RETRY_200``, says a 200 is retried as an HTTP status), so a request on a route
that retries nothing gRPC pays nothing for it.

A route has ``1 + attempts`` tries, but only for a request that can be sent again
(``replayable``): one without a body, or one whose method is idempotent and whose whole
body the proxy could hold, at most ``buffer_limit`` bytes (Envoy's
``per_request_buffer_limit_bytes``); any other body is streamed and never kept, so the
request has one try.

Between tries the proxy waits ``backoff`` (``policies.backoff``: exponential, full
jitter), and each try may have its own timeout, ``per_try_timeout`` (0: the route
timeout alone bounds all tries). Whether a retry the rules allow is actually made is
also up to the cluster's retry threshold (``policies.limits``: ``max_retries`` or a
``retry_budget``), which the proxy checks at each decision.

One case is retried whatever the route says (``retry_stale``): a pooled connection that
the upstream closed while it sat idle (the race every keep-alive client has) fails the
request before the upstream took it. An idempotent request is then sent once more on a
fresh connection, as browsers and Go's transport do; a POST is not, since the proxy
cannot know whether it was processed.

Pure and synchronous: no clock, no I/O, nothing random; ``attempt`` counts from 0.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

import attrs

from policies.backoff import DEFAULT_BACKOFF, BackoffConfig
from policies.errors import PolicyError
from policies.grpc import RETRY_ON, grpc_statuses

#: methods a proxy may send again when it cannot know whether the upstream processed them
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})

#: every ``retry_on`` condition
CONDITIONS = frozenset(
    {"connect-failure", "reset", "gateway-error", "5xx", "retriable-status-codes", *RETRY_ON}
)

GATEWAY_ERRORS = frozenset({502, 503, 504})
SERVER_ERRORS = frozenset(range(500, 600))


class UnknownCondition(PolicyError, ValueError):
    """A ``retry_on`` condition this policy does not know."""


class Failure(enum.Enum):
    """How an attempt failed before a response."""

    #: no connection: refused, unreachable, timed out, or the pool full
    CONNECT = "connect"
    #: the connection was reset or closed before the whole response
    RESET = "reset"
    #: the try's own timeout (``per_try_timeout``) passed before the whole response
    TIMEOUT = "timeout"
    #: anything else (a malformed response, the route timeout): never retried
    OTHER = "other"


class Decision(enum.Enum):
    """What the proxy does after an attempt."""

    RETRY = "retry"
    FINAL = "final"
    EXHAUSTED = "exhausted"


NO_STATUSES: frozenset[int] = frozenset()
#: in ``relay_statuses``: a 200 is retried whatever its ``grpc-status`` (gRPC's OK, 0,
#: is never a retried gRPC status, so its slot is free)
RETRY_200 = 0

#: Envoy's default ``per_request_buffer_limit_bytes`` is the connection's 1 MiB buffer;
#: a held body is memory per request in flight, so this gateway holds at most 64 KiB
DEFAULT_BUFFER_LIMIT = 65536


@attrs.frozen
class RetryRules:
    """One route's retry policy, compiled from its config."""

    #: tries for a request that can be sent again (1 + the route's ``attempts``)
    tries: int = 1
    #: failures retried
    failures: frozenset[Failure] = frozenset()
    #: response statuses retried
    statuses: frozenset[int] = NO_STATUSES
    #: seconds each try may take (0: no limit but the route's timeout)
    per_try_timeout: float = 0.0
    #: the wait before each retry
    backoff: BackoffConfig = DEFAULT_BACKOFF
    #: the largest request body held so that the request can be sent again
    buffer_limit: int = DEFAULT_BUFFER_LIMIT
    #: gRPC statuses retried (in a response's headers)
    grpc: frozenset[int] = NO_STATUSES
    #: what a response head is checked against (see the module docstring)
    relay_statuses: frozenset[int] = attrs.field()

    @relay_statuses.default
    def _relay(self) -> frozenset[int]:
        if not self.grpc and 200 not in self.statuses:
            return self.statuses
        relay = set(self.statuses) | {-status for status in self.grpc}
        if self.grpc:
            relay.add(200)
        if 200 in self.statuses:
            relay.add(RETRY_200)  # HTTP 200 itself is retried (retriable_status_codes)
        return frozenset(relay)

    @classmethod
    def compile(
        cls,
        attempts: int,
        retry_on: Iterable[str],
        retriable_status_codes: Iterable[int] = (),
        *,
        per_try_timeout: float = 0.0,
        backoff: BackoffConfig = DEFAULT_BACKOFF,
        buffer_limit: int = DEFAULT_BUFFER_LIMIT,
    ) -> RetryRules:
        """The rules of a route with ``attempts`` retries on the ``retry_on`` conditions."""
        on = frozenset(retry_on)
        unknown = on - CONDITIONS
        if unknown:
            raise UnknownCondition(f"unknown retry_on conditions: {sorted(unknown)}")
        failures: set[Failure] = set()
        statuses: set[int] = set()
        if on & {"connect-failure", "gateway-error", "5xx"}:
            failures.add(Failure.CONNECT)
        if on & {"reset", "gateway-error", "5xx"}:
            failures.update((Failure.RESET, Failure.TIMEOUT))
        if "gateway-error" in on:
            statuses |= GATEWAY_ERRORS
        if "5xx" in on:
            statuses |= SERVER_ERRORS
        if "retriable-status-codes" in on:
            statuses.update(retriable_status_codes)
        return cls(
            1 + attempts,
            frozenset(failures),
            frozenset(statuses),
            per_try_timeout,
            backoff,
            buffer_limit,
            frozenset(int(status) for status in grpc_statuses(on)),
        )

    def tries_for(self, replayable: bool) -> int:
        """Tries a request gets: all of them if it can be sent again, else one."""
        return self.tries if replayable else 1

    def may_hold_body(
        self, method: bytes, content_length: int | None, grpc_call: bool = False
    ) -> bool:
        """Whether a request with a body is worth holding to send it again: the route
        retries, the method is idempotent, and the body (``content_length``, None when
        chunked and so unknown until its end) fits in ``buffer_limit``.

        A gRPC call (always a POST) on a route that names gRPC statuses is held
        whatever its method: those conditions are the operator's word that the calls
        may be sent again (as Envoy's ``retry_grpc_on``; Envoy holds any method).
        """
        if self.tries < 2 or (method not in IDEMPOTENT and not (grpc_call and self.grpc)):
            return False
        return content_length is None or content_length <= self.buffer_limit

    def after_failure(self, failure: Failure, attempt: int, tries: int) -> Decision:
        """The decision after attempt ``attempt`` (of ``tries``) failed with ``failure``."""
        return self._decide(failure in self.failures, attempt, tries)

    def after_response(self, status: int, attempt: int, tries: int) -> Decision:
        """The decision after attempt ``attempt`` (of ``tries``) was answered ``status``."""
        return self._decide(status in self.statuses, attempt, tries)

    def after_grpc_status(self, grpc_status: int, attempt: int, tries: int) -> Decision:
        """The decision after attempt ``attempt`` (of ``tries``) was answered with
        ``grpc_status`` in its response headers."""
        return self._decide(grpc_status in self.grpc, attempt, tries)

    def statuses_to_retry(self, attempt: int, tries: int) -> frozenset[int]:
        """The statuses for which ``after_response`` says RETRY at ``attempt``: a set the
        data path checks a response's status against before sending it on."""
        return self.statuses if attempt + 1 < tries else NO_STATUSES

    @staticmethod
    def _decide(covered: bool, attempt: int, tries: int) -> Decision:
        if not covered:
            return Decision.FINAL
        if attempt + 1 < tries:
            return Decision.RETRY
        return Decision.EXHAUSTED if attempt else Decision.FINAL


NO_RETRIES = RetryRules()


def retry_stale(method: bytes, reused: bool) -> bool:
    """Whether a request whose connection turned out closed before any response byte is
    sent again on a fresh one: only over a reused (pooled) connection, only if idempotent."""
    return reused and method in IDEMPOTENT
