"""The rollout actor: runs the config's staged rollouts, moving each route's split.

Theory of operation: the actor's task is the only one that moves a rollout. For every
active rollout (``running`` or ``paused``) in the running config it keeps a
``RolloutSchedule`` (``policies.rollout``, pure) and, every ``interval``, hands it the
canary's figures on the route since the step began: its requests, those that ended in
a 5xx (an upstream's or a local reply's: connect failure, reset, timeout, no healthy
endpoint) and their p99, from the route's per-cluster stats (``RouteClusterStats``,
counted by the data path only for the routes a rollout watches). The figures of a step
are the difference between the stats now and at the step's start (its *baseline*), so
nothing is reset and other readers of the stats see nothing of it. With worker
processes the stats are first summed from the workers (``refresh``), once per
judgement, never per request.

When the schedule moves (a step passed, a gate breached, an operator's command), the
actor writes the move as one config change through the control plane: the rollout's
``status`` (state, step, weight, the history with the breach) and the route's split
(``stable`` at ``100 - weight``, ``canary`` at ``weight``) together, so the weight in
force, the status shown and the state file never disagree. A breach is written at once:
the canary's share is 0 from the new data plane on.

The config is the truth, the schedules are derived from it: on start (after a restart
of the actor or of the gateway, the config read back from the state file) and at every
wake-up the actor *reconciles*: a rollout it does not run yet, or whose config differs
from what it last saw (a ``PUT /config`` written whole), is restored at its saved step
with its dwell starting again (``RolloutSchedule.restore``); a rollout gone from the
config, or finished, is dropped. A rollout whose route does not carry its weight yet (a
config file that names a rollout and a route with one cluster) gets it written.

Commands arrive in the inbox: ``StartRollout`` (``POST /rollouts``) and
``ActOnRollout`` (pause, resume, abort, promote). A refused command changes nothing:
``RolloutNotFound`` (404), ``RolloutConflict`` (409: the name is taken, or the state
does not take the command), or the control plane's refusal of the change (422 naming
the field). The actor's own write can fail too (the route was removed meanwhile): it is
logged and the next reconcile restores the schedule from the config.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from types import MappingProxyType
from typing import Any, Final, Literal

import attrs
import trio

from gateway.config import (
    Config,
    Listener,
    Rollout,
    RolloutEvent,
    RolloutStatus,
    Route,
    WeightedCluster,
)
from gateway.control.plane import ControlPlane
from gateway.errors import RolloutConflict, RolloutNotFound
from gateway.observe.stats import StatsRegistry
from gateway.observe.stats.histogram import BUCKETS, difference, quantile
from gateway.runtime.actor import ask
from policies.errors import ImpossibleTransition
from policies.rollout import (
    RolloutChanged,
    RolloutInput,
    RolloutSchedule,
    RolloutState,
    StepFigures,
)

__all__ = [
    "ActOnRollout",
    "RolloutAction",
    "RolloutsHandle",
    "StartRollout",
    "StepView",
    "route_weights",
    "run_rollouts",
]

log = logging.getLogger("triogate.rollouts")

RolloutAction = Literal["pause", "resume", "abort", "promote"]
ACTIONS: Final[tuple[RolloutAction, ...]] = ("pause", "resume", "abort", "promote")

#: seconds between reconciles with the config when no judgement is due sooner
RECONCILE: Final = 1.0
#: history lines kept per rollout (the oldest go first)
HISTORY: Final = 100


@attrs.frozen
class StartRollout:
    """Command: start ``rollout`` at its first step (its ``status`` is ignored)."""

    rollout: Rollout
    reply: trio.MemorySendChannel[Config | Exception]


@attrs.frozen
class ActOnRollout:
    """Command: pause, resume, abort (to 0%) or promote (to 100%) the rollout ``name``."""

    name: str
    action: RolloutAction
    reply: trio.MemorySendChannel[Config | Exception]


RolloutMsg = StartRollout | ActOnRollout


@attrs.frozen
class StepView:
    """The canary's figures in an active rollout's current step, as last judged."""

    #: wall-clock time the step's dwell began (Unix seconds)
    step_started: float
    #: wall-clock time of the last judgement; None before the first
    judged_at: float | None
    requests: int
    errors: int
    error_rate: float | None
    p99_ms: float | None

    def as_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


class RolloutsHandle:
    """Handle of the rollout actor: its commands, and the figures it last judged."""

    def __init__(
        self,
        control: ControlPlane,
        stats: StatsRegistry,
        refresh: Callable[[], Awaitable[object]] | None = None,
        leading: Callable[[], bool] | None = None,
    ) -> None:
        #: the running config, and ``apply`` for the actor's writes
        self.control = control
        self.stats = stats
        #: brings ``stats`` up to date first (a primary: the workers' figures summed)
        self.refresh = refresh
        #: in a fleet: whether this node drives the rollouts (None: it always does).
        #: A follower keeps the schedules and takes commands, but judges nothing and
        #: writes no weights of its own: the leader's arrive with the config.
        self.leading = leading
        #: per active rollout, its current step's figures; replaced whole, never edited
        self.steps: MappingProxyType[str, StepView] = MappingProxyType({})
        self.inbox, self._inbox_rx = trio.open_memory_channel[RolloutMsg](16)

    async def start(self, rollout: Rollout) -> Config:
        """Start ``rollout``; returns the config it is in. Raises ``RolloutConflict``
        (the name is taken), ``ConfigError`` (422: a field names something missing)."""
        config: Config = await ask(
            self.inbox, lambda reply: StartRollout(rollout, reply), who="the rollout actor"
        )
        return config

    async def act(self, name: str, action: RolloutAction) -> Config:
        """Pause, resume, abort or promote ``name``; returns the config after it."""
        config: Config = await ask(
            self.inbox, lambda reply: ActOnRollout(name, action, reply), who="the rollout actor"
        )
        return config


async def run_rollouts(
    handle: RolloutsHandle,
    *,
    task_status: trio.TaskStatus[RolloutsHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The rollout actor, until cancelled."""
    actor = _RolloutsActor(handle)
    await actor.reconcile()
    task_status.started(handle)
    while True:
        msg: RolloutMsg | None = None
        with trio.move_on_at(actor.next_wake()):
            msg = await handle._inbox_rx.receive()
        match msg:
            case None:
                await actor.tick()
            case StartRollout(rollout=rollout, reply=reply):
                with reply:
                    reply.send_nowait(await actor.start(rollout))
            case ActOnRollout(name=name, action=action, reply=reply):
                with reply:
                    reply.send_nowait(await actor.act(name, action))


