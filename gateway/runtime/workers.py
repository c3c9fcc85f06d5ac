"""Worker processes: N data planes under one control plane (``triogate run --workers N``).

Theory of operation: the primary process runs the control side (admin API, control
plane, cluster actors with their discovery, the state file); each worker process runs
the data side of the same config (``gateway.runtime.worker``): its own listener sockets
on the same addresses (``SO_REUSEPORT``: the kernel spreads new connections over the
workers), its own upstream pools and its own stats. Nothing crosses a process boundary
per request.

The ``WorkerPool`` actor is the only writer of the worker processes' state. It is owned
by the control plane actor and answers:

    Install(config)      every worker serves ``config`` (a worker config: see
                         ``worker_config``); answered once each has applied it. A
                         worker that refuses (a port it cannot bind) refuses the whole
                         install: those that took it are put back on the previous one.
    Collect()            each live worker's stats dump (for ``merge.absorb``), and the
                         last figures of the workers that died (``merge.retired``).
    ResetStats()         each live worker's counters to zero.
    DrainAll(grace)      every worker stops accepting and exits once its connections end.

The first ``Install`` starts the processes (the primary must have bound its listener
addresses first, to resolve port 0); it fails, with the worker's reason, if any worker
cannot serve. After that each worker has a watcher: a worker that exits unasked (a
crash, a ``kill -9``) is started again and given the config in force, under a restart
intensity (``policies.restart``); past it the pool crashes and its supervisor decides.
Only the dead worker's connections are lost; the others never stop serving.

A worker config differs from the admin's config in three ways only: each listener's
address is the one the primary bound (port 0 resolved), each cluster is ``static``
with the members the primary's cluster actor has now (discovery runs once, in the
primary; a change of members is installed like a change of config, same version), and
no cluster has a ``health_check`` (checks run once, in the primary; its verdicts reach
the workers as ``HealthPublished``, which the pool also keeps, per cluster, to give a
worker that starts again right after its config).

Outlier detection also runs once, in the primary, while the attempts happen in the
workers: a worker's clusters keep their ``outlier_detection`` (so its data path leaves
each attempt's result in the cluster's ``OutcomeBuffer``), but its cluster actors do
not detect (``run_gateway(detect_outliers=False)``). Each stats ``Report`` takes the
buffers: the ``Reported`` answer carries them beside the dump, and ``collect`` hands
them back in ``Collected`` (the gateway gives each batch to the control plane, which
passes it to its cluster actor's detector), once a second and on every admin read:
never a message per request.
The primary's ejections go back with its health verdicts (``HealthPublished.ejected``).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import trio

import gateway
from gateway.cluster.outcomes import Outcome
from gateway.config import Address, Config, Discovery, Endpoint, Listener
from gateway.errors import ChangeFailed, GatewayError
from gateway.observe.stats import ListenerStats
from gateway.observe.stats.merge import combine, retired
from gateway.runtime.actor import ask, command
from gateway.runtime.link import (
    Done,
    DrainWorker,
    HealthPublished,
    Install,
    Installed,
    LinkClosed,
    Refused,
    Report,
    Reported,
    ResetStats,
    WorkerLink,
)
from gateway.tls.tickets import ticket_keys
from policies.health import HealthState
from policies.restart import Decision, RestartBudget, RestartIntensity

__all__ = [
    "RemoteListener",
    "WorkerInfo",
    "WorkerPool",
    "resolve_workers",
    "run_worker_pool",
    "worker_config",
]

log = logging.getLogger("triogate.workers")

#: seconds a worker may take to start and install its first config
START_TIMEOUT = 30.0
#: crashes of workers tolerated: at most 5 in 30 s, then the pool escalates
WORKER_INTENSITY = RestartIntensity(max_restarts=5, period=30.0)
#: the ``worker`` of the dump that sums the figures of workers that died
RETIRED = -1
#: seconds a stats report or a reset may take before that worker is left out
REPORT_TIMEOUT = 5.0
#: seconds a worker may take to apply a config (bind, clusters, listeners)
INSTALL_TIMEOUT = 30.0


def resolve_workers(value: str | int) -> int:
    """``--workers``: a count >= 1, or ``auto`` for the machine's cores."""
    if value == "auto":
        return max(1, len(os.sched_getaffinity(0)))
    count = int(value)
    if count < 1:
        raise ValueError("must be at least 1, or 'auto'")
    return count


