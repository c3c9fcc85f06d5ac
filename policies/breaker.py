"""The classic circuit breaker: stop sending to an upstream that keeps failing, then probe.

Theory of operation
-------------------
A ``CircuitBreaker`` guards one upstream (a cluster or one endpoint) and is off unless
configured. It is in one of three states:

    CLOSED     requests flow; each outcome goes into a sliding window of ``window``
               seconds. When the window holds at least ``minimum_requests`` outcomes
               and at least ``failure_rate`` percent of them are failures, it opens
               (judged after every counted outcome, successes included: the one that
               completes ``minimum_requests`` may be a success).
    OPEN       every request fails fast (``allow`` returns None) for the current open
               time; once that has passed it half-opens.
    HALF_OPEN  at most ``half_open_requests`` probes are let through (an abandoned
               probe gives its place back; a passed one does not). All of them
               passing closes the breaker; the first to fail opens it again for twice
               the previous open time, capped at ``max_open_time``.

Every transition is a row of ``TRANSITIONS``: ``(state, input) -> (effect, next
state)``. An input with no row is an ``ImpossibleTransition``: the breaker never
feeds one, so it would be a bug. Opening empties the window (it judged the closed era
only); closing empties it too and resets the open time to ``open_time``.

``now`` is a monotonic reading in seconds on the caller's clock; it must never
decrease. The breaker has no timer: an open time that has passed is noticed lazily by
the next ``allow``, ``record`` or ``state_at`` call. A caller that publishes health
from the breaker (``policies.endpoint_health``) re-reads it at ``open_until``.

``allow(now)`` hands out a ``Permit`` stamped with the breaker's *generation*, which
every transition bumps. ``record(permit, outcome, now)`` counts an outcome only if its
permit is of the current generation: the late answer of a request let through while
closed, arriving while half-open (or closed again), describes a period the breaker has
already judged and is dropped, so it can neither close the breaker nor spend a probe.

The window is ``BUCKETS`` buckets of ``window / BUCKETS`` seconds, so its memory is
bounded whatever the traffic: an outcome counts while its bucket is one of the last
``BUCKETS`` (for between ``window - window / BUCKETS`` and ``window`` seconds).

Outcomes are ``SUCCESS``, ``FAILURE`` (a status in ``failure_statuses``, or a connect
failure, reset or timeout: ``BreakerConfig.outcome_of``) and ``ABANDONED`` (the request
ended without telling anything about the upstream, e.g. the client went away): an
abandoned request is not counted, and an abandoned probe frees its slot.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from typing import Any, Final

import attrs

from policies import settings
from policies.errors import ImpossibleTransition, InvalidSetting
from policies.retry import Failure

__all__ = [
    "BUCKETS",
    "TRANSITIONS",
    "BreakerConfig",
    "BreakerInput",
    "BreakerState",
    "CircuitBreaker",
    "Effect",
    "Outcome",
    "Permit",
    "StateChanged",
    "WindowCounts",
    "transition",
]

#: buckets in the sliding window
BUCKETS: Final = 10


def _statuses(value: object) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, list | tuple | set | frozenset) else value  # type: ignore[return-value]


def _check_statuses(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, tuple) or not all(
        isinstance(s, int) and not isinstance(s, bool) and 100 <= s <= 599 for s in value
    ):
        raise InvalidSetting(
            attribute.name, f"must be a list of HTTP statuses 100-599, not {value!r}"
        )


@attrs.frozen
class BreakerConfig:
    """When a breaker opens, for how long, and how it probes before closing again."""

    #: percent of failures in the window at or above which the breaker opens
    failure_rate: float = attrs.field(
        default=50.0, validator=settings.between(0, 100, low_open=True)
    )
    #: seconds of outcomes the failure rate is computed over
    window: float = attrs.field(default=10.0, validator=settings.positive)
    #: outcomes the window must hold before the breaker may open
    minimum_requests: int = attrs.field(default=20, validator=settings.integer_at_least(1))
    #: seconds of the first open period
    open_time: float = attrs.field(default=5.0, validator=settings.positive)
    #: the open time doubles on each failed probe up to this many seconds
    max_open_time: float = attrs.field(default=60.0, validator=settings.positive)
    #: probes let through while half-open; all must pass to close
    half_open_requests: int = attrs.field(default=3, validator=settings.integer_at_least(1))
    #: response statuses that count as failures
    failure_statuses: tuple[int, ...] = attrs.field(
        default=(502, 503, 504), converter=_statuses, validator=_check_statuses
    )

    def __attrs_post_init__(self) -> None:
        if self.max_open_time < self.open_time:
            raise InvalidSetting(
                "max_open_time",
                f"must be >= open_time ({self.open_time}), not {self.max_open_time}",
            )

    def outcome_of(self, result: int | Failure) -> Outcome:
        """The outcome of an attempt answered with a status, or failed before one."""
        if isinstance(result, Failure):
            return Outcome.FAILURE
        return Outcome.FAILURE if result in self.failure_statuses else Outcome.SUCCESS


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class BreakerInput(enum.Enum):
    """What moves a breaker; also the ``reason`` of a ``StateChanged``."""

    #: the window holds enough outcomes and too many failures
    FAILURE_RATE_EXCEEDED = "failure_rate_exceeded"
    #: the open time has passed
    OPEN_TIME_ELAPSED = "open_time_elapsed"
    #: a half-open probe failed
    PROBE_FAILED = "probe_failed"
    #: every half-open probe passed
    PROBES_PASSED = "probes_passed"


class Effect(enum.Enum):
    """What a transition does besides changing the state."""

    #: open for ``open_time``
    OPEN = "open"
    #: let probes through
    START_PROBING = "start_probing"
    #: open again for twice the last open time, at most ``max_open_time``
    REOPEN_LONGER = "reopen_longer"
    #: empty the window, reset the open time to ``open_time``
    RESET = "reset"


class Outcome(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    #: ended without a verdict on the upstream (the client left): not counted
    ABANDONED = "abandoned"


_S = BreakerState
_I = BreakerInput

#: every legal transition; anything else is impossible
TRANSITIONS: Final[dict[tuple[BreakerState, BreakerInput], tuple[Effect, BreakerState]]] = {
    (_S.CLOSED, _I.FAILURE_RATE_EXCEEDED): (Effect.OPEN, _S.OPEN),
    (_S.OPEN, _I.OPEN_TIME_ELAPSED): (Effect.START_PROBING, _S.HALF_OPEN),
    (_S.HALF_OPEN, _I.PROBE_FAILED): (Effect.REOPEN_LONGER, _S.OPEN),
    (_S.HALF_OPEN, _I.PROBES_PASSED): (Effect.RESET, _S.CLOSED),
}


def transition(state: BreakerState, event: BreakerInput) -> tuple[Effect, BreakerState]:
    """The row of ``TRANSITIONS`` for ``(state, event)``; ``ImpossibleTransition`` if none."""
    try:
        return TRANSITIONS[state, event]
    except KeyError:
        raise ImpossibleTransition("breaker", state, event) from None


@attrs.frozen
class Permit:
    """Leave to send one request; hand it back to ``record`` with the outcome."""

    #: the breaker's generation when the permit was given
    generation: int
    #: a half-open probe
    probe: bool


@attrs.frozen
class StateChanged:
    """The breaker went from ``old`` to ``new`` at ``at`` because of ``reason``."""

    old: BreakerState
    new: BreakerState
    at: float
    reason: BreakerInput


@attrs.frozen
class WindowCounts:
    """Outcomes in the sliding window."""

    requests: int
    failures: int


@attrs.define
class _Bucket:
    index: int
    requests: int = 0
    failures: int = 0


@attrs.define
class CircuitBreaker:
    """One upstream's breaker; see the module docstring."""

    config: BreakerConfig
    _state: BreakerState = attrs.field(default=BreakerState.CLOSED, init=False)
    _generation: int = attrs.field(default=0, init=False)
    #: the open time of the current (or next) open period
    _open_time: float = attrs.field(init=False)
    _open_until: float = attrs.field(default=-math.inf, init=False)
    _buckets: deque[_Bucket] = attrs.field(factory=deque, init=False)
    #: the sums of ``_buckets``, kept as outcomes arrive and buckets leave, so that
    #: judging the window after each outcome does not add it up again
    _requests: int = attrs.field(default=0, init=False)
    _failures: int = attrs.field(default=0, init=False)
    #: ``BUCKETS / window``: a time's bucket is ``floor(now * _buckets_per_second)``
    _buckets_per_second: float = attrs.field(init=False)
    #: the permit every request gets while closed, made again at each transition
    _closed_permit: Permit = attrs.field(factory=lambda: Permit(0, probe=False), init=False)
    _probes_out: int = attrs.field(default=0, init=False)
    _probes_passed: int = attrs.field(default=0, init=False)
    #: the state changes not drained yet (``drain_events``); a caller on a hot path
    #: tests this list before draining, which then allocates nothing most of the time
    events: list[StateChanged] = attrs.field(factory=list, init=False)

    @_open_time.default
    def _base_open_time(self) -> float:
        return self.config.open_time

    @_buckets_per_second.default
    def _bucket_rate(self) -> float:
        return BUCKETS / self.config.window

    # -- reading ---------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The state as of the last call that passed ``now``."""
        return self._state

    @property
    def open_time(self) -> float:
        """Seconds of the current open period (or of the next one, when not open)."""
        return self._open_time

    @property
    def open_until(self) -> float | None:
        """When the current open period ends; None unless open."""
        return self._open_until if self._state is BreakerState.OPEN else None

    def state_at(self, now: float) -> BreakerState:
        """The state at ``now``: an open period that has passed half-opens."""
        self._notice_time(now)
        return self._state

    def window(self, now: float) -> WindowCounts:
        """The outcomes in the window at ``now`` (all zero unless closed)."""
        first = math.floor(now * self._buckets_per_second) - BUCKETS + 1
        live = [b for b in self._buckets if b.index >= first]
        return WindowCounts(sum(b.requests for b in live), sum(b.failures for b in live))

    # -- deciding --------------------------------------------------------------------

    def allow(self, now: float) -> Permit | None:
        """A permit to send one request at ``now``, or None: fail fast."""
        if self._state is BreakerState.CLOSED:  # (time changes nothing while closed)
            return self._closed_permit  # (a value: one serves every request of a generation)
        self._notice_time(now)
        if (
            self._state is BreakerState.HALF_OPEN
            and self._probes_out + self._probes_passed < self.config.half_open_requests
        ):
            self._probes_out += 1
            return Permit(self._generation, probe=True)
        return None

    def record(self, permit: Permit, outcome: Outcome, now: float) -> None:
        """The outcome of the request ``permit`` let through."""
        if self._state is BreakerState.CLOSED:  # (time changes nothing while closed)
            if permit.generation == self._generation and outcome is not Outcome.ABANDONED:
                self._count(outcome is Outcome.FAILURE, now)
            return
        self._notice_time(now)  # (an open time that passed half-opens; never closes)
        if permit.generation != self._generation:
            return  # judged already: see "generation" in the module docstring
        if self._state is BreakerState.HALF_OPEN and permit.probe:
            self._probes_out -= 1
            if outcome is Outcome.FAILURE:
                self._process(BreakerInput.PROBE_FAILED, now)
            elif outcome is Outcome.SUCCESS:
                self._probes_passed += 1
                if self._probes_passed >= self.config.half_open_requests:
                    self._process(BreakerInput.PROBES_PASSED, now)

    def drain_events(self) -> list[StateChanged]:
        """The state changes since the last drain, oldest first."""
        events, self.events = self.events, []
        return events

    # -- inside ----------------------------------------------------------------------

    def _notice_time(self, now: float) -> None:
        if self._state is BreakerState.OPEN and now >= self._open_until:
            self._process(BreakerInput.OPEN_TIME_ELAPSED, self._open_until)

    def _count(self, failed: bool, now: float) -> None:
        """One request's outcome into the window (a counted one: not abandoned)."""
        config = self.config
        index = math.floor(now * self._buckets_per_second)
        buckets = self._buckets
        if not buckets or buckets[-1].index != index:
            # buckets out of the window leave it (and its sums) as a new one begins
            while buckets and buckets[0].index <= index - BUCKETS:
                gone = buckets.popleft()
                self._requests -= gone.requests
                self._failures -= gone.failures
            buckets.append(_Bucket(index))
        bucket = buckets[-1]
        bucket.requests += 1
        self._requests += 1
        if failed:
            bucket.failures += 1
            self._failures += 1
        # judged after a success too: it may be the one that brings the window up to
        # ``minimum_requests`` with the failures already in it
        requests = self._requests
        if (
            requests >= config.minimum_requests
            and self._failures * 100 >= config.failure_rate * requests
        ):
            self._process(BreakerInput.FAILURE_RATE_EXCEEDED, now)

    def _process(self, event: BreakerInput, now: float) -> None:
        effect, new = transition(self._state, event)
        config = self.config
        if effect is Effect.OPEN:
            self._clear_window()
            self._open_until = now + self._open_time
        elif effect is Effect.REOPEN_LONGER:
            self._open_time = min(self._open_time * 2, config.max_open_time)
            self._open_until = now + self._open_time
        elif effect is Effect.START_PROBING:
            self._probes_out = self._probes_passed = 0
        elif effect is Effect.RESET:
            self._clear_window()
            self._open_time = config.open_time
        self.events.append(StateChanged(self._state, new, now, event))
        self._state = new
        self._generation += 1
        self._closed_permit = Permit(self._generation, probe=False)

    def _clear_window(self) -> None:
        self._buckets.clear()
        self._requests = self._failures = 0
