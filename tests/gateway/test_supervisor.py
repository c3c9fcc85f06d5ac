"""The supervisor: one-for-one restarts, escalation, ordered shutdown, cancellation."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Awaitable, Callable

import attrs
import pytest
import trio
import trio.testing

from gateway.errors import ActorStopped, SupervisorEscalation
from gateway.runtime.supervisor import ChildSpec, Restart, SupervisorHandle, run_supervisor
from policies.restart import RestartIntensity

Journal = list[str]
Step = Callable[[int], Awaitable[None]]


async def crash(incarnation: int) -> None:
    raise RuntimeError(f"crash {incarnation}")


async def crash_first(incarnation: int) -> None:
    if incarnation == 1:
        raise RuntimeError("crash 1")
    await trio.sleep_forever()


def scripted(
    name: str,
    journal: Journal,
    *,
    before_ready: Step | None = None,
    after_ready: Step | None = None,
    cleanup: float = 0.0,
    restart: Restart = "permanent",
) -> ChildSpec:
    """A child whose incarnation ``n`` runs ``before_ready(n)``, reports ``n``, then ``after_ready(n)``.

    It writes ``started``, ``stopping`` and ``stopped`` to the journal; ``cleanup`` is how long
    it takes to stop once cancelled.
    """
    incarnations = itertools.count(1)

    async def run(*, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        n = next(incarnations)
        journal.append(f"{name} started")
        try:
            if before_ready is not None:
                await before_ready(n)
            task_status.started(n)
            if after_ready is None:
                await trio.sleep_forever()
            else:
                await after_ready(n)
        except trio.Cancelled:
            journal.append(f"{name} stopping")
            with trio.CancelScope(shield=True):
                await trio.sleep(cleanup)  # a slow stop is the behaviour (virtual time)
            journal.append(f"{name} stopped")
            raise

    return ChildSpec(name, run, restart)


@attrs.frozen
class Ping:
    text: str
    reply: trio.MemorySendChannel[str]


@attrs.frozen
class Crash:
    pass


@attrs.frozen
class EchoHandle:
    inbox: trio.MemorySendChannel[Ping | Crash]

    async def ask(self, text: str) -> str:
        reply, answer = trio.open_memory_channel[str](1)
        await self.inbox.send(Ping(text, reply))
        return await answer.receive()


def echo(name: str, journal: Journal) -> tuple[ChildSpec, EchoHandle]:
    """An echo actor whose inbox is made here, so one handle serves every incarnation."""
    inbox_tx, inbox_rx = trio.open_memory_channel[Ping | Crash](8)
    handle = EchoHandle(inbox_tx)

    async def run_echo(*, task_status: trio.TaskStatus[EchoHandle]) -> None:
        journal.append(f"{name} started")
        task_status.started(handle)
        try:
            async for message in inbox_rx:  # not `async with`: the next incarnation needs it
                match message:
                    case Ping(text, reply):
                        with reply:
                            reply.send_nowait(f"{name}: {text}")
                    case Crash():
                        raise RuntimeError(f"{name} was told to crash")
        except trio.Cancelled:
            journal.append(f"{name} stopping")
            raise

    return ChildSpec(name, run_echo), handle


def crash_records(caplog: pytest.LogCaptureFixture) -> list[tuple[str, BaseException]]:
    return [
        (r.getMessage(), r.exc_info[1])
        for r in caplog.records
        if r.name == "triogate.supervisor" and r.exc_info and r.exc_info[1] is not None
    ]


async def test_crashed_child_is_restarted_while_its_sibling_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    journal: Journal = []
    a_spec, a = echo("a", journal)
    b_spec, b = echo("b", journal)
    async with trio.open_nursery() as nursery:
        sup: SupervisorHandle = await nursery.start(run_supervisor, [a_spec, b_spec])
        assert await b.ask("before") == "b: before"

        await a.inbox.send(Crash())
        assert await a.ask("after") == "a: after"  # served by a's second incarnation
        assert await b.ask("after") == "b: after"

        assert journal == ["a started", "b started", "a started"]
        assert sup["a"] is a
        await sup.aclose()
    [(message, error)] = crash_records(caplog)
    assert "'a' crashed" in message
    assert isinstance(error, RuntimeError)
    assert error.__traceback__ is not None


async def test_handle_is_the_current_incarnations() -> None:
    journal: Journal = []
    spec = scripted("x", journal, after_ready=crash_first)
    async with trio.open_nursery() as nursery:
        sup: SupervisorHandle = await nursery.start(run_supervisor, [spec])
        await trio.testing.wait_all_tasks_blocked()
        assert sup["x"] == 2
        assert sup.child("x", int) == 2
        with pytest.raises(TypeError):
            sup.child("x", str)
        assert list(sup) == ["x"]
        await sup.aclose()


async def test_crashing_past_the_intensity_escalates_from_the_original_error(
    mock_clock: trio.testing.MockClock,
) -> None:
    # the clock stands still: the three crashes are in one period however slow the machine
    journal: Journal = []
    echo_spec, _ = echo("echo", journal)
    flaky = scripted("flaky", journal, after_ready=crash)
    with pytest.raises(SupervisorEscalation) as escalation:
        await run_supervisor([echo_spec, flaky], intensity=RestartIntensity(2, 5.0))
    cause = escalation.value.__cause__
    assert isinstance(cause, RuntimeError)
    assert str(cause) == "crash 3"  # the crash one past two restarts
    assert journal.count("flaky started") == 3
    assert journal[-1] == "echo stopping"


def crash_every(seconds: float) -> Step:
    async def crash_later(n: int) -> None:
        await trio.sleep(seconds)  # how far apart the crashes are (virtual time)
        raise RuntimeError(f"crash {n}")

    return crash_later


async def test_crashes_further_apart_than_the_period_are_restarted_forever(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal: Journal = []
    spec = scripted("x", journal, after_ready=crash_every(6.0))
    with trio.move_on_after(57):
        await run_supervisor([spec], intensity=RestartIntensity(1, 5.0))
    assert journal.count("x started") == 10  # crashed at 6, 12, ..., 54


async def test_crashes_closer_than_the_period_escalate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal: Journal = []
    spec = scripted("x", journal, after_ready=crash_every(2.0))
    with pytest.raises(SupervisorEscalation, match=r"\(1 restarts in 5.0s\)"):
        await run_supervisor([spec], intensity=RestartIntensity(1, 5.0))
    assert trio.current_time() == 4.0  # the crashes at 2 and 4 share a window


async def test_cancelling_the_supervisor_is_not_swallowed() -> None:
    journal: Journal = []
    specs = [scripted(name, journal) for name in "abc"]
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            await nursery.start(run_supervisor, specs)
            scope.cancel()
    assert scope.cancelled_caught
    assert [e for e in journal if e.endswith("stopping")] == [
        "c stopping",
        "b stopping",
        "a stopping",
    ]


async def test_cancelling_during_startup_stops_promptly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal: Journal = []

    async def hang(n: int) -> None:
        await trio.sleep_forever()

    stuck = scripted("stuck", journal, before_ready=hang)
    with trio.move_on_after(1) as scope:
        await run_supervisor([scripted("a", journal), stuck])
    assert scope.cancelled_caught
    assert trio.current_time() == 1
    assert journal == [
        "a started",
        "stuck started",
        "stuck stopping",
        "stuck stopped",
        "a stopping",
        "a stopped",
    ]


@pytest.mark.parametrize("how", ["aclose", "cancel"])
async def test_shutdown_stops_children_one_at_a_time_newest_first(
    autojump_clock: trio.testing.MockClock, how: str
) -> None:
    journal: Journal = []
    specs = [scripted(name, journal, cleanup=1.0) for name in "abc"]
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            sup: SupervisorHandle = await nursery.start(run_supervisor, specs)
            journal.clear()
            if how == "aclose":
                await sup.aclose()
            else:
                scope.cancel()
    assert journal == [f"{name} {what}" for name in "cba" for what in ("stopping", "stopped")]
    assert trio.current_time() == 3.0


async def test_grace_bounds_how_long_one_child_holds_up_its_siblings(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    journal: Journal = []
    a_stopping_at: list[float] = []

    async def note_stopping(n: int) -> None:
        try:
            await trio.sleep_forever()
        finally:
            a_stopping_at.append(trio.current_time())

    slow = scripted("slow", journal, cleanup=10.0)
    async with trio.open_nursery() as nursery:
        sup: SupervisorHandle = await nursery.start(
            functools.partial(
                run_supervisor, [scripted("a", journal, after_ready=note_stopping), slow], grace=2.0
            )
        )
        await sup.aclose()
    assert a_stopping_at == [2.0]  # not 10: it did not wait for slow past its grace
    assert trio.current_time() == 10.0  # the supervisor's exit still waits for slow
    assert any("still stopping" in r.getMessage() for r in caplog.records)


async def test_a_child_failing_its_first_start_escalates_at_once() -> None:
    journal: Journal = []

    async def fail(n: int) -> None:
        raise ValueError("no config")

    specs = [
        scripted("a", journal),
        scripted("bad", journal, before_ready=fail),
        scripted("c", journal),
    ]
    with pytest.raises(SupervisorEscalation) as escalation:
        await run_supervisor(specs, intensity=RestartIntensity(5, 5.0))
    assert isinstance(escalation.value.__cause__, ValueError)
    assert journal == ["a started", "bad started", "a stopping", "a stopped"]


async def test_a_child_returning_before_it_is_ready_escalates() -> None:
    async def never_ready(*, task_status: trio.TaskStatus[None]) -> None:
        return

    with pytest.raises(SupervisorEscalation) as escalation:
        await run_supervisor([ChildSpec("lazy", never_ready)])
    assert isinstance(escalation.value.__cause__, RuntimeError)


@pytest.mark.parametrize(("max_restarts", "starts"), [(1, 2), (2, 3)])
async def test_crashing_while_restarting_counts_as_a_crash(
    mock_clock: trio.testing.MockClock, max_restarts: int, starts: int
) -> None:
    # the clock stands still: the crashes are in one period however slow the machine
    async def fail_after_first(n: int) -> None:
        if n > 1:
            raise ValueError(f"restart {n} failed")

    journal: Journal = []
    spec = scripted("x", journal, before_ready=fail_after_first, after_ready=crash)
    with pytest.raises(SupervisorEscalation) as escalation:
        await run_supervisor([spec], intensity=RestartIntensity(max_restarts, 5.0))
    assert str(escalation.value.__cause__) == f"restart {starts} failed"
    assert journal.count("x started") == starts


async def returns(n: int) -> None:
    return


@pytest.mark.parametrize(
    ("restart", "ends", "restarted"),
    [
        ("permanent", crash, True),
        ("permanent", returns, True),
        ("transient", crash, True),
        ("transient", returns, False),
        ("temporary", crash, False),
        ("temporary", returns, False),
    ],
)
async def test_restart_types(restart: Restart, ends: Step, restarted: bool) -> None:
    async def end_first(n: int) -> None:
        if n == 1:
            await ends(n)
        else:
            await trio.sleep_forever()

    journal: Journal = []
    echo_spec, sibling = echo("sibling", journal)
    spec = scripted("x", journal, after_ready=end_first, restart=restart)
    async with trio.open_nursery() as nursery:
        sup: SupervisorHandle = await nursery.start(run_supervisor, [spec, echo_spec])
        await trio.testing.wait_all_tasks_blocked()
        assert journal.count("x started") == (2 if restarted else 1)
        assert ("x" in sup) == restarted
        assert await sibling.ask("ok") == "sibling: ok"
        await sup.aclose()
    assert journal.count("sibling started") == 1


async def test_a_nested_supervisor_escalating_is_a_crash_of_its_parent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    journal: Journal = []
    sibling_spec, sibling = echo("sibling", journal)
    inner = functools.partial(
        run_supervisor,
        [scripted("flaky", journal, after_ready=crash_first)],
        intensity=RestartIntensity(0, 5.0),
        name="inner",
    )
    async with trio.open_nursery() as nursery:
        sup: SupervisorHandle = await nursery.start(
            run_supervisor, [sibling_spec, ChildSpec("inner", inner)]
        )
        await trio.testing.wait_all_tasks_blocked()
        assert journal == ["sibling started", "flaky started", "flaky started"]
        assert isinstance(sup["inner"], SupervisorHandle)
        assert await sibling.ask("ok") == "sibling: ok"
        await sup.aclose()
    escalations = [e for _, e in crash_records(caplog) if isinstance(e, SupervisorEscalation)]
    assert len(escalations) == 1
    assert isinstance(escalations[0].__cause__, RuntimeError)


async def test_escalation_climbs_the_tree() -> None:
    journal: Journal = []
    inner = functools.partial(
        run_supervisor,
        [scripted("flaky", journal, after_ready=crash)],
        intensity=RestartIntensity(0, 5.0),
        name="inner",
    )
    with pytest.raises(SupervisorEscalation) as escalation:
        await run_supervisor([ChildSpec("inner", inner)], intensity=RestartIntensity(1, 5.0))
    inner_escalation = escalation.value.__cause__
    assert isinstance(inner_escalation, SupervisorEscalation)
    assert isinstance(inner_escalation.__cause__, RuntimeError)
    assert journal.count("flaky started") == 2


async def test_children_started_and_stopped_at_runtime() -> None:
    journal: Journal = []

    async def fail(n: int) -> None:
        raise ValueError("bad child")

    async with trio.open_nursery() as nursery:
        # Zero restarts: if anything below counted as a crash, the supervisor would die.
        sup: SupervisorHandle = await nursery.start(
            functools.partial(
                run_supervisor, [scripted("a", journal)], intensity=RestartIntensity(0, 5.0)
            )
        )
        assert await sup.start_child(scripted("b", journal)) == 1
        assert list(sup) == ["a", "b"]

        with pytest.raises(ValueError, match="already has a child 'b'"):
            await sup.start_child(scripted("b", journal))
        with pytest.raises(ValueError, match="bad child"):
            await sup.start_child(scripted("bad", journal, before_ready=fail))
        assert "bad" not in sup

        await sup.stop_child("b")
        assert journal[-2:] == ["b stopping", "b stopped"]
        await trio.testing.wait_all_tasks_blocked()
        assert "b" not in sup
        assert journal.count("b started") == 1  # stopped for good, not restarted
        with pytest.raises(KeyError):
            await sup.stop_child("b")

        await sup.aclose()
        await sup.aclose()  # idempotent
    with pytest.raises(ActorStopped):
        await sup.start_child(scripted("late", journal))


async def test_a_child_can_stop_itself() -> None:
    journal: Journal = []
    sups: list[SupervisorHandle] = []
    go = trio.Event()

    async def quit_(n: int) -> None:
        await go.wait()
        await sups[0].stop_child("quitter")

    specs = [scripted("a", journal), scripted("quitter", journal, after_ready=quit_)]
    async with trio.open_nursery() as nursery:
        sups.append(await nursery.start(run_supervisor, specs))
        go.set()
        await trio.testing.wait_all_tasks_blocked()
        assert list(sups[0]) == ["a"]
        await sups[0].aclose()
    assert journal == [
        "a started",
        "quitter started",
        "quitter stopping",
        "quitter stopped",
        "a stopping",
        "a stopped",
    ]


class Fatal(BaseException):
    pass


async def test_base_exceptions_propagate_without_restart() -> None:
    async def die(n: int) -> None:
        raise Fatal

    journal: Journal = []
    specs = [scripted("a", journal), scripted("x", journal, after_ready=die)]
    with pytest.RaisesGroup(Fatal):
        await run_supervisor(specs)
    assert journal == ["a started", "x started", "a stopping", "a stopped"]