def worker_config(
    config: Config, bound: Mapping[str, Address], members: Mapping[str, tuple[Endpoint, ...]]
) -> Config:
    """``config`` as a worker serves it: addresses as bound, clusters static with ``members``."""
    listeners = tuple(
        attrs.evolve(lst, address=bound[lst.name]) if lst.name in bound else lst
        for lst in config.listeners
    )
    clusters = tuple(
        attrs.evolve(
            c,
            discovery=Discovery(),
            endpoints=c.endpoints
            if c.discovery.type == "static"
            else members.get(c.name, c.endpoints),
            health_check=None,
        )
        for c in config.clusters
    )
    return attrs.evolve(config, listeners=listeners, clusters=clusters)


@attrs.frozen
class WorkerInfo:
    """One worker as the admin API shows it."""

    index: int
    pid: int | None
    #: times it was started again after exiting unasked
    restarts: int
    #: the version of the config it serves (0 before its first)
    version: int


# -- messages ------------------------------------------------------------------------


@attrs.frozen
class InstallAll:
    config: Config
    reply: trio.MemorySendChannel[Exception | None]


@attrs.frozen
class Collected:
    """What one ``Collect`` brought: the stats dumps (each live worker's, and one of the
    dead workers' last figures), and the attempts' results each worker had buffered,
    by cluster (for the primary's outlier detectors)."""

    dumps: list[dict[str, Any]]
    outcomes: tuple[Mapping[str, list[Outcome]], ...]


@attrs.frozen
class Collect:
    reply: trio.MemorySendChannel[Collected | Exception]


@attrs.frozen
class ResetAll:
    reply: trio.MemorySendChannel[Exception | None]


@attrs.frozen
class DrainAll:
    grace: float
    reply: trio.MemorySendChannel[Exception | None]


@attrs.frozen
class PublishHealth:
    cluster: str
    states: dict[str, HealthState]
    ejected: frozenset[str]
    reply: trio.MemorySendChannel[Exception | None]


PoolMsg = InstallAll | Collect | ResetAll | DrainAll | PublishHealth


class WorkerPool:
    """Handle of the worker pool actor: its inbox, and what it publishes."""

    def __init__(self, count: int, *, verbosity: int = 0) -> None:
        self.count = count
        self.verbosity = verbosity
        #: each worker, replaced whole by the actor
        self.workers: tuple[WorkerInfo, ...] = ()
        #: set once every worker has exited after a drain
        self.stopped = trio.Event()
        self.inbox, self._inbox_rx = trio.open_memory_channel[PoolMsg](16)

    async def install(self, config: Config) -> None:
        """Every worker serves ``config``; raises the first refusal (all put back)."""
        await command(self.inbox, lambda reply: InstallAll(config, reply), who="the worker pool")

    async def collect(self) -> Collected:
        """Each live worker's stats dump and buffered results (see ``Collected``)."""
        collected: Collected = await ask(
            self.inbox, lambda reply: Collect(reply), who="the worker pool"
        )
        return collected

    async def reset_stats(self) -> None:
        await command(self.inbox, lambda reply: ResetAll(reply), who="the worker pool")

    async def publish_health(
        self, cluster: str, states: dict[str, HealthState], ejected: frozenset[str] = frozenset()
    ) -> None:
        """Every worker serves ``cluster`` with these health verdicts and ejections (and a
        worker that starts again gets them too)."""
        await command(
            self.inbox,
            lambda reply: PublishHealth(cluster, states, ejected, reply),
            who="the worker pool",
        )

    async def drain(self, grace: float) -> None:
        """Every worker stops accepting; returns at once (``stopped`` is set when all exit)."""
        await command(self.inbox, lambda reply: DrainAll(grace, reply), who="the worker pool")