@attrs.define
class _Figures:
    """The canary's running totals on the route: requests, 5xx, time histogram."""

    requests: int
    errors: int
    counts: tuple[int, ...]

    @classmethod
    def read(cls, stats: StatsRegistry, rollout: Rollout) -> _Figures:
        scope = stats.routes.get((rollout.listener, rollout.route, rollout.canary))
        if scope is None:
            return cls(0, 0, (0,) * BUCKETS)
        classes = scope.upstream_rq_xx
        return cls(sum(classes[1:]), sum(classes[5:]), tuple(scope.upstream_rq_time.counts))

    def since(self, base: _Figures) -> StepFigures | None:
        """The figures between ``base`` and these; None when the stats were reset since."""
        requests, errors = self.requests - base.requests, self.errors - base.errors
        if requests < 0 or errors < 0:
            return None
        counts = difference(self.counts, base.counts)
        return StepFigures(requests, errors, quantile(counts, 0.99))


@attrs.define
class _Run:
    """One active rollout as the actor runs it."""

    #: the rollout as the config held it when last seen or written
    spec: Rollout
    schedule: RolloutSchedule
    #: the canary's totals when the step began
    base: _Figures
    step_started: float
    next_judgement: float
    view: StepView


class _RolloutsActor:
    """The rollout actor's state; only its own task calls it."""

    def __init__(self, handle: RolloutsHandle) -> None:
        self.handle = handle
        self.control = handle.control
        self.runs: dict[str, _Run] = {}

    # -- time ------------------------------------------------------------------------

    def next_wake(self) -> float:
        now = trio.current_time()
        wake = now + RECONCILE
        for run in self.runs.values():
            if run.schedule.state is RolloutState.RUNNING:
                wake = min(wake, run.next_judgement)
        return wake

    @property
    def leads(self) -> bool:
        return self.handle.leading is None or self.handle.leading()

    async def tick(self) -> None:
        await self.reconcile()
        if not self.leads:
            return
        now = trio.current_time()
        due = [
            run
            for run in self.runs.values()
            if run.schedule.state is RolloutState.RUNNING and run.next_judgement <= now
        ]
        if not due:
            return
        if self.handle.refresh is not None:
            await self.handle.refresh()
        for run in due:
            await self._judge(run)

    async def _judge(self, run: _Run) -> None:
        now = trio.current_time()
        run.next_judgement = now + run.spec.interval
        totals = _Figures.read(self.handle.stats, run.spec)
        figures = totals.since(run.base)
        if figures is None:  # the stats were reset: the step's figures start again
            run.base, figures = totals, StepFigures(0, 0)
        run.view = _step_view(run.step_started, figures)
        self._publish()
        if run.schedule.judge(figures, now) is not None:
            await self._write(run)

    # -- commands ----------------------------------------------------------------------

    async def start(self, rollout: Rollout) -> Config | Exception:
        if self.control.config.rollout(rollout.name) is not None:
            return RolloutConflict(
                f"a rollout named {rollout.name!r} exists (DELETE it to start another)"
            )
        now = trio.current_time()
        schedule = RolloutSchedule(rollout.plan(), now)
        weight = schedule.weight
        status = RolloutStatus(
            "running",
            0,
            weight,
            (RolloutEvent(time.time(), "started", "running", 0, weight),),
        )
        spec = attrs.evolve(rollout, status=status)

        def add(config: Config) -> Config:
            if config.rollout(spec.name) is not None:
                raise RolloutConflict(f"a rollout named {spec.name!r} exists")
            config = attrs.evolve(config, rollouts=(*config.rollouts, spec))
            return with_route_weight(config, spec, weight)

        try:
            config: Config = await self.control.apply(add)
        except Exception as e:  # the control plane's refusal is the caller's answer
            return e
        self._run(config.rollout(spec.name) or spec, schedule, now)
        log.info("rollout %s started: %s at %d%%", spec.name, spec.canary, weight)
        return config

    async def act(self, name: str, action: RolloutAction) -> Config | Exception:
        run = self.runs.get(name)
        if run is None:
            rollout = self.control.config.rollout(name)
            if rollout is None:
                return RolloutNotFound(f"no rollout named {name!r}")
            return RolloutConflict(
                f"rollout {name!r} is {rollout.status.state}: it cannot {action}"
            )
        now = trio.current_time()
        try:
            getattr(run.schedule, action)(now)
        except ImpossibleTransition:
            return RolloutConflict(
                f"rollout {name!r} is {run.schedule.state.value}: it cannot {action}"
            )
        if action == "resume":  # the dwell starts again, on the figures from now on
            self._restart_step(run, now)
        try:
            return await self._write(run, raise_errors=True)
        except Exception as e:
            return e

    # -- the config --------------------------------------------------------------------

    async def reconcile(self) -> None:
        """Bring the schedules in line with the running config (see the module docstring)."""
        config: Config = self.control.config
        active = {r.name: r for r in config.rollouts if r.active}
        for name in [n for n in self.runs if n not in active]:
            del self.runs[name]
        now = trio.current_time()
        for name, spec in active.items():
            run = self.runs.get(name)
            if run is not None and run.spec == spec:
                continue
            status = spec.status
            schedule = RolloutSchedule.restore(
                spec.plan(), RolloutState(status.state), status.step, now
            )
            run = self._run(spec, schedule, now)
            if not self.leads:
                continue
            if status.weight != schedule.weight or route_weights(config, spec) != _split_of(
                spec, schedule.weight
            ):
                log.info("rollout %s: its route takes weight %d%%", name, schedule.weight)
                await self._write(run)
            else:
                log.info("rollout %s resumed at step %d (%d%%)", name, status.step, status.weight)
        self._publish()

    def _run(self, spec: Rollout, schedule: RolloutSchedule, now: float) -> _Run:
        totals = _Figures.read(self.handle.stats, spec)
        run = _Run(
            spec, schedule, totals, time.time(), now + spec.interval, _step_view(time.time())
        )
        self.runs[spec.name] = run
        self._publish()
        return run

    def _restart_step(self, run: _Run, now: float) -> None:
        run.base = _Figures.read(self.handle.stats, run.spec)
        run.step_started = time.time()
        run.next_judgement = now + run.spec.interval
        run.view = _step_view(run.step_started)

    async def _write(self, run: _Run, *, raise_errors: bool = False) -> Config:
        """Write the schedule's moves since the last write: status and route weight."""
        events = run.schedule.drain_events()
        spec = run.spec
        schedule = run.schedule
        history = (*spec.status.history, *(_event(e, schedule) for e in events))
        status = RolloutStatus(
            schedule.state.value,
            schedule.step,
            schedule.weight,
            history[-HISTORY:],
        )
        name, weight = spec.name, schedule.weight

        def move(config: Config) -> Config:
            current = config.rollout(name)
            if current is None:
                raise RolloutNotFound(f"no rollout named {name!r}")
            updated = attrs.evolve(current, status=status)
            config = attrs.evolve(
                config,
                rollouts=tuple(updated if r.name == name else r for r in config.rollouts),
            )
            return with_route_weight(config, updated, weight)

        try:
            config: Config = await self.control.apply(move)
        except Exception as e:
            # the next reconcile restores the schedule from the config as it stands
            log.warning("rollout %s: writing %s failed: %s", name, status.state, e)
            self.runs.pop(name, None)
            if raise_errors:
                raise
            return self.control.config
        written = config.rollout(name)
        assert written is not None
        run.spec = written
        for event in events:
            _log_change(name, event)
            if event.reason is RolloutInput.STEP_PASSED:
                self._restart_step(run, trio.current_time())
        if not written.active:
            self.runs.pop(name, None)
        self._publish()
        return config

    def _publish(self) -> None:
        self.handle.steps = MappingProxyType({n: r.view for n, r in self.runs.items()})


