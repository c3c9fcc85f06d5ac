"""Errors raised by the gateway.

    GatewayError
    ├── ConfigError(ValueError)        a config failed validation; carries every issue
    ├── UpstreamError                  talking to an upstream failed (maps to a local reply)
    │   ├── UpstreamConnectError       connect refused or unreachable             -> 502 / UF
    │   │   ├── UpstreamConnectTimeout     not connected within connect_timeout   -> 502 / UF
    │   │   ├── UpstreamTlsError           the TLS handshake failed (verification) -> 502 / UF
    │   │   └── PoolExhausted              max_connections open and busy          -> 503 / UO
    │   ├── UpstreamResetError         connection reset or closed mid-exchange    -> 502 / UC
    │   │   └── UpstreamClosedEarly        closed before any byte of a response   -> 502 / UC
    │   │       └── UpstreamStreamRefused      an HTTP/2 stream refused unprocessed    -> 502 / UC
    │   ├── UpstreamProtocolError      upstream sent bytes that do not parse      -> 502 / UPE
    │   ├── UpstreamTimeoutError       no full response within the route timeout -> 504 / UT
    │   │   └── UpstreamPerTryTimeout      nor within the route's per_try_timeout -> 504 / UT
    │   └── RetriableResponse          a response the route retries (dropped, tried again)
    ├── NoHealthyUpstream              the cluster has no endpoint to pick       -> 503 / UH
    ├── DownstreamProtocolError        the client sent a malformed request        -> 400 / 431
    ├── DownstreamClosed               the client went away mid-request           (no reply)
    ├── FilterError                    an HTTP filter failed the request (raised) -> 500 / FLT
    │   ├── FilterBodyTooLarge             a body held for a filter is over the
    │   │                                  listener's filter_buffer_limit_kb   -> 413 / 500, FLT
    │   └── FilterReplied                  a filter answered locally after the request went
    │                                      upstream (a response hook's ``LocalReply``)
    ├── ListenerBindError(OSError)     a listener's address cannot be bound
    ├── SupervisorEscalation           a child crashed past its restart intensity
    ├── ActorStopped                   an actor ended before answering a request  -> 503
    ├── VersionMismatch                ``If-Match`` names a version no longer current -> 412
    │   └── FleetConflict              another node committed first (etcd's revision moved) -> 412
    ├── ChangeFailed                   a valid change could not be applied; rolled back -> 503
    ├── RolloutNotFound                no rollout by that name                    -> 404
    ├── RolloutConflict                a rollout's name is taken, or its state refuses
    │                                  the command (pausing a finished one)       -> 409
    ├── StateFileError(OSError)        the state file cannot be read or written   -> 503
    ├── StoreUnavailable               etcd cannot be reached, or this node has not
    │                                  caught up with it yet (a write is refused) -> 503
    └── WasmError                      a proxy-wasm filter's module failed        -> 500
        ├── WasmLoadError                  it cannot be loaded: compile, a missing import,
        │                                  a trap or ``false`` from vm_start/configure
        └── WasmTrap                       a callback trapped (the request fails; the
            │                              filter's ``fail_open`` may skip it instead)
            ├── WasmTimeout                    it ran past ``max_ms_per_call``
            └── WasmOutOfMemory                it was refused memory past ``max_memory_mb``

``status_hint`` is the HTTP status a local reply uses for the error, ``flag`` the
access log's response flag (Envoy's). ``trio.BrokenResourceError`` is translated into
these at the socket edge. The route timeout is a cancel scope (STYLE.md): when it fires
no exception unwinds the exchange (trio's ``Cancelled`` does), so the proxy makes the
``UpstreamTimeoutError`` that its local reply and stats are drawn from at that point.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence

import attrs


class GatewayError(Exception):
    """Root of the gateway's errors."""

    status_hint: int = 500
    flag: str = ""


