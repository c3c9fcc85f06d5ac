"""A staged rollout: move a route's traffic from a stable cluster to a canary in steps,
judged by gates, rolled back at the first breach.

Theory of operation
-------------------
A ``RolloutSchedule`` follows a ``RolloutPlan``: ``steps`` (the canary's percent of the route's
traffic, increasing), ``dwell`` (seconds each step holds at least), ``interval``
(seconds between judgements) and ``gates`` (the most the canary may fail). It is in
one of five states:

    RUNNING      the canary has ``steps[step]`` percent; every ``interval`` the caller
                 hands ``judge`` the canary's figures on the route since the step began
    PAUSED       the weight holds; nothing is judged until ``resume``
    SUCCEEDED    the canary has 100 percent (every step passed, or ``promote``)
    ROLLED_BACK  a gate was breached: the canary has 0 percent, and ``breach`` says why
    ABORTED      ``abort``: the canary has 0 percent

The last three are final: a finished rollout never moves again. ``judge`` waits while
the step has fewer than ``gates.min_requests`` requests (too few to judge either way);
with enough, a gate breached rolls back at once, and otherwise the step passes once
``dwell`` seconds have gone since it began (the last step's passing succeeds). Resuming
a pause, or restoring a rollout after a restart (``RolloutSchedule.restore``), restarts the
step's dwell: the figures before it describe another period.

Every transition is a row of ``TRANSITIONS``: ``(state, input) -> (effect, next
state)``; an input with no row raises ``ImpossibleTransition`` (pausing a finished
rollout, resuming a running one: the caller turns it into a 409). Each transition
leaves a ``RolloutChanged`` event, drained by ``drain_events``.

``now`` is a monotonic reading in seconds on the caller's clock; it must never
decrease. Nothing here reads a clock, a stat or a socket: the caller measures.
"""

from __future__ import annotations

import enum
import itertools
from typing import Any, Final

import attrs

from policies import settings
from policies.errors import ImpossibleTransition, InvalidSetting

__all__ = [
    "TRANSITIONS",
    "Breach",
    "Effect",
    "RolloutChanged",
    "RolloutGates",
    "RolloutInput",
    "RolloutPlan",
    "RolloutSchedule",
    "RolloutState",
    "StepFigures",
    "check_steps",
    "steps_tuple",
    "transition",
]


class RolloutState(enum.Enum):
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"


FINAL_STATES: Final = frozenset(
    {RolloutState.SUCCEEDED, RolloutState.ROLLED_BACK, RolloutState.ABORTED}
)


class RolloutInput(enum.Enum):
    """What moves a rollout; also the ``reason`` of a ``RolloutChanged``."""

    #: a step other than the last held for ``dwell`` with its gates kept
    STEP_PASSED = "step_passed"
    #: the last step did
    LAST_STEP_PASSED = "last_step_passed"
    #: a gate was breached
    GATE_BREACHED = "gate_breached"
    PAUSE = "pause"
    RESUME = "resume"
    ABORT = "abort"
    PROMOTE = "promote"


class Effect(enum.Enum):
    """What a transition does to the weight and the step's clock."""

    #: the next step's weight, its dwell starting now
    NEXT_STEP = "next_step"
    #: 100 percent to the canary
    FULL = "full"
    #: 0 percent to the canary
    ZERO = "zero"
    #: the weight holds
    HOLD = "hold"
    #: the weight holds and the step's dwell starts again now
    RESTART_DWELL = "restart_dwell"


_S = RolloutState
_I = RolloutInput