def _step_view(started: float, figures: StepFigures | None = None) -> StepView:
    if figures is None:
        return StepView(started, None, 0, 0, None, None)
    rate = figures.errors / figures.requests if figures.requests else None
    return StepView(started, time.time(), figures.requests, figures.errors, rate, figures.p99_ms)


def _event(change: RolloutChanged, schedule: RolloutSchedule) -> RolloutEvent:
    breach = change.breach
    return RolloutEvent(
        time.time(),
        change.reason.value,
        change.new.value,
        schedule.step,
        change.new_weight,
        None if breach is None else breach.gate,
        None if breach is None else breach.value,
        None if breach is None else breach.limit,
    )


def _log_change(name: str, change: RolloutChanged) -> None:
    breach = change.breach
    if breach is not None:
        log.warning(
            "rollout %s rolled back: %s %.4g over its limit %.4g; canary at 0%%",
            name,
            breach.gate,
            breach.value,
            breach.limit,
        )
    else:
        log.info(
            "rollout %s: %s, %s at %d%%",
            name,
            change.reason.value,
            change.new.value,
            change.new_weight,
        )


# -- the route's split -----------------------------------------------------------------


def _split_of(rollout: Rollout, weight: int) -> dict[str, int]:
    return {rollout.stable: 100 - weight, rollout.canary: weight}


