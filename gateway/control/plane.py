"""The control plane actor: the only writer of the running config and the data plane.

Theory of operation: the actor holds the current ``Config`` (with its ``version``). A
change arrives as ``ApplyChange(change, if_match)``, where ``change`` is a pure
function from the current config to the next: the actor runs it, validates the result
as a whole, and only then reconciles the running parts in an order that never lets a
request see a half-applied change:

1. clusters that are new are started, clusters that changed get the new config (each
   publishes its own snapshot before the route tables can name it);
2. one new ``DataPlane`` (route tables + cluster handles) replaces the old in a single
   assignment: new requests see the new version, requests in flight keep theirs;
3. listeners that are new are bound; if a bind fails, steps 1-2 are rolled back and the
   change is refused;
4. listeners and clusters that are gone are drained and stopped.

Writes are serialized by the actor's inbox, so ``If-Match`` (the version the writer
read) detects a lost update. A change is persisted (atomically) before it is
acknowledged, when a state file is configured.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from gateway.cluster.actor import ClusterHandle, run_cluster
from gateway.config import Config, Listener, ensure_valid
from gateway.control.state import save_state
from gateway.dataplane import DataPlane, DataPlaneRef
from gateway.errors import ConfigError, ConfigIssue, GatewayError
from gateway.listener.actor import ListenerHandle, run_listener
from gateway.observe.stats import StatsRegistry
from gateway.routing import RouteTable
from gateway.runtime.supervisor import ChildSpec, SupervisorHandle, run_supervisor

log = logging.getLogger("triogate.control")

Change = Callable[[Config], Config]


class VersionMismatch(GatewayError):
    """``If-Match`` named a version that is no longer current."""

    status_hint = 412

    def __init__(self, expected: int, current: int) -> None:
        super().__init__(f"config version is {current}, not {expected}")
        self.expected = expected
        self.current = current


@attrs.frozen
class ApplyChange:
    change: Change
    if_match: int | None
    reply: trio.MemorySendChannel[Config | Exception]


@attrs.frozen
class Drain:
    grace: float
    reply: trio.MemorySendChannel[None]


ControlMsg = ApplyChange | Drain


def _listener_child(handle: ListenerHandle) -> ChildSpec:
    async def start(*, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        await run_listener(handle, task_status=task_status)

    return ChildSpec(name=f"listener:{handle.name}", start=start, restart="transient")


def _cluster_child(handle: ClusterHandle) -> ChildSpec:
    async def start(*, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        await run_cluster(handle, task_status=task_status)

    return ChildSpec(name=f"cluster:{handle.name}", start=start)


def _rebind_needed(old: Listener, new: Listener) -> bool:
    """A listener restarts when its socket or protocol changes; routes alone do not."""
    return (old.address, old.protocol, old.cluster) != (new.address, new.protocol, new.cluster) or (
        old.header_timeout,
        old.idle_timeout,
        old.max_request_headers_kb,
        old.max_request_headers_count,
    ) != (
        new.header_timeout,
        new.idle_timeout,
        new.max_request_headers_kb,
        new.max_request_headers_count,
    )


class ControlPlane:
    """Handle of the control plane actor: read the config, apply changes, drain."""

    def __init__(
        self,
        config: Config,
        dataplane: DataPlaneRef,
        state_path: Path | None,
        stats: StatsRegistry | None = None,
    ) -> None:
        self.config = config
        #: the stats of every listener and cluster, kept by name across changes
        self.stats = stats if stats is not None else StatsRegistry()
        self.dataplane = dataplane
        self.state_path = state_path
        self.listeners: dict[str, ListenerHandle] = {}
        self.clusters: dict[str, ClusterHandle] = {}
        self.ready = False
        self.draining = False
        self.inbox, self._inbox_rx = trio.open_memory_channel[ControlMsg](64)

    @property
    def version(self) -> int:
        return self.config.version

    async def apply(self, change: Change, *, if_match: int | None = None) -> Config:
        """Apply ``change`` atomically; raise ``ConfigError`` or ``VersionMismatch``."""
        reply_tx, reply_rx = trio.open_memory_channel[Config | Exception](1)
        await self.inbox.send(ApplyChange(change, if_match, reply_tx))
        async with reply_rx:
            try:
                result = await reply_rx.receive()
            except trio.EndOfChannel:
                raise GatewayError("the control plane stopped before answering") from None
        if isinstance(result, Exception):
            raise result
        return result

    async def replace(self, config: Config, *, if_match: int | None = None) -> Config:
        return await self.apply(lambda _current: config, if_match=if_match)

    async def drain(self, grace: float = 30.0) -> None:
        """Stop accepting on every listener; in-flight requests finish within ``grace``."""
        reply_tx, reply_rx = trio.open_memory_channel[None](1)
        await self.inbox.send(Drain(grace, reply_tx))
        async with reply_rx:
            await reply_rx.receive()

    # -- inside the actor ----------------------------------------------------------------

    async def _reconcile(self, new: Config, workers: SupervisorHandle, *, initial: bool) -> None:
        old = self.config if not initial else Config()
        old_clusters = {c.name: c for c in old.clusters}
        started_clusters: list[str] = []
        for cluster in new.clusters:
            if cluster.name not in self.clusters:
                cluster_handle = ClusterHandle(cluster)
                await workers.start_child(_cluster_child(cluster_handle))
                self.clusters[cluster.name] = cluster_handle
                self.stats.track_cluster(cluster_handle)
                started_clusters.append(cluster.name)
            elif old_clusters.get(cluster.name) != cluster:
                await self.clusters[cluster.name].reconfigure(cluster)
        previous = self.dataplane.current
        old_listeners = {lst.name: lst for lst in old.listeners}
        self.dataplane.current = DataPlane(
            config=new,
            routes={lst.name: RouteTable(lst) for lst in new.listeners},
            clusters={c.name: self.clusters[c.name] for c in new.clusters},
        )
        new_names = {lst.name for lst in new.listeners}
        # listeners whose socket changes go away before their replacement binds
        for name, lst in old_listeners.items():
            replaced = name in new_names and _rebind_needed(lst, new.listener(name))  # type: ignore[arg-type]
            if (name not in new_names or replaced) and name in self.listeners:
                await self._stop_listener(name, workers, grace=5.0)
        started_listeners: list[str] = []
        try:
            for lst in new.listeners:
                if lst.name not in self.listeners:
                    handle = ListenerHandle(lst, self.dataplane, self.stats)
                    await workers.start_child(_listener_child(handle))
                    self.listeners[lst.name] = handle
                    started_listeners.append(lst.name)
        except Exception as e:
            for name in started_listeners:
                await self._stop_listener(name, workers, grace=0)
            self.dataplane.current = previous
            for name in started_clusters:
                await workers.stop_child(f"cluster:{name}")
                del self.clusters[name]
                self.stats.forget_cluster(name)
            if initial:
                raise
            raise ConfigError([ConfigIssue("listeners", f"cannot bind: {e}")]) from e
        for name in list(self.clusters):
            if new.cluster(name) is None:
                await workers.stop_child(f"cluster:{name}")
                handle_gone = self.clusters.pop(name)
                for rt in handle_gone.snapshot.all_endpoints:
                    rt.pool.drain()
                self.stats.forget_cluster(name)
        # listeners kept as they are take the parts of their config that need no rebind
        for lst in new.listeners:
            if lst.name not in started_listeners and lst.name in self.listeners:
                self.listeners[lst.name].reconfigure(lst)
        for name in old_listeners.keys() - new_names:
            self.stats.forget_listener(name)
        self.config = new

    async def _stop_listener(self, name: str, workers: SupervisorHandle, *, grace: float) -> None:
        handle = self.listeners.pop(name)
        handle.drain(grace)
        await workers.stop_child(f"listener:{name}")

    async def wait_listeners_stopped(self) -> None:
        """Return once every listener has stopped (after a drain: its last connection closed)."""
        for handle in list(self.listeners.values()):
            await handle.stopped.wait()


async def run_control_plane(
    control: ControlPlane, *, task_status: trio.TaskStatus[ControlPlane] = trio.TASK_STATUS_IGNORED
) -> None:
    """The control plane actor; owns the workers supervisor (clusters and listeners)."""
    async with trio.open_nursery() as nursery:
        workers: SupervisorHandle = await nursery.start(
            lambda task_status: run_supervisor([], name="workers", task_status=task_status)
        )
        # a restarted control plane rebuilds the running parts from the config it held
        control.listeners.clear()
        control.clusters.clear()
        await control._reconcile(control.config, workers, initial=True)
        control.ready = not control.draining
        task_status.started(control)
        async for msg in control._inbox_rx:
            match msg:
                case ApplyChange(change=change, if_match=if_match, reply=reply):
                    with reply:
                        reply.send_nowait(await _apply(control, workers, change, if_match))
                case Drain(grace=grace, reply=reply):
                    with reply:
                        control.ready = False
                        control.draining = True
                        for handle in control.listeners.values():
                            handle.drain(grace)
                        reply.send_nowait(None)


async def _apply(
    control: ControlPlane, workers: SupervisorHandle, change: Change, if_match: int | None
) -> Config | Exception:
    current = control.config
    if if_match is not None and if_match != current.version:
        return VersionMismatch(if_match, current.version)
    try:
        changed = change(current)
    except Exception as e:  # the change is the caller's code: its error is the caller's answer
        return e
    try:
        new = ensure_valid(attrs.evolve(changed, version=current.version + 1))
        await control._reconcile(new, workers, initial=False)
    except (ConfigError, VersionMismatch) as e:
        return e
    if control.state_path is not None:
        await trio.to_thread.run_sync(save_state, control.state_path, new)
    log.info("config version %d applied", new.version)
    return new
