"""Active health checks: the checker's config, and the thresholds that turn checks into health.

Theory of operation
-------------------
The checker itself (a task that connects, sends, waits) lives on the Trio side; this
module holds what it decides with. Each endpoint's ``HealthThresholds`` turns a stream
of check results (passed or not) into one of three states:

    UNKNOWN    no verdict yet (a new endpoint): it serves. One passing check makes it
               HEALTHY (Envoy asks a new host for a single success);
               ``unhealthy_threshold`` failures in a row make it UNHEALTHY.
    HEALTHY    serves; ``unhealthy_threshold`` failures in a row make it UNHEALTHY.
    UNHEALTHY  does not serve; ``healthy_threshold`` passes in a row make it HEALTHY.

A result of the other kind breaks a streak. Every change goes through
``TRANSITIONS``: a result is classified first (``PASSED`` / ``FAILED``, or
``PASSED_ENOUGH`` / ``FAILED_ENOUGH`` when it completes the streak that the current
state needs to move), then looked up; the classes a state cannot produce (a HEALTHY
endpoint has no pass streak to complete) have no row and are impossible. Changes are
``HealthChanged`` events for ``drain_events``.

Unlike Envoy, an HTTP status outside ``expected_statuses`` is an ordinary failure
(Envoy marks the host unhealthy at once unless the status is "retriable"): ``record``
only knows passed or not.

Scheduling is pure too: ``next_check_delay`` is ``interval`` plus a uniform jitter in
``[0, interval_jitter)``, or ``no_traffic_interval`` plus that jitter while the cluster
has had no traffic (Envoy applies the jitter to both). ``now`` only stamps events.

gRPC checks (``type: grpc``) call ``grpc.health.v1.Health/Check`` over cleartext
HTTP/2 asking about ``service`` (empty: the server as a whole) and pass on
``grpc-status`` 0 with the answer SERVING.

TCP checks send ``send`` and expect ``expect`` back (either may be empty: connect
only, or read a banner). Both are written as text (sent as UTF-8) or, with a ``hex:``
prefix, as hex digits (``"hex:50494e47"``; spaces between bytes are allowed).
"""

from __future__ import annotations

import enum
import random
import string
from typing import Any, Final, Literal

import attrs

from policies import settings
from policies.errors import ImpossibleTransition, InvalidSetting

__all__ = [
    "HEX_PREFIX",
    "TRANSITIONS",
    "CheckResult",
    "HealthChanged",
    "HealthCheckConfig",
    "HealthState",
    "HealthThresholds",
    "next_check_delay",
    "payload_bytes",
    "status_expected",
    "transition",
]

HEX_PREFIX: Final = "hex:"

CheckType = Literal["http", "tcp", "grpc"]


def payload_bytes(text: str) -> bytes:
    """The bytes a ``send`` or ``expect`` value stands for; ``ValueError`` if bad hex."""
    if text.startswith(HEX_PREFIX):
        digits = "".join(text[len(HEX_PREFIX) :].split())
        if not digits or set(digits) - set(string.hexdigits):
            raise ValueError(f"{text!r} is not hex digits after {HEX_PREFIX!r}")
        return bytes.fromhex(digits)  # raises ValueError on an odd count
    return text.encode()


