"""The composition root: builds the supervision tree for one gateway process.

    root supervisor (one-for-one)
    ├── control plane actor ── actors supervisor
    │                          ├── cluster actors   (one per cluster)
    │                          └── listener actors  (one per listener, connections inside)
    ├── stats ticker (windows and time series of the stats registry, once a second)
    ├── rollout actor (the staged rollouts: judges canaries, moves their routes' splits)
    └── services given by the command that composes the process (the admin API)

With ``workers`` > 1 the control plane also owns a worker pool, and the listeners run
in the worker processes (``gateway.runtime.workers``); this process's stats registry
then holds the workers' figures summed, refreshed before each tick and each read
(``Gateway.refresh_stats``).

The gateway knows nothing of the admin API: ``triogate run`` passes it in as a service
(a function from the ``Gateway`` to a ``ChildSpec``), so the layers stay admin above
gateway above policies.

Handles that must survive a restart (the control plane's, each actor's inbox and
snapshot, the stats registry) are made here, outside the child that is restarted.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from gateway.cluster.actor import ClusterHandle
from gateway.config import Address, Config
from gateway.control.fleet import (
    Fleet,
    LocalRegistrations,
    Registrations,
    run_fleet_registry,
    run_fleet_session,
    run_store_watch,
)
from gateway.control.plane import ControlPlane, run_control_plane
from gateway.control.rollouts import RolloutsHandle, run_rollouts
from gateway.control.store import EtcdStore, FileStore, Store
from gateway.dataplane import DataPlane, DataPlaneRef
from gateway.observe.stats import StatsRegistry, run_stats_ticker
from gateway.observe.stats.merge import absorb, dump, total
from gateway.runtime.supervisor import ChildSpec, SupervisorHandle, run_supervisor
from gateway.runtime.workers import WorkerPool

log = logging.getLogger("triogate")


@attrs.define
class Gateway:
    """The running gateway, as seen by the CLI, the admin API and tests."""

    control: ControlPlane
    supervisor: SupervisorHandle | None = None
    #: the rollout actor's handle; None in a worker process (its primary runs them)
    rollouts: RolloutsHandle | None = None
    admin_address: Address | None = None
    #: this node in its fleet (an etcd config store); None: a single node
    fleet: Fleet | None = None

    @property
    def stats(self) -> StatsRegistry:
        """The stats registry: what the gateway is doing, for the admin API."""
        return self.control.stats

    @property
    def workers(self) -> WorkerPool | None:
        """The worker processes serving the listeners; None when this process serves them."""
        return self.control.workers

    async def refresh_stats(self) -> StatsRegistry:
        """The stats registry, brought up to date with every worker's figures first."""
        pool = self.control.workers
        if pool is not None:
            await self._absorb(pool)
        return self.stats

    async def _absorb(self, pool: WorkerPool) -> dict[int, dict[str, Any]]:
        """Set the registry to the sum of the workers' dumps, and hand the attempts'
        results they brought to the control plane; returns the dumps by worker."""
        collected = await pool.collect()
        dumps = {d["worker"]: d for d in collected.dumps}
        absorb(self.stats, dumps.values())
        for outcomes in collected.outcomes:
            self.control.outcomes_reported(outcomes)
        return dumps

    async def workers_view(self) -> list[dict[str, Any]]:
        """Each process serving the listeners: its pid, restarts, config version, load."""
        pool = self.control.workers
        if pool is None:
            figures = dump(self.stats)
            return [_worker_view(0, os.getpid(), 0, self.control.version, figures)]
        dumps = await self._absorb(pool)
        return [
            _worker_view(w.index, w.pid, w.restarts, w.version, dumps.get(w.index))
            for w in pool.workers
        ]

    async def reset_stats(self) -> StatsRegistry:
        """Counters and histograms to zero, in every worker too."""
        pool = self.control.workers
        if pool is not None:
            await pool.reset_stats()
        self.stats.reset()
        return self.stats

    def registrations_of(self, cluster: str) -> Registrations | None:
        """The registrations of registry cluster ``cluster`` (the fleet's, in etcd, in a
        fleet); None when there is no such cluster."""
        handle: ClusterHandle | None = self.control.clusters.get(cluster)
        if handle is None:
            return None
        if self.fleet is not None:
            return self.fleet.registry.of(cluster)
        return LocalRegistrations(handle)

    async def fleet_nodes(self) -> list[dict[str, Any]]:
        """The nodes alive in this gateway's fleet (this one alone without a fleet)."""
        if self.fleet is not None:
            return await self.fleet.nodes()
        return [
            {
                "node": None,
                "address": None if self.admin_address is None else str(self.admin_address),
                "version": self.control.version,
                "pid": os.getpid(),
                "leader": True,
                "self": True,
            }
        ]

    def listener_address(self, name: str) -> Address:
        handle = self.control.listeners[name]
        assert handle.bound is not None, f"listener {name!r} is not bound"
        return handle.bound


