"""One-for-one supervision for the actor runtime (Erlang/OTP's supervisor, on Trio).

A supervisor starts its children in order, each with ``nursery.start()`` and only once
the previous one is ready; restarts a child that crashes, leaving its siblings alone;
and stops its children newest first. Past its restart intensity (see
``policies.restart``) it stops the rest and raises ``SupervisorEscalation`` from the
last crash. ``run_supervisor`` follows the ``nursery.start()`` protocol itself, so a
supervisor is a valid child and its escalation is a crash in the eyes of its parent.

    ChildSpec(name, start, restart)
        start(task_status=...)   calls task_status.started(handle) once ready, then runs
                                 until cancelled (or crashes)
        restart="permanent"      restart whenever it ends; as in OTP a normal exit is
                                 restarted and counted too, so a child that returns at
                                 once cannot spin
                "transient"      restart only after an exception
                "temporary"      never restart

Handles across restarts
-----------------------
``handle[name]`` is what the child's current incarnation passed to ``started()``. A
handle that must outlive restarts, such as an actor's inbox, comes from whoever builds
the ChildSpec: make the channel there, give ``start`` the receive side and callers the
send side. Every incarnation then serves the same inbox, messages sent during a restart
wait in it, and an incarnation must not close it::

    inbox_tx, inbox_rx = trio.open_memory_channel[EchoMsg](16)
    spec = ChildSpec("echo", functools.partial(run_echo, inbox_rx))
    echo = EchoHandle(inbox_tx)          # good for every incarnation of "echo"

How it runs
-----------
The supervisor is an actor: one task owns the children and the restart budget, and
whatever changes them arrives in its inbox (a child ended, start a child, stop one).
Each incarnation is a fresh task started with ``nursery.start()`` inside its own cancel
scope, which is shielded once the child is ready. Cancelling the supervisor therefore
reaches its own task first, and that task stops the children one at a time, newest
first, waiting up to ``grace`` seconds for each before moving on (a child that takes
longer still holds up the supervisor's exit, as nothing in Trio can kill a task).
Only ``Exception`` is a crash: ``trio.Cancelled``, ``KeyboardInterrupt`` and other
``BaseException``s propagate.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Literal, Protocol, TypeVar, get_args, overload

import attrs
import trio

from gateway.errors import SupervisorEscalation
from gateway.runtime.actor import ask, command
from policies.restart import Decision, RestartBudget, RestartIntensity

__all__ = ["ChildSpec", "ChildStart", "Restart", "SupervisorHandle", "run_supervisor"]

logger = logging.getLogger("triogate.supervisor")

Restart = Literal["permanent", "transient", "temporary"]
T = TypeVar("T")


class ChildStart(Protocol):
    """An async callable that follows the ``nursery.start()`` protocol."""

    def __call__(self, *, task_status: trio.TaskStatus[object]) -> Awaitable[object]: ...


@attrs.frozen
class ChildSpec:
    """How to start a child and when to restart it."""

    name: str
    start: ChildStart
    restart: Restart = attrs.field(
        default="permanent", validator=attrs.validators.in_(get_args(Restart))
    )


@attrs.define(eq=False)
class _Child:
    """A child and its current incarnation."""

    spec: ChildSpec
    handle: object = None
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    ended: trio.Event = attrs.Factory(trio.Event)


@attrs.frozen
class _ChildEnded:
    child: _Child
    error: Exception | None


@attrs.frozen
class _StartChild:
    spec: ChildSpec
    reply: trio.MemorySendChannel[_Child | Exception]


@attrs.frozen
class _StopChild:
    name: str
    reply: trio.MemorySendChannel[Exception | None]


_Message = _ChildEnded | _StartChild | _StopChild


@attrs.frozen
class _Escalation:
    reason: str
    cause: Exception | None


class _Ready(trio.TaskStatus[object]):
    """The ``task_status`` an incarnation sees: records its handle, then shields it."""

    def __init__(
        self, child: _Child, scope: trio.CancelScope, outer: trio.TaskStatus[object]
    ) -> None:
        self.called = False
        self._child = child
        self._scope = scope
        self._outer = outer

    def started(self, value: object = None) -> None:
        self._outer.started(value)
        self.called = True
        self._child.handle = value
        # From now on only the supervisor stops this child, in order, not the first
        # cancellation that sweeps through the nursery.
        self._scope.shield = True


class _Supervisor:
    """The supervisor's state; only ``serve()``'s task changes it."""

    def __init__(
        self,
        name: str,
        budget: RestartBudget,
        clock: Callable[[], float],
        grace: float,
        nursery: trio.Nursery,
    ) -> None:
        self.name = name
        self.children: dict[str, _Child] = {}  # in start order
        self.scope = trio.CancelScope()  # cancelled by SupervisorHandle.aclose()
        self.stopped = trio.Event()
        # Buffer 0: an ended child waits until its supervisor has heard about it.
        self.inbox, self._inbox_rx = trio.open_memory_channel[_Message](0)
        self._budget = budget
        self._clock = clock
        self._grace = grace
        self._nursery = nursery

    async def serve(
        self, specs: list[ChildSpec], task_status: trio.TaskStatus[SupervisorHandle]
    ) -> _Escalation | None:
        """Start the children, then handle the inbox until closed or escalating."""
        try:
            with self.scope:
                for spec in specs:
                    try:
                        await self._start_new(spec)
                    except Exception as exc:
                        # A half-started gateway must not run. The escalation carries
                        # the error to whoever started us, so the traceback is debug.
                        logger.debug(
                            "supervisor %r: child %r failed to start",
                            self.name,
                            spec.name,
                            exc_info=exc,
                        )
                        return _Escalation(f"child {spec.name!r} failed to start", exc)
                task_status.started(SupervisorHandle(self))
                async for message in self._inbox_rx:
                    escalation = await self._handle(message)
                    if escalation is not None:
                        return escalation
            return None  # aclose()
        finally:
            await self._stop_all()
            self._inbox_rx.close()
            self.stopped.set()

    async def _handle(self, message: _Message) -> _Escalation | None:
        match message:
            case _ChildEnded(child, error):
                return await self._child_ended(child, error)
            case _StartChild(spec, reply):
                with reply:
                    try:
                        result: _Child | Exception = await self._start_new(spec)
                    except Exception as exc:
                        result = exc
                    reply.send_nowait(result)
            case _StopChild(name, reply):
                with reply:
                    if name in self.children:
                        await self._stop(self.children[name])
                    reply.send_nowait(None)
        return None

    async def _child_ended(self, child: _Child, error: Exception | None) -> _Escalation | None:
        spec = child.spec
        if error is None:
            logger.info("supervisor %r: child %r exited", self.name, spec.name)
        else:
            self._log_crash(spec.name, "crashed", error)
        if spec.restart == "temporary" or (spec.restart == "transient" and error is None):
            del self.children[spec.name]
            return None
        while self._budget.record_crash(self._clock()) is Decision.RESTART:
            try:
                await self._start(child)
                return None
            except Exception as exc:
                self._log_crash(spec.name, "crashed while restarting", exc)
                error = exc
        intensity = self._budget.intensity
        return _Escalation(
            f"child {spec.name!r} went past the restart intensity"
            f" ({intensity.max_restarts} restarts in {intensity.period}s)",
            error,
        )

    async def _start_new(self, spec: ChildSpec) -> _Child:
        if spec.name in self.children:
            raise ValueError(f"supervisor {self.name!r} already has a child {spec.name!r}")
        child = _Child(spec)
        await self._start(child)
        # Only now: if start() raised, no incarnation is left running to stop.
        self.children[spec.name] = child
        return child

    async def _start(self, child: _Child) -> None:
        child.scope, child.ended = trio.CancelScope(), trio.Event()
        await self._nursery.start(self._run_incarnation, child, child.scope, child.ended)

    async def _run_incarnation(
        self,
        child: _Child,
        scope: trio.CancelScope,
        ended: trio.Event,
        *,
        task_status: trio.TaskStatus[object],
    ) -> None:
        ready = _Ready(child, scope, task_status)
        try:
            with scope:
                try:
                    await child.spec.start(task_status=ready)
                except Exception as exc:
                    if not ready.called:
                        raise  # still starting: nursery.start() raises it in serve()
                    error: Exception | None = exc
                else:
                    if not ready.called:
                        return  # nursery.start() raises "exited without calling started"
                    error = None
                await self.inbox.send(_ChildEnded(child, error))
        finally:
            ended.set()

    async def _stop(self, child: _Child) -> None:
        """Cancel one child and give it ``grace`` seconds to finish, shielded."""
        child.scope.cancel()
        with trio.move_on_after(self._grace, shield=True) as waiting:
            await child.ended.wait()
        if waiting.cancelled_caught:
            logger.warning(
                "supervisor %r: child %r still stopping after %ss; moving on",
                self.name,
                child.spec.name,
                self._grace,
            )
        del self.children[child.spec.name]

    async def _stop_all(self) -> None:
        for child in reversed(list(self.children.values())):
            await self._stop(child)

    def _log_crash(self, child: str, what: str, error: Exception) -> None:
        logger.error("supervisor %r: child %r %s", self.name, child, what, exc_info=error)


class SupervisorHandle:
    """A running supervisor: its children's current handles, and commands for it."""

    def __init__(self, supervisor: _Supervisor) -> None:
        self._supervisor = supervisor

    @property
    def name(self) -> str:
        return self._supervisor.name

    def __getitem__(self, name: str) -> object:
        """The handle the child's current incarnation passed to ``task_status.started()``."""
        return self._supervisor.children[name].handle

    def __contains__(self, name: object) -> bool:
        return name in self._supervisor.children

    def __iter__(self) -> Iterator[str]:
        """The children's names, in start order."""
        return iter(list(self._supervisor.children))

    @overload
    def child(self, name: str) -> object: ...
    @overload
    def child(self, name: str, kind: type[T]) -> T: ...
    def child(self, name: str, kind: type[object] = object) -> object:
        """``self[name]``, checked to be a ``kind`` when given."""
        handle = self[name]
        if not isinstance(handle, kind):
            raise TypeError(f"child {name!r} has a {type(handle).__name__} handle, not {kind}")
        return handle

    async def start_child(self, spec: ChildSpec) -> object:
        """Start and supervise one more child; returns its handle once it is ready.

        Raises whatever the child raised before it was ready (that does not count
        against the restart intensity), ``ValueError`` if the name is taken, or
        ``ActorStopped`` if the supervisor has stopped.
        """
        child: _Child = await ask(
            self._supervisor.inbox, lambda reply: _StartChild(spec, reply), who=self._who
        )
        return child.handle

    async def stop_child(self, name: str) -> None:
        """Stop a child for good (no restart) and wait until it has stopped.

        Raises ``KeyError`` if there is no such child.
        """
        if name not in self:
            raise KeyError(name)
        await command(self._supervisor.inbox, lambda reply: _StopChild(name, reply), who=self._who)

    async def aclose(self) -> None:
        """Stop every child, newest first, and wait until the supervisor has stopped."""
        self._supervisor.scope.cancel()
        await self._supervisor.stopped.wait()

    @property
    def _who(self) -> str:
        return f"supervisor {self.name!r}"


async def run_supervisor(
    children: Iterable[ChildSpec],
    *,
    intensity: RestartIntensity = RestartIntensity(),  # noqa: B008 (frozen, immutable)
    name: str = "root",
    clock: Callable[[], float] = trio.current_time,
    grace: float = 5.0,
    task_status: trio.TaskStatus[SupervisorHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Start ``children`` in order, keep them running one-for-one, stop them newest first.

    Reports a ``SupervisorHandle`` once every child is ready and returns after its
    ``aclose()``. Raises ``SupervisorEscalation`` from the original error when a child
    fails its first start or ends more often than ``intensity`` allows.
    """
    specs = list(children)
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"supervisor {name!r}: child names must be unique, got {names}")
    if grace < 0:
        raise ValueError(f"grace must be >= 0, not {grace!r}")
    async with trio.open_nursery() as nursery:
        supervisor = _Supervisor(name, RestartBudget(intensity), clock, grace, nursery)
        escalation = await supervisor.serve(specs, task_status)
    if escalation is not None:
        raise SupervisorEscalation(
            f"supervisor {name!r}: {escalation.reason}"
        ) from escalation.cause
