"""Restart intensity: how often a supervisor may restart its children before it gives up.

Theory of operation
-------------------
Erlang/OTP's rule, unchanged: a supervisor with intensity ``(max_restarts=N, period=T)``
restarts crashed children as long as at most ``N`` crashes fall inside any window of
``T`` seconds. The crash that makes it ``N + 1`` escalates: the supervisor stops its
remaining children and crashes itself, handing the problem to its own supervisor.
``N = 0`` means "never restart".

A ``RestartBudget`` holds one supervisor's state. ``record_crash(now)`` returns the
decision for the crash that just happened:

    RESTART    fewer than N + 1 crashes (this one included) with ``now - t <= T``
    ESCALATE   N + 1 or more; from then on every call returns ESCALATE, because a
               supervisor that has escalated is dead and a new one gets a new budget

``now`` is a monotonic reading in seconds (the supervisor passes ``trio.current_time()``);
it must never decrease. Only the last ``N + 1`` crash times matter: with times in order,
more than ``N`` crashes lie in the window iff the (N+1)-th most recent one does. So the
budget keeps exactly those, and its memory does not grow with the number of crashes.
"""

from __future__ import annotations

import enum
import math
from collections import deque

import attrs


class Decision(enum.Enum):
    """What a supervisor does about a crash."""

    RESTART = "restart"
    ESCALATE = "escalate"


def _positive_finite(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{attribute.name} must be a positive number of seconds, not {value!r}")


@attrs.frozen
class RestartIntensity:
    """At most ``max_restarts`` crashes in any ``period`` seconds; one more escalates."""

    max_restarts: int = attrs.field(
        default=3, validator=[attrs.validators.instance_of(int), attrs.validators.ge(0)]
    )
    period: float = attrs.field(default=5.0, validator=_positive_finite)


@attrs.define
class RestartBudget:
    """One supervisor's crash history, judged against its ``RestartIntensity``."""

    intensity: RestartIntensity
    _recent: deque[float] = attrs.field(init=False)
    _escalated: bool = attrs.field(default=False, init=False)

    @_recent.default
    def _last_n_plus_one(self) -> deque[float]:
        return deque(maxlen=self.intensity.max_restarts + 1)

    @property
    def escalated(self) -> bool:
        """True once a crash has exceeded the intensity; it stays true."""
        return self._escalated

    def record_crash(self, now: float) -> Decision:
        """Count a crash at ``now`` and decide whether the supervisor may restart."""
        if not self._escalated:
            self._recent.append(now)
            oldest = self._recent[0]
            full = len(self._recent) == self._recent.maxlen
            self._escalated = full and now - oldest <= self.intensity.period
        return Decision.ESCALATE if self._escalated else Decision.RESTART