#: every legal transition; anything else is impossible
TRANSITIONS: Final[dict[tuple[RolloutState, RolloutInput], tuple[Effect, RolloutState]]] = {
    (_S.RUNNING, _I.STEP_PASSED): (Effect.NEXT_STEP, _S.RUNNING),
    (_S.RUNNING, _I.LAST_STEP_PASSED): (Effect.FULL, _S.SUCCEEDED),
    (_S.RUNNING, _I.GATE_BREACHED): (Effect.ZERO, _S.ROLLED_BACK),
    (_S.RUNNING, _I.PAUSE): (Effect.HOLD, _S.PAUSED),
    (_S.RUNNING, _I.ABORT): (Effect.ZERO, _S.ABORTED),
    (_S.RUNNING, _I.PROMOTE): (Effect.FULL, _S.SUCCEEDED),
    (_S.PAUSED, _I.RESUME): (Effect.RESTART_DWELL, _S.RUNNING),
    (_S.PAUSED, _I.ABORT): (Effect.ZERO, _S.ABORTED),
    (_S.PAUSED, _I.PROMOTE): (Effect.FULL, _S.SUCCEEDED),
}


def transition(state: RolloutState, event: RolloutInput) -> tuple[Effect, RolloutState]:
    """The row of ``TRANSITIONS`` for ``(state, event)``; ``ImpossibleTransition`` if none."""
    try:
        return TRANSITIONS[state, event]
    except KeyError:
        raise ImpossibleTransition("rollout", state, event) from None


def steps_tuple(value: object) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, list | tuple) else value  # type: ignore[return-value]


def check_steps(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """attrs validator: increasing percents 1-100, at least one."""
    if (
        not isinstance(value, tuple)
        or not value
        or not all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= 100 for s in value)
        or any(a >= b for a, b in itertools.pairwise(value))
    ):
        raise InvalidSetting(
            attribute.name, f"must be increasing percents 1-100, at least one, not {value!r}"
        )


@attrs.frozen
class RolloutGates:
    """The most the canary may fail during a step before the rollout goes back to 0%."""

    #: 5xx responses and local failures over all the canary's requests, 0-1
    max_error_rate: float = attrs.field(default=0.01, validator=settings.between(0, 1))
    #: the 99th percentile of the canary's request time, in ms (None: not a gate)
    max_p99_ms: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(settings.positive)
    )
    #: requests the step must have seen before it is judged either way
    min_requests: int = attrs.field(default=100, validator=settings.integer_at_least(1))

    def breach(self, figures: StepFigures) -> Breach | None:
        """The first gate ``figures`` breach (error rate, then p99), or None."""
        rate = figures.errors / figures.requests if figures.requests else 0.0
        if rate > self.max_error_rate:
            return Breach("max_error_rate", rate, self.max_error_rate)
        p99, limit = figures.p99_ms, self.max_p99_ms
        if p99 is not None and limit is not None and p99 > limit:
            return Breach("max_p99_ms", p99, limit)
        return None


@attrs.frozen
class RolloutPlan:
    """The steps of a rollout and how each is judged."""

    #: the canary's percent at each step, increasing
    steps: tuple[int, ...] = attrs.field(
        default=(5, 25, 50, 100), converter=steps_tuple, validator=check_steps
    )
    #: seconds each step holds at least
    dwell: float = attrs.field(default=60.0, validator=settings.positive)
    #: seconds between judgements
    interval: float = attrs.field(default=5.0, validator=settings.positive)
    gates: RolloutGates = RolloutGates()


@attrs.frozen
class StepFigures:
    """The canary's requests on the route since the step began."""

    requests: int
    #: 5xx responses and local failures among them
    errors: int
    #: their 99th percentile time in ms; None when none ended
    p99_ms: float | None = None


@attrs.frozen
class Breach:
    """A gate breached: which, the value measured and the limit."""

    gate: str
    value: float
    limit: float


@attrs.frozen
class RolloutChanged:
    """The rollout went from ``old`` (at ``old_weight`` percent) to ``new`` at ``at``."""

    old: RolloutState
    new: RolloutState
    old_weight: int
    new_weight: int
    at: float
    reason: RolloutInput
    #: the gate breached, for ``GATE_BREACHED``
    breach: Breach | None = None