@attrs.frozen
class ConfigIssue:
    """One problem in a config: where (``clusters[0].endpoints[1].address``) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(GatewayError, ValueError):
    """A config failed validation; ``issues`` lists every problem found, not only the first."""

    status_hint = 422

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues = tuple(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


class UpstreamError(GatewayError):
    status_hint = 502


class UpstreamConnectError(UpstreamError):
    flag = "UF"


class UpstreamConnectTimeout(UpstreamConnectError):
    """The connection was not established within ``connect_timeout``."""


class UpstreamTlsError(UpstreamConnectError):
    """The TLS handshake with an upstream failed: its certificate did not verify, or it
    refused ours (``str`` says which, as OpenSSL put it)."""


class PoolExhausted(UpstreamConnectError):
    """``max_connections`` are open and busy."""

    status_hint = 503
    flag = "UO"


class CircuitBreakerOverflow(UpstreamError):
    """A ``circuit_breakers`` threshold (``max_requests``, ``max_pending_requests``) is
    reached: the attempt is refused before it reaches the pool (Envoy's UO overflow)."""

    status_hint = 503
    flag = "UO"


class UpstreamResetError(UpstreamError):
    flag = "UC"


class UpstreamClosedEarly(UpstreamResetError):
    """The upstream closed the connection before sending any byte of a response."""


class UpstreamStreamRefused(UpstreamClosedEarly):
    """An HTTP/2 upstream refused a stream it never processed (``GOAWAY`` past its id,
    ``REFUSED_STREAM``, its stream limit reached): safe to send again, whatever the
    method (RFC 9113, section 8.7)."""


class UpstreamProtocolError(UpstreamError):
    flag = "UPE"


class UpstreamTimeoutError(UpstreamError):
    status_hint = 504
    flag = "UT"


class UpstreamPerTryTimeout(UpstreamTimeoutError):
    """One try took longer than its route's ``per_try_timeout`` (it may be retried)."""


class RetriableResponse(UpstreamError):
    """The upstream answered with a status its route retries on: the response is dropped
    (nothing of it went downstream) and the request is tried again."""

    def __init__(self, status: int) -> None:
        super().__init__(f"upstream answered {status}, retried")
        self.status = status


class NoHealthyUpstream(GatewayError):
    status_hint = 503
    flag = "UH"


class DownstreamProtocolError(GatewayError):
    """The client sent something we will not forward."""

    def __init__(self, reason: str, status_hint: int = 400) -> None:
        super().__init__(reason)
        self.status_hint = status_hint
        self.reason = reason


class DownstreamClosed(GatewayError):
    """The client went away; nothing more can be written to it."""


class FilterError(GatewayError):
    """An HTTP filter failed this request (its hook raised, or a wasm module trapped)."""

    status_hint = 500
    flag = "FLT"

    def __init__(self, message: str, *, filter_name: str = "") -> None:
        super().__init__(message)
        self.filter_name = filter_name


class FilterBodyTooLarge(FilterError):
    """A body a filter asked to see whole is over ``filter_buffer_limit_kb``."""

    def __init__(self, message: str, *, status: int, filter_name: str = "") -> None:
        super().__init__(message, filter_name=filter_name)
        self.status_hint = status


class FilterReplied(FilterError):
    """A response hook answered with a ``LocalReply`` (``reply``) in the upstream's stead."""

    flag = ""

    def __init__(self, reply: object, *, filter_name: str = "") -> None:
        super().__init__("a filter replied locally", filter_name=filter_name)
        self.reply = reply


class SupervisorEscalation(GatewayError):
    """A child crashed more often than its restart intensity allows."""


class ListenerBindError(GatewayError, OSError):
    """A listener's address cannot be bound (in use, not local, no permission)."""


#: what to do when an address cannot be bound, by the ``errno`` of the failure
_BIND_ADVICE = {
    errno.EADDRINUSE: "another process listens there: stop it, or change the address "
    "(port 0 takes any free port)",
    errno.EACCES: "a port below 1024 needs privileges: use one of 1024 or above",
    errno.EADDRNOTAVAIL: "this machine has no such address: use 127.0.0.1, 0.0.0.0 "
    "or one of its own",
}


def bind_failed(what: str, address: object, error: OSError) -> ListenerBindError:
    """``what`` (``listener 'web'``) cannot bind ``address``: why, and what to do."""
    advice = _BIND_ADVICE.get(error.errno or 0)
    reason = error.strerror or str(error)
    return ListenerBindError(
        f"{what}: cannot bind {address}: {reason}" + (f"; {advice}" if advice else "")
    )


def root_cause(exc: BaseException) -> BaseException:
    """The error a user should read: through exception groups and ``raise ... from``."""
    while True:
        if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
            exc = exc.exceptions[0]
        elif exc.__cause__ is not None:
            exc = exc.__cause__
        else:
            return exc


class ActorStopped(GatewayError):
    """An actor's inbox is closed, or the actor ended (crashed) before it answered."""

    status_hint = 503


class VersionMismatch(GatewayError):
    """``If-Match`` named a version that is no longer current."""

    status_hint = 412

    def __init__(self, expected: int, current: int) -> None:
        super().__init__(f"config version is {current}, not {expected}")
        self.expected = expected
        self.current = current


class FleetConflict(VersionMismatch):
    """An etcd transaction found the config's revision moved: another node committed a
    change since this node read it. ``latest`` is what etcd holds now (its plain data
    and revision), which this node applies before anything else."""

    def __init__(self, expected: int, current: int, latest: tuple[bytes, int] | None) -> None:
        super().__init__(expected, current)
        self.latest = latest


class ChangeFailed(GatewayError):
    """A valid change failed while it was applied; the running gateway was rolled back."""

    status_hint = 503


class RolloutNotFound(GatewayError):
    """No rollout by that name."""

    status_hint = 404


class RolloutConflict(GatewayError):
    """A rollout by that name exists, or its state refuses the command."""

    status_hint = 409


class StateFileError(GatewayError, OSError):
    """The state file (runtime changes) cannot be read or written."""

    status_hint = 503


class StoreUnavailable(GatewayError):
    """etcd cannot be reached (or answered with an error), or this node has not caught up
    with it since it started from its local cache: the message names etcd and why.
    ``code`` is etcd's gRPC status code when etcd answered with an error."""

    status_hint = 503

    def __init__(self, reason: str, code: int | None = None) -> None:
        super().__init__(reason)
        self.code = code


class WasmError(GatewayError):
    """A proxy-wasm filter's module failed (gateway/filters/wasm)."""

    status_hint = 500


class WasmLoadError(WasmError):
    """A module cannot be loaded: it does not compile, imports a function triogate does not
    provide (named in the message), or trapped or answered ``false`` in
    ``proxy_on_vm_start``/``proxy_on_configure``."""


class WasmTrap(WasmError):
    """A module's callback trapped; the request (or connection) it served fails."""

    #: the filter's counter (``FilterStats``) the HTTP filter chain adds it to
    stat = "wasm_trap"


class WasmTimeout(WasmTrap):
    """A callback ran past the filter's ``max_ms_per_call`` and was interrupted."""

    stat = "wasm_timeout"


class WasmOutOfMemory(WasmTrap):
    """A callback failed after its module was refused memory past ``max_memory_mb``."""

    stat = "wasm_oom"
