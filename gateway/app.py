"""The composition root: builds the supervision tree for one gateway process.

    root supervisor (one-for-one)
    ├── control plane actor ── workers supervisor
    │                          ├── cluster actors   (one per cluster)
    │                          └── listener actors  (one per listener, connections inside)
    ├── stats ticker (windows and time series of the stats registry, once a second)
    └── services given by the command that composes the process (the admin API)

The gateway knows nothing of the admin API: ``triogate run`` passes it in as a service
(a function from the ``Gateway`` to a ``ChildSpec``), so the layers stay admin above
gateway above policies.

Handles that must survive a restart (the control plane's, each actor's inbox and
snapshot, the stats registry) are made here, outside the child that is restarted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from gateway.config import Address, Config
from gateway.control.plane import ControlPlane, run_control_plane
from gateway.dataplane import DataPlane, DataPlaneRef
from gateway.observe.stats import StatsRegistry, run_stats_ticker
from gateway.runtime.supervisor import ChildSpec, SupervisorHandle, run_supervisor

log = logging.getLogger("triogate")


@attrs.define
class Gateway:
    """The running gateway, as seen by the CLI, the admin API and tests."""

    control: ControlPlane
    supervisor: SupervisorHandle | None = None
    admin_address: Address | None = None

    @property
    def stats(self) -> StatsRegistry:
        """The stats registry: what the gateway is doing, for the admin API."""
        return self.control.stats

    def listener_address(self, name: str) -> Address:
        handle = self.control.listeners[name]
        assert handle.bound is not None, f"listener {name!r} is not bound"
        return handle.bound


def _control_child(control: ControlPlane) -> ChildSpec:
    async def start(*, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        await run_control_plane(control, task_status=task_status)

    return ChildSpec(name="control", start=start)


def _stats_child(stats: StatsRegistry) -> ChildSpec:
    async def start(*, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        await run_stats_ticker(stats, task_status=task_status)

    return ChildSpec(name="stats", start=start)


#: a child the composing command adds to the root supervisor, made from the gateway
Service = Callable[[Gateway], ChildSpec]


async def run_gateway(
    config: Config,
    *,
    state_path: Path | None = None,
    services: Sequence[Service] = (),
    task_status: trio.TaskStatus[Gateway] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a gateway for ``config`` until cancelled; reports a ``Gateway`` once serving."""
    dataplane = DataPlaneRef(DataPlane(config=Config(), routes={}, clusters={}))
    stats = StatsRegistry()
    control = ControlPlane(config, dataplane, state_path, stats)
    gateway = Gateway(control)
    children = [_control_child(control), _stats_child(stats)]
    children += [service(gateway) for service in services]
    async with trio.open_nursery() as nursery:
        gateway.supervisor = await nursery.start(
            lambda task_status: run_supervisor(children, name="root", task_status=task_status)
        )
        task_status.started(gateway)