@attrs.define
class RolloutSchedule:
    """One rollout's schedule; see the module docstring."""

    plan: RolloutPlan
    #: when the first step began
    started_at: float
    _state: RolloutState = attrs.field(default=RolloutState.RUNNING, init=False)
    _step: int = attrs.field(default=0, init=False)
    _step_started_at: float = attrs.field(init=False)
    _breach: Breach | None = attrs.field(default=None, init=False)
    _events: list[RolloutChanged] = attrs.field(factory=list, init=False)

    @_step_started_at.default
    def _first_step(self) -> float:
        return self.started_at

    @classmethod
    def restore(
        cls, plan: RolloutPlan, state: RolloutState, step: int, now: float
    ) -> RolloutSchedule:
        """A rollout as it was saved (after a restart), its step's dwell starting ``now``."""
        if not 0 <= step < len(plan.steps):
            raise InvalidSetting("step", f"must be 0-{len(plan.steps) - 1}, not {step}")
        rollout = cls(plan, now)
        rollout._state = state
        rollout._step = step
        return rollout

    # -- reading ---------------------------------------------------------------------

    @property
    def state(self) -> RolloutState:
        return self._state

    @property
    def step(self) -> int:
        """The index of the current (or last) step in ``plan.steps``."""
        return self._step

    @property
    def step_started_at(self) -> float:
        """When the current step's dwell began."""
        return self._step_started_at

    @property
    def breach(self) -> Breach | None:
        """Why it was rolled back; None unless it was."""
        return self._breach

    @property
    def finished(self) -> bool:
        return self._state in FINAL_STATES

    @property
    def weight(self) -> int:
        """The canary's percent of the route's traffic now."""
        state = self._state
        if state is RolloutState.SUCCEEDED:
            return 100
        if state is RolloutState.ROLLED_BACK or state is RolloutState.ABORTED:
            return 0
        return self.plan.steps[self._step]

    def drain_events(self) -> list[RolloutChanged]:
        """The transitions since the last drain, oldest first."""
        events, self._events = self._events, []
        return events

    # -- inputs ----------------------------------------------------------------------

    def judge(self, figures: StepFigures, now: float) -> RolloutInput | None:
        """Judge the step by the canary's ``figures`` since ``step_started_at``: the input
        it fed (a breach, a step passed), or None (too few requests, dwell not over, or
        not running)."""
        if self._state is not RolloutState.RUNNING:
            return None
        gates = self.plan.gates
        if figures.requests < gates.min_requests:
            return None
        breach = gates.breach(figures)
        if breach is not None:
            self._feed(RolloutInput.GATE_BREACHED, now, breach)
            return RolloutInput.GATE_BREACHED
        if now - self._step_started_at < self.plan.dwell:
            return None
        last = self._step == len(self.plan.steps) - 1
        event = RolloutInput.LAST_STEP_PASSED if last else RolloutInput.STEP_PASSED
        self._feed(event, now)
        return event

    def pause(self, now: float) -> None:
        self._feed(RolloutInput.PAUSE, now)

    def resume(self, now: float) -> None:
        self._feed(RolloutInput.RESUME, now)

    def abort(self, now: float) -> None:
        self._feed(RolloutInput.ABORT, now)

    def promote(self, now: float) -> None:
        self._feed(RolloutInput.PROMOTE, now)

    # -- inside ----------------------------------------------------------------------

    def _feed(self, event: RolloutInput, now: float, breach: Breach | None = None) -> None:
        effect, new = transition(self._state, event)
        old, old_weight = self._state, self.weight
        self._state = new
        if effect is Effect.NEXT_STEP:
            self._step += 1
            self._step_started_at = now
        elif effect is Effect.RESTART_DWELL:
            self._step_started_at = now
        elif effect is Effect.ZERO and breach is not None:
            self._breach = breach
        self._events.append(RolloutChanged(old, new, old_weight, self.weight, now, event, breach))