def _check_type(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value not in ("http", "tcp", "grpc"):
        raise InvalidSetting(attribute.name, f"must be 'http', 'tcp' or 'grpc', not {value!r}")


def _check_path(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not (
        isinstance(value, str)
        and value.startswith("/")
        and all(c.isprintable() and not c.isspace() for c in value)
    ):
        raise InvalidSetting(
            attribute.name, f"must be a path starting with '/', without spaces, not {value!r}"
        )


def _check_host(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not (
        isinstance(value, str) and value and all(c.isprintable() and not c.isspace() for c in value)
    ):
        raise InvalidSetting(attribute.name, f"must be a host name without spaces, not {value!r}")


def _status_ranges(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(tuple(r) if isinstance(r, list | tuple) else r for r in value)
    return value


def _check_statuses(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    def good(pair: object) -> bool:
        return (
            isinstance(pair, tuple)
            and len(pair) == 2
            and all(isinstance(s, int) and not isinstance(s, bool) for s in pair)
            and 100 <= pair[0] <= pair[1] <= 599
        )

    if not (isinstance(value, tuple) and value and all(good(pair) for pair in value)):
        raise InvalidSetting(
            attribute.name,
            f"must be a non-empty list of [first, last] status ranges within 100-599, "
            f"not {value!r}",
        )


def _check_payload(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str):
        raise InvalidSetting(attribute.name, f"must be a string, not {value!r}")
    try:
        payload_bytes(value)
    except ValueError as e:
        raise InvalidSetting(
            attribute.name, f"must be text or 'hex:' and hex digits: {e}"
        ) from None


def _check_service(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or len(value.encode()) > 1024:
        raise InvalidSetting(attribute.name, f"must be a service name (text), not {value!r}")


@attrs.frozen
class HealthCheckConfig:
    """A cluster's active health check (durations in seconds)."""

    #: ``http``: GET ``path``, pass on an expected status; ``tcp``: connect, send,
    #: expect; ``grpc``: ``grpc.health.v1.Health/Check`` over HTTP/2, pass on SERVING
    type: CheckType = attrs.field(default="http", validator=_check_type)
    #: http: the path requested
    path: str = attrs.field(default="/healthz", validator=_check_path)
    #: http: the Host header, grpc: the ``:authority`` (None: the cluster's name)
    host: str | None = attrs.field(default=None, validator=_check_host)
    #: http: statuses that pass, as inclusive ``(first, last)`` ranges
    expected_statuses: tuple[tuple[int, int], ...] = attrs.field(
        default=((200, 399),), converter=_status_ranges, validator=_check_statuses
    )
    #: between checks of an endpoint, before jitter
    interval: float = attrs.field(default=5.0, validator=settings.positive)
    #: up to this much is added to each interval, at random
    interval_jitter: float = attrs.field(default=0.5, validator=settings.at_least(0))
    #: a check not answered within this fails
    timeout: float = attrs.field(default=1.0, validator=settings.positive)
    #: failures in a row that make an endpoint unhealthy
    unhealthy_threshold: int = attrs.field(default=3, validator=settings.integer_at_least(1))
    #: passes in a row that make an unhealthy endpoint healthy
    healthy_threshold: int = attrs.field(default=2, validator=settings.integer_at_least(1))
    #: between checks while the cluster has had no traffic
    no_traffic_interval: float = attrs.field(default=60.0, validator=settings.positive)
    #: tcp: bytes sent once connected (text, or ``hex:`` digits); empty: none
    send: str = attrs.field(default="", validator=_check_payload)
    #: tcp: bytes that must come back (text, or ``hex:`` digits); empty: connecting passes
    expect: str = attrs.field(default="", validator=_check_payload)
    #: grpc: the service asked about (``HealthCheckRequest.service``); empty: the server
    service: str = attrs.field(default="", validator=_check_service)

    def __attrs_post_init__(self) -> None:
        if self.type != "tcp":
            for name in ("send", "expect"):
                if getattr(self, name):
                    raise InvalidSetting(name, "is for tcp checks only (type: tcp)")
        if self.type != "grpc" and self.service:
            raise InvalidSetting("service", "is for grpc checks only (type: grpc)")

    @property
    def send_bytes(self) -> bytes:
        return payload_bytes(self.send)

    @property
    def expect_bytes(self) -> bytes:
        return payload_bytes(self.expect)


def status_expected(config: HealthCheckConfig, status: int) -> bool:
    """Whether an HTTP check answered ``status`` passes."""
    return any(first <= status <= last for first, last in config.expected_statuses)


def next_check_delay(config: HealthCheckConfig, rng: random.Random, had_traffic: bool) -> float:
    """Seconds until an endpoint's next check: the interval (or the no-traffic interval)
    plus a jitter uniform in ``[0, interval_jitter)``."""
    base = config.interval if had_traffic else config.no_traffic_interval
    return base + rng.random() * config.interval_jitter


class HealthState(enum.Enum):
    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"

    @property
    def serves(self) -> bool:
        """Whether an endpoint in this state takes traffic."""
        return self is not HealthState.UNHEALTHY


class CheckResult(enum.Enum):
    """One check's result, as the current state sees it."""

    PASSED = "passed"
    #: a pass that completes the streak the state needs to become HEALTHY
    PASSED_ENOUGH = "passed_enough"
    FAILED = "failed"
    #: a failure that completes the streak the state needs to become UNHEALTHY
    FAILED_ENOUGH = "failed_enough"


_UNKNOWN, _HEALTHY, _UNHEALTHY = HealthState.UNKNOWN, HealthState.HEALTHY, HealthState.UNHEALTHY
_R = CheckResult

#: every legal step; anything else is impossible
TRANSITIONS: Final[dict[tuple[HealthState, CheckResult], HealthState]] = {
    (_UNKNOWN, _R.PASSED_ENOUGH): _HEALTHY,
    (_UNKNOWN, _R.FAILED): _UNKNOWN,
    (_UNKNOWN, _R.FAILED_ENOUGH): _UNHEALTHY,
    (_HEALTHY, _R.PASSED): _HEALTHY,
    (_HEALTHY, _R.FAILED): _HEALTHY,
    (_HEALTHY, _R.FAILED_ENOUGH): _UNHEALTHY,
    (_UNHEALTHY, _R.PASSED): _UNHEALTHY,
    (_UNHEALTHY, _R.PASSED_ENOUGH): _HEALTHY,
    (_UNHEALTHY, _R.FAILED): _UNHEALTHY,
}


def transition(state: HealthState, result: CheckResult) -> HealthState:
    """The state after ``result``; ``ImpossibleTransition`` if the table has no row."""
    try:
        return TRANSITIONS[state, result]
    except KeyError:
        raise ImpossibleTransition("health thresholds", state, result) from None


@attrs.frozen
class HealthChanged:
    """An endpoint's health went from ``old`` to ``new`` with the check done at ``at``."""

    old: HealthState
    new: HealthState
    at: float


@attrs.define
class HealthThresholds:
    """One endpoint's health, from its active checks; see the module docstring."""

    healthy_threshold: int = attrs.field(default=2, validator=settings.integer_at_least(1))
    unhealthy_threshold: int = attrs.field(default=3, validator=settings.integer_at_least(1))
    _state: HealthState = attrs.field(default=HealthState.UNKNOWN, init=False)
    _passes: int = attrs.field(default=0, init=False)
    _failures: int = attrs.field(default=0, init=False)
    _events: list[HealthChanged] = attrs.field(factory=list, init=False)

    @classmethod
    def of(cls, config: HealthCheckConfig) -> HealthThresholds:
        """A new endpoint's thresholds under ``config``."""
        return cls(config.healthy_threshold, config.unhealthy_threshold)

    @property
    def state(self) -> HealthState:
        return self._state

    def classify(self, passed: bool) -> CheckResult:
        """What one more result means in the current state (does not record it)."""
        state = self._state
        if passed:
            need = {_UNKNOWN: 1, _UNHEALTHY: self.healthy_threshold}.get(state)
            done = need is not None and self._passes + 1 >= need
            return _R.PASSED_ENOUGH if done else _R.PASSED
        done = state is not _UNHEALTHY and self._failures + 1 >= self.unhealthy_threshold
        return _R.FAILED_ENOUGH if done else _R.FAILED

    def record(self, passed: bool, now: float) -> HealthState:
        """Count one check's result; return the endpoint's state after it."""
        result = self.classify(passed)
        if passed:
            self._passes, self._failures = self._passes + 1, 0
        else:
            self._passes, self._failures = 0, self._failures + 1
        old, new = self._state, transition(self._state, result)
        if new is not old:
            self._state = new
            self._passes = self._failures = 0
            self._events.append(HealthChanged(old, new, now))
        return new

    def drain_events(self) -> list[HealthChanged]:
        """The changes since the last drain, oldest first."""
        events, self._events = self._events, []
        return events