def route_weights(config: Config, rollout: Rollout) -> dict[str, int] | None:
    """The weights of the rollout's route now, by cluster (one cluster: 100); None if
    the route is not there."""
    listener = config.listener(rollout.listener)
    if listener is None:
        return None
    for route in listener.all_routes():
        if route.name == rollout.route:
            if route.cluster is not None:
                return {route.cluster: 100}
            return {wc.cluster: wc.weight for wc in route.split}
    return None


def with_route_weight(config: Config, rollout: Rollout, weight: int) -> Config:
    """``config`` with the rollout's route split ``stable`` 100 - ``weight``, ``canary``
    ``weight`` (its other settings kept). A missing listener or route is left for the
    config's validation to name."""
    split = (
        WeightedCluster(rollout.stable, 100 - weight),
        WeightedCluster(rollout.canary, weight),
    )

    def reroute(route: Route) -> Route:
        if route.name != rollout.route:
            return route
        return attrs.evolve(route, cluster=None, split=split)

    def relisten(listener: Listener) -> Listener:
        if listener.name != rollout.listener:
            return listener
        return attrs.evolve(
            listener,
            routes=tuple(map(reroute, listener.routes)),
            virtual_hosts=tuple(
                attrs.evolve(vh, routes=tuple(map(reroute, vh.routes)))
                for vh in listener.virtual_hosts
            ),
        )

    return attrs.evolve(config, listeners=tuple(map(relisten, config.listeners)))