def _worker_view(
    index: int, pid: int | None, restarts: int, version: int, figures: dict[str, Any] | None
) -> dict[str, Any]:
    """One worker's line of ``Gateway.workers_view``; its figures None while it restarts."""
    return {
        "index": index,
        "pid": pid,
        "restarts": restarts,
        "version": version,
        "downstream_rq_total": None if figures is None else total(figures, "downstream_rq_xx"),
        "downstream_cx_active": None if figures is None else total(figures, "downstream_cx_active"),
    }


def _control_child(control: ControlPlane) -> ChildSpec:
    async def start(*, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        await run_control_plane(control, task_status=task_status)

    return ChildSpec(name="control", start=start)


def _stats_child(gateway: Gateway) -> ChildSpec:
    refresh = None if gateway.workers is None else gateway.refresh_stats

    async def start(*, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        await run_stats_ticker(gateway.stats, refresh=refresh, task_status=task_status)

    return ChildSpec(name="stats", start=start)


def _rollouts_child(handle: RolloutsHandle) -> ChildSpec:
    async def start(*, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        await run_rollouts(handle, task_status=task_status)

    return ChildSpec(name="rollouts", start=start)


def _fleet_children(fleet: Fleet) -> list[ChildSpec]:
    """The registry mirror, the watch and the session of a node in a fleet."""

    async def registry(*, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        await run_fleet_registry(fleet.registry, task_status=task_status)

    async def watch(*, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        await run_store_watch(fleet.store, fleet.control, fleet.registry, task_status=task_status)

    async def session(*, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        await run_fleet_session(fleet, task_status=task_status)

    return [
        ChildSpec(name="fleet-registry", start=registry),
        ChildSpec(name="store-watch", start=watch),
        ChildSpec(name="fleet-session", start=session),
    ]


def _leading(fleet: Fleet) -> Callable[[], bool]:
    return lambda: fleet.leading


#: a child the composing command adds to the root supervisor, made from the gateway
Service = Callable[[Gateway], ChildSpec]


async def run_gateway(
    config: Config,
    *,
    state_path: Path | None = None,
    store: Store | None = None,
    services: Sequence[Service] = (),
    workers: int = 1,
    verbosity: int = 0,
    detect_outliers: bool = True,
    rollouts: bool = True,
    task_status: trio.TaskStatus[Gateway] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a gateway for ``config`` until cancelled; reports a ``Gateway`` once serving.

    ``workers`` > 1 serves the listeners from that many worker processes (logging at
    ``verbosity``, as ``-v`` counts); 1 serves them in this process.
    ``detect_outliers`` False: the cluster actors leave outlier detection to another
    process (a worker's, whose primary detects), keeping only the attempts' results.
    ``rollouts`` False: no rollout actor (a worker's: its primary moves the splits).
    ``store`` is where changes are committed (an ``EtcdStore``: this node is in a
    fleet, and runs the watch, the session and the registry mirror); None: the state
    file at ``state_path`` (None: not persisted).
    """
    dataplane = DataPlaneRef(DataPlane(config=Config(), routes={}, clusters={}))
    stats = StatsRegistry()
    pool = WorkerPool(workers, verbosity=verbosity) if workers > 1 else None
    if pool is not None:
        stats.local_gauges = False  # the workers' gauges, summed
    control = ControlPlane(
        config,
        dataplane,
        FileStore(state_path) if store is None else store,
        stats,
        workers=pool,
        detect_outliers=detect_outliers,
    )
    gateway = Gateway(control)
    children = [_control_child(control), _stats_child(gateway)]
    if isinstance(store, EtcdStore):
        gateway.fleet = Fleet(store, control, lambda: gateway.admin_address)
        children += _fleet_children(gateway.fleet)
    if rollouts:
        refresh = None if pool is None else gateway.refresh_stats
        leading = None if gateway.fleet is None else _leading(gateway.fleet)
        gateway.rollouts = RolloutsHandle(control, stats, refresh, leading)
        children.append(_rollouts_child(gateway.rollouts))
    children += [service(gateway) for service in services]
    async with trio.open_nursery() as nursery:
        gateway.supervisor = await nursery.start(
            lambda task_status: run_supervisor(children, name="root", task_status=task_status)
        )
        task_status.started(gateway)