async def run_worker_pool(
    pool: WorkerPool, *, task_status: trio.TaskStatus[WorkerPool] = trio.TASK_STATUS_IGNORED
) -> None:
    """The worker pool actor: owns the worker processes until cancelled (then kills them)."""
    async with trio.open_nursery() as nursery:
        actor = _PoolActor(pool, nursery)
        try:
            task_status.started(pool)
            async for msg in pool._inbox_rx:
                match msg:
                    case InstallAll(config=config, reply=reply):
                        with reply:
                            reply.send_nowait(await actor.install(config))
                    case Collect(reply=reply):
                        with reply:
                            reply.send_nowait(await actor.collect())
                    case ResetAll(reply=reply):
                        with reply:
                            await actor.reset_stats()
                            reply.send_nowait(None)
                    case DrainAll(grace=grace, reply=reply):
                        with reply:
                            actor.drain(grace)
                            reply.send_nowait(None)
                    case PublishHealth(
                        cluster=cluster, states=states, ejected=ejected, reply=reply
                    ):
                        with reply:
                            await actor.publish_health(cluster, states, ejected)
                            reply.send_nowait(None)
        finally:
            actor.kill_all()


class _Worker:
    """One worker slot: the process serving it now, and its link."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: trio.Process | None = None
        self.link: WorkerLink | None = None
        self.restarts = 0
        self.version = 0
        self.lock = trio.Lock()

    def info(self) -> WorkerInfo:
        pid = self.process.pid if self.process is not None else None
        return WorkerInfo(self.index, pid, self.restarts, self.version)


class _PoolActor:
    def __init__(self, pool: WorkerPool, nursery: trio.Nursery) -> None:
        self.pool = pool
        self.nursery = nursery
        self.workers = [_Worker(i) for i in range(pool.count)]
        #: the config every worker should serve (a restarted one is given it)
        self.target: Config | None = None
        self.draining = False
        self.budget = RestartBudget(WORKER_INTENSITY)
        #: each live worker's last stats dump, and the sum of the dead ones' (``merge``)
        self.reported: dict[int, dict[str, Any]] = {}
        self.retired: dict[str, Any] | None = None
        #: each cluster's latest health verdicts (a restarted worker is given them)
        self.health: dict[str, dict[str, HealthState]] = {}
        #: each cluster's latest ejected addresses (likewise)
        self.ejected: dict[str, frozenset[str]] = {}

    def _publish(self) -> None:
        self.pool.workers = tuple(w.info() for w in self.workers)

    # -- install ---------------------------------------------------------------------

    async def install(self, config: Config) -> Exception | None:
        previous, self.target = self.target, config
        if previous is None:
            return await self._start_all(config)
        results: dict[int, Exception | None] = {}

        async def one(worker: _Worker) -> None:
            results[worker.index] = await self._install_on(worker, config)

        async with trio.open_nursery() as nursery:
            for worker in self.workers:
                nursery.start_soon(one, worker)
        refused = [e for e in results.values() if e is not None]
        if refused:
            self.target = previous
            async with trio.open_nursery() as nursery:
                for worker in self.workers:
                    if results[worker.index] is None:
                        nursery.start_soon(self._install_on, worker, previous)
            return refused[0]
        self._publish()
        return None

    async def _install_on(self, worker: _Worker, config: Config) -> Exception | None:
        """``config`` on one worker; None once it serves it (or will: it is restarting)."""
        answer = None
        with trio.move_on_after(INSTALL_TIMEOUT):
            answer = await self._call(worker, Install(config))
        if answer is None:
            return None  # dead or silent: started again with ``self.target``
        if isinstance(answer, Refused):
            return answer.error(f"worker {worker.index}")
        assert isinstance(answer, Installed), answer
        worker.version = config.version
        return None

    async def _call(self, worker: _Worker, message: object) -> Any:
        """``message``'s answer from ``worker``; None if it has no live link.

        Callers bound the wait with a cancel scope (the lock included: a restart may be
        in progress). A worker cut off mid-answer is killed, since its link could no
        longer tell which answer is whose; its watcher starts it again.
        """
        async with worker.lock:
            link = worker.link
            if link is None:
                return None
            try:
                return await link.call(message)
            except LinkClosed:
                return None
            except trio.Cancelled:
                log.warning(
                    "worker %d did not answer %s in time; starting it again",
                    worker.index,
                    type(message).__name__,
                )
                worker.link = None
                if worker.process is not None:
                    _kill(worker.process)
                raise

    async def _start_all(self, config: Config) -> Exception | None:
        errors: list[Exception] = []

        async def one(worker: _Worker) -> None:
            try:
                async with worker.lock:
                    await self._spawn(worker, config)
            except Exception as e:
                errors.append(e)

        async with trio.open_nursery() as nursery:
            for worker in self.workers:
                nursery.start_soon(one, worker)
        if errors:
            self.target = None
            self.kill_all()
            return errors[0]
        for worker in self.workers:
            self.nursery.start_soon(self._watch, worker, name=f"worker-{worker.index}")
        self._publish()
        log.info("%d workers serving config version %d", len(self.workers), config.version)
        return None

    async def _spawn(self, worker: _Worker, config: Config) -> None:
        """Start a process for ``worker`` and install ``config``; raises if it cannot serve."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        argv = [sys.executable, "-m", "gateway.runtime.worker", str(theirs.fileno())]
        argv += [str(worker.index), str(self.pool.verbosity)]
        try:
            # a session of its own: a terminal's Ctrl-C reaches the primary only, which
            # drains the workers itself
            process = await trio.lowlevel.open_process(
                argv, pass_fds=(theirs.fileno(),), start_new_session=True, env=_worker_env()
            )
        finally:
            theirs.close()
        link = WorkerLink(trio.SocketStream(trio.socket.from_stdlib_socket(ours)))
        worker.process = process
        try:
            with trio.fail_after(START_TIMEOUT):
                answer = await link.call(Install(config, ticket_keys()))
                if isinstance(answer, Installed):
                    for cluster in self.health.keys() | self.ejected.keys():
                        done = await link.call(
                            HealthPublished(
                                cluster,
                                self.health.get(cluster, {}),
                                self.ejected.get(cluster, frozenset()),
                            )
                        )
                        assert isinstance(done, Done), done
        except (LinkClosed, trio.TooSlowError) as e:
            _kill(process)
            raise ChangeFailed(f"worker {worker.index} did not start: {e}") from None
        if isinstance(answer, Refused):
            _kill(process)
            raise answer.error(f"worker {worker.index}")
        assert isinstance(answer, Installed), answer
        worker.link = link
        worker.version = config.version

    async def _watch(self, worker: _Worker) -> None:
        """Start ``worker`` again whenever its process exits unasked."""
        while True:
            process = worker.process
            assert process is not None
            await process.wait()
            async with worker.lock:
                if worker.link is not None:
                    await worker.link.aclose()
                worker.link = None
                self._retire(worker)
                if self.draining:
                    self._check_stopped()
                    return
                log.warning(
                    "worker %d (pid %d) exited with status %s; starting it again",
                    worker.index,
                    process.pid,
                    process.returncode,
                )
                while True:
                    if self.budget.record_crash(trio.current_time()) is Decision.ESCALATE:
                        raise GatewayError(
                            f"workers exited more than {WORKER_INTENSITY.max_restarts} times"
                            f" in {WORKER_INTENSITY.period:g} s"
                        )
                    assert self.target is not None
                    try:
                        await self._spawn(worker, self.target)
                        break
                    except Exception as e:
                        log.warning("worker %d could not start again: %s", worker.index, e)
                        await trio.sleep(0.5)
                worker.restarts += 1
                self._publish()

    # -- stats and drain -------------------------------------------------------------

    async def collect(self) -> Collected:
        """Each live worker's dump and results, and the figures of those that died."""
        reports = [a for a in await self.each(Report()) if isinstance(a, Reported)]
        dumps = [report.dump for report in reports]
        for part in dumps:
            self.reported[part["worker"]] = part
        return Collected(
            dumps if self.retired is None else [*dumps, self.retired],
            tuple(report.outcomes for report in reports if report.outcomes),
        )

    def _retire(self, worker: _Worker) -> None:
        """``worker`` died: its last reported figures stay in the sums (counters only)."""
        last = self.reported.pop(worker.index, None)
        if last is not None:
            parts = [retired(last)] if self.retired is None else [self.retired, retired(last)]
            self.retired = {**combine(parts), "worker": RETIRED}

    async def publish_health(
        self, cluster: str, states: dict[str, HealthState], ejected: frozenset[str]
    ) -> None:
        if states:
            self.health[cluster] = states
        else:
            self.health.pop(cluster, None)
        if ejected:
            self.ejected[cluster] = ejected
        else:
            self.ejected.pop(cluster, None)
        await self.each(HealthPublished(cluster, states, ejected))

    async def reset_stats(self) -> None:
        await self.each(ResetStats())
        self.reported.clear()
        self.retired = None

    async def each(self, message: object) -> list[Any]:
        """Ask every live worker ``message``; a worker that does not answer in time is left out."""
        answers: list[Any] = []

        async def one(worker: _Worker) -> None:
            with trio.move_on_after(REPORT_TIMEOUT):
                answer = await self._call(worker, message)
                if answer is not None:
                    answers.append(answer)

        async with trio.open_nursery() as nursery:
            for worker in self.workers:
                nursery.start_soon(one, worker)
        return answers

    def drain(self, grace: float) -> None:
        self.draining = True
        if self.target is None:
            self.pool.stopped.set()
            return
        for worker in self.workers:
            self.nursery.start_soon(self._drain_one, worker, grace)

    async def _drain_one(self, worker: _Worker, grace: float) -> None:
        with trio.move_on_after(grace + 1):
            answer = await self._call(worker, DrainWorker(grace))
            assert answer is None or isinstance(answer, Done), answer
        process = worker.process
        if process is not None:
            with trio.move_on_after(grace + 2):
                await process.wait()
            _kill(process)
        self._check_stopped()

    def _check_stopped(self) -> None:
        if all(w.process is None or w.process.returncode is not None for w in self.workers):
            self.pool.stopped.set()

    def kill_all(self) -> None:
        for worker in self.workers:
            if worker.process is not None:
                _kill(worker.process)


def _worker_env() -> dict[str, str]:
    """The environment of a worker: ours, with this very ``gateway`` package found first
    (the primary may run from a source tree that is not the installed one)."""
    root = str(Path(gateway.__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{path}" if path else root}


def _kill(process: trio.Process) -> None:
    if process.returncode is None:
        try:
            process.kill()
        except ProcessLookupError:  # pragma: no cover - exited in between
            pass


@attrs.frozen
class RemoteListener:
    """A listener the workers serve, as the primary shows it (``control.view.ListenerView``)."""

    config: Listener
    #: the address every worker listens on (port 0 resolved by the primary)
    bound: Address
    #: the workers' figures summed (``merge.absorb``)
    stats: ListenerStats = attrs.field(eq=False)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def connections(self) -> int:
        return self.stats.downstream_cx_active
