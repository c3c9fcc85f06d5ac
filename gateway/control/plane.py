"""The control plane actor: the only writer of the running config and the data plane.

Theory of operation: the actor's task holds the running ``Config`` and the handles of
the cluster and listener actors it started (under its own ``actors`` supervisor).
After each message it publishes an immutable ``RuntimeView`` on its handle, which is
all the admin API reads. A change arrives as ``ApplyChange(change, if_match)``, where
``change`` is a pure function from the current config to the next; the actor runs it,
validates the result as a whole, and then moves the running parts over in steps that
can each be undone, in an order that never lets a request see a half-applied change:

1. sockets are bound for new listeners and for listeners whose address moves (a bind
   failure refuses the change here, 422, before anything has moved);
2. new clusters start, changed ones are reconfigured (each publishes its snapshot
   before any route can name it);
3. one new ``DataPlane`` (route tables + cluster handles) replaces the old in a single
   assignment: new requests see the new version, requests in flight keep theirs;
4. listeners take their new config live (``Reconfigure``), move to their new sockets
   (``Rebind``: the old sockets come back still open), or start;
5. the new config is committed to the store (``gateway.control.store``): the state
   file (write, fsync, rename), when one is set; or, in a fleet, an etcd transaction
   that fails if another node committed first (``FleetConflict``, 412).

If any step fails (a bind, a child that crashes on its command, the persist), the steps
done so far are undone newest first and the caller gets why; the running gateway is
as it was, and nothing the change did not touch is restarted. Only after step 5 does
the change commit, with what cannot be undone: the sockets a listener left are closed,
removed listeners drain and stop, removed clusters stop. The change is acknowledged
only then.

Writes are serialized by the actor's inbox, so ``If-Match`` (the version the writer
read) detects a lost update.

In a fleet (an ``EtcdStore``) the changes other nodes commit arrive as
``StoreChanged`` (from the watch, ``gateway.control.fleet``) and are applied by the
same steps, without step 5: the store's revision moves only once one is in force. A
write whose transaction finds another node was first applies what etcd holds (the
conflict carries it) and, without ``If-Match``, is tried again on it; with one it is
refused (412). A config from etcd that this node cannot run (a listener's port taken
here) is logged and not adopted: the node keeps its config and its writes are refused
(the revision it compares is behind) until a later config applies.

With worker processes (``ControlPlane(workers=WorkerPool(n))``) the listeners are
served by the workers, not here: step 1 binds each new or moved listener's address
without listening (it holds the port, resolves port 0, and refuses the change if the
address is taken), and step 4 installs the worker config on every worker
(``gateway.runtime.workers``), acknowledged once each has applied it; undoing it
installs the previous one again. The cluster actors still run here (discovery, the
registry); when one publishes new members (``MembersPublished``) they are installed
on the workers too, and when one's health checks change a verdict
(``VerdictsPublished``) the verdicts go to every worker (``WorkerPool.publish_health``).

The control plane owns the ``EventLog`` (``control.events``) its cluster actors record
state changes in, which the admin API reads.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any

import attrs
import trio

from gateway.cluster.actor import (
    ClusterHandle,
    MembersPublished,
    OutcomesReported,
    VerdictsPublished,
    run_cluster,
)
from gateway.cluster.outcomes import Outcome
from gateway.config import Address, Cluster, Config, Endpoint, Listener, ensure_valid, needs_rebind
from gateway.control.store import EtcdStore, Store, config_of_document
from gateway.control.view import ListenerView, RuntimeView
from gateway.dataplane import DataPlane, DataPlaneRef
from gateway.errors import (
    ActorStopped,
    ChangeFailed,
    ConfigError,
    ConfigIssue,
    FleetConflict,
    GatewayError,
    ListenerBindError,
    VersionMismatch,
)
from gateway.faults.table import FaultTable
from gateway.filters.factories import build_chains
from gateway.filters.wasm_adapter import close_unused
from gateway.listener.actor import (
    ListenerHandle,
    Sockets,
    bind_listener,
    close_sockets,
    run_listener,
)
from gateway.observe.events import EventLog
from gateway.observe.stats import StatsRegistry
from gateway.routing import RouteTable, watch_routes
from gateway.runtime.actor import ask, command
from gateway.runtime.supervisor import ChildSpec, SupervisorHandle, run_supervisor
from gateway.runtime.workers import RemoteListener, WorkerPool, run_worker_pool, worker_config

__all__ = [
    "ApplyChange",
    "Change",
    "ControlPlane",
    "Drain",
    "StoreChanged",
    "run_control_plane",
]

log = logging.getLogger("triogate.control")

Change = Callable[[Config], Config]
Undo = Callable[[], Awaitable[None]]

#: seconds a removed listener gives its requests in flight before it stops
REMOVED_LISTENER_GRACE = 5.0


@attrs.frozen
class ApplyChange:
    """Command: apply ``change`` to the running config (``if_match``: its version)."""

    change: Change
    if_match: int | None
    reply: trio.MemorySendChannel[Config | Exception]


@attrs.frozen
class Drain:
    """Command: every listener stops accepting; requests in flight get ``grace`` s."""

    grace: float
    reply: trio.MemorySendChannel[Exception | None]


@attrs.frozen
class StoreChanged:
    """Event: etcd holds ``document`` at ``revision`` (another node's commit, or the
    config read again after an outage)."""

    document: bytes
    revision: int


ControlMsg = ApplyChange | Drain | MembersPublished | VerdictsPublished | StoreChanged

#: tries of a write without ``If-Match`` that keeps finding another node was first
FLEET_TRIES = 5


class ControlPlane:
    """Handle of the control plane actor: its published view, and commands for it.

    Made by the composition root, so it outlives restarts of the actor: a restarted
    actor rebuilds the running parts from the last view's config.
    """

    def __init__(
        self,
        config: Config,
        dataplane: DataPlaneRef,
        store: Store,
        stats: StatsRegistry | None = None,
        workers: WorkerPool | None = None,
        *,
        detect_outliers: bool = True,
    ) -> None:
        #: what the gateway runs now; replaced whole by the actor, never edited
        self.view = RuntimeView(config)
        #: the stats of every listener and cluster, kept by name across changes
        self.stats = stats if stats is not None else StatsRegistry()
        self.dataplane = dataplane
        #: where step 5 commits a change: the state file, or etcd
        self.store = store
        #: the worker processes serving the listeners; None: this process serves them
        self.workers = workers
        #: whether this process's cluster actors run outlier detection (not on a worker
        #: process: its primary's do, fed the worker's attempts' results)
        self.detect_outliers = detect_outliers
        #: the clusters' state changes (health verdicts), newest last
        self.events = EventLog()
        self.inbox, self._inbox_rx = trio.open_memory_channel[ControlMsg](64)

    # the parts of the view most callers want
    @property
    def config(self) -> Config:
        return self.view.config

    @property
    def version(self) -> int:
        return self.view.config.version

    @property
    def ready(self) -> bool:
        return self.view.ready

    @property
    def draining(self) -> bool:
        return self.view.draining

    @property
    def listeners(self) -> MappingProxyType[str, ListenerView]:
        return self.view.listeners

    @property
    def clusters(self) -> MappingProxyType[str, ClusterHandle]:
        return self.view.clusters

    def outcomes_reported(self, outcomes: Mapping[str, list[Outcome]]) -> None:
        """Attempts' results a worker reported: each cluster's go to its actor's outlier
        detector, without waiting (a full inbox drops the batch, counted)."""
        for name, results in outcomes.items():
            handle = self.view.clusters.get(name)
            if handle is None:
                continue  # removed since
            try:
                handle.inbox.send_nowait(OutcomesReported(tuple(results)))
            except trio.WouldBlock:
                self.stats.cluster(name).outlier_detection_outcome_batches_dropped += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    async def apply(self, change: Change, *, if_match: int | None = None) -> Config:
        """Apply ``change`` all or nothing; returns the new config once it is persisted.

        Raises ``ConfigError`` (invalid, or a listener cannot bind), ``VersionMismatch``,
        ``ChangeFailed`` (an actor failed; rolled back), ``StateFileError`` (not
        persisted; rolled back), ``ActorStopped``, or what ``change`` itself raised.
        """
        config: Config = await ask(
            self.inbox, lambda reply: ApplyChange(change, if_match, reply), who="the control plane"
        )
        return config

    async def replace(self, config: Config, *, if_match: int | None = None) -> Config:
        return await self.apply(lambda _current: config, if_match=if_match)

    async def drain(self, grace: float = 30.0) -> None:
        """Stop accepting on every listener; in-flight requests finish within ``grace``."""
        await command(self.inbox, lambda reply: Drain(grace, reply), who="the control plane")

    async def wait_listeners_stopped(self) -> None:
        """Return once every listener has stopped (after a drain: its last connection closed)."""
        if self.workers is not None:
            await self.workers.stopped.wait()
            return
        for handle in self.view.listeners.values():
            assert isinstance(handle, ListenerHandle)
            await handle.stopped.wait()


async def run_control_plane(
    control: ControlPlane, *, task_status: trio.TaskStatus[ControlPlane] = trio.TASK_STATUS_IGNORED
) -> None:
    """The control plane actor; owns the actors supervisor (clusters and listeners)."""
    async with trio.open_nursery() as nursery:
        actors: SupervisorHandle = await nursery.start(
            lambda task_status: run_supervisor([], name="actors", task_status=task_status)
        )
        if control.workers is not None:
            await nursery.start(run_worker_pool, control.workers)
        actor = _ControlActor(control, actors)
        try:
            # a restarted control plane rebuilds the running parts from the config it held
            await actor.start()
            task_status.started(control)
            async for msg in control._inbox_rx:
                match msg:
                    case ApplyChange(change=change, if_match=if_match, reply=reply):
                        with reply:
                            reply.send_nowait(await actor.apply(change, if_match))
                    case Drain(grace=grace, reply=reply):
                        with reply:
                            await actor.drain(grace)
                            reply.send_nowait(None)
                    case MembersPublished():
                        await actor.sync_members()
                    case VerdictsPublished(cluster=name):
                        await actor.sync_health(name)
                    case StoreChanged(document=document, revision=revision):
                        await actor.adopt(document, revision)
        finally:
            # the addresses held for the workers are this incarnation's to let go
            for sockets in actor.held.values():
                close_sockets(sockets)


class _ControlActor:
    """The control plane's state; only its own task calls it."""

    def __init__(self, control: ControlPlane, actors: SupervisorHandle) -> None:
        self.control = control
        self.actors = actors
        self.stats = control.stats
        self.config = Config()
        self.listeners: dict[str, ListenerHandle] = {}
        self.clusters: dict[str, ClusterHandle] = {}
        self.draining = control.view.draining
        self._serial = 0
        # with workers: the pool, the sockets holding each listener's address, the
        # listeners as the workers serve them, and the worker config they have
        self.pool = control.workers
        self.held: dict[str, Sockets] = {}
        self.remote: dict[str, RemoteListener] = {}
        self.installed: Config | None = None

    def _publish(self, ready: bool) -> None:
        listeners: dict[str, ListenerView] = {**self.listeners, **self.remote}
        self.control.view = RuntimeView(
            self.config,
            ready=ready and not self.draining,
            draining=self.draining,
            listeners=MappingProxyType(listeners),
            clusters=MappingProxyType(dict(self.clusters)),
        )

    async def start(self) -> None:
        """Start every listener and cluster of the held config; raises if one cannot."""
        target = self.control.view.config
        try:
            await self._transition(target, persist=False)
        except ConfigError as e:
            # at start a bind failure is the listener's own error: one line for the CLI
            bind_error = e.__cause__
            if isinstance(bind_error, ListenerBindError):
                raise bind_error from None
            raise
        self._publish(ready=True)

    async def apply(self, change: Change, if_match: int | None) -> Config | Exception:
        for _ in range(FLEET_TRIES):
            result = await self._apply_once(change, if_match)
            if not isinstance(result, FleetConflict) or result.latest is None:
                return result
            document, revision = result.latest
            adopted = await self.adopt(document, revision)
            if if_match is not None or not adopted:
                return result
        return result

    async def adopt(self, document: bytes, revision: int) -> bool:
        """Run etcd's config at ``revision`` if it is newer than this node's; whether
        the node now runs it."""
        store = self.control.store
        assert isinstance(store, EtcdStore)
        if store.revision is not None and revision <= store.revision:
            return True
        try:
            new = config_of_document(document, self.config)
            if new != self.config:
                await self._transition(new, persist=False)
        except GatewayError as e:
            log.error("etcd revision %d (a config from the fleet) not applied: %s", revision, e)
            return False
        await store.adopt(new, revision)
        self._publish(ready=True)
        log.info("config version %d (etcd revision %d) applied", new.version, revision)
        return True

    async def _apply_once(self, change: Change, if_match: int | None) -> Config | Exception:
        current = self.config
        if if_match is not None and if_match != current.version:
            return VersionMismatch(if_match, current.version)
        try:
            changed = change(current)
        except Exception as e:  # the change is the caller's code: its error is the caller's answer
            return e
        try:
            new = ensure_valid(attrs.evolve(changed, version=current.version + 1))
            await self._transition(new, persist=True)
        except GatewayError as e:
            log.warning("config version %d refused: %s", current.version + 1, e)
            return e
        self._publish(ready=True)
        log.info("config version %d applied", new.version)
        return new

    async def drain(self, grace: float) -> None:
        self.draining = True
        self._publish(ready=False)
        if self.pool is not None:
            await self.pool.drain(grace)
        for handle in self.listeners.values():
            try:
                await handle.drain(grace)
            except ActorStopped:
                pass  # already stopped: nothing to drain

    # -- one change, all or nothing ------------------------------------------------------

    async def _transition(self, new: Config, *, persist: bool) -> None:
        """Move the running parts from ``self.config`` to ``new``, or leave them as they were.

        Raises ``ConfigError`` (a listener cannot bind), ``ChangeFailed`` or
        ``StateFileError`` after undoing every step it took.
        """
        undo: list[Undo] = []
        try:
            commit = await self._steps(new, persist, undo)
        except BaseException as e:
            with trio.CancelScope(shield=True):
                await self._undo(undo)
            if isinstance(e, ActorStopped | trio.BrokenResourceError):
                raise ChangeFailed(f"{e}; the change was rolled back") from e
            if isinstance(e, GatewayError) or not isinstance(e, Exception):
                raise
            raise ChangeFailed(f"{type(e).__name__}: {e}; the change was rolled back") from e
        self.config = new
        for action in commit:
            try:
                await action()
            except Exception:  # the change is in force; what is left over is only logged
                log.exception("committing config version %d", new.version)

    async def _steps(self, new: Config, persist: bool, undo: list[Undo]) -> list[Undo]:
        """Take steps 1-5, recording how to undo each; returns the commit actions."""
        old = self.config
        commit: list[Undo] = []
        bound = self._bind(old, new, undo)
        await self._move_clusters(old, new, undo)
        if self.pool is None:
            self._swap_dataplane(old, new, undo)
            await self._move_listeners(old, new, bound, undo, commit)
        else:  # the workers swap their own data planes
            await self._install_on_workers(self.pool, new, bound, undo, commit)
        # (a primary with workers serves no request: the modules its validation loaded go)
        commit.append(self._closing_unused_filters)
        if persist:
            await self.control.store.commit(new)
        for name in _names(old.clusters) - _names(new.clusters):
            commit.append(self._removal_of_cluster(name))
        for name in _names(old.listeners) - _names(new.listeners):
            commit.append(self._removal_of_listener(name))
        return commit

    def _bind(self, old: Config, new: Config, undo: list[Undo]) -> dict[str, Sockets]:
        """Step 1: sockets for listeners that are new or move; 422 naming each that cannot."""
        bound: dict[str, Sockets] = {}

        async def close_bound() -> None:
            for sockets in bound.values():
                close_sockets(sockets)

        undo.append(close_bound)
        issues = []
        running = self.listeners if self.pool is None else self.remote
        for i, lst in enumerate(new.listeners):
            before = old.listener(lst.name)
            if before is not None and lst.name in running and not needs_rebind(before, lst):
                continue
            try:
                # with workers, the address is only held here: they listen on it
                bound[lst.name] = bind_listener(lst, listen=self.pool is None)
            except ListenerBindError as e:
                issues.append((i, e))
        if issues:
            error = ConfigError([ConfigIssue(f"listeners[{i}].address", str(e)) for i, e in issues])
            raise error from issues[0][1]
        return bound

    async def _move_clusters(self, old: Config, new: Config, undo: list[Undo]) -> None:
        """Step 2: new clusters start, changed ones take their new config."""
        for cluster in new.clusters:
            before = old.cluster(cluster.name)
            if cluster.name not in self.clusters:
                handle = ClusterHandle(
                    cluster,
                    self.control.inbox if self.pool else None,
                    events=self.control.events,
                    stats=self.stats.cluster(cluster.name),
                    detect_outliers=self.control.detect_outliers,
                )
                await self.actors.start_child(_cluster_child(handle))
                self.clusters[cluster.name] = handle
                self.stats.track_cluster(handle)
                undo.append(self._removal_of_cluster(cluster.name))
            elif before is not None and before != cluster:
                handle = self.clusters[cluster.name]
                undo.append(_reconfiguration(handle, before))
                await handle.reconfigure(cluster)

    def _swap_dataplane(self, old: Config, new: Config, undo: list[Undo]) -> None:
        """Step 3: one assignment. Listeners on their way out keep their routes to drain."""
        ref = self.control.dataplane
        previous = ref.current
        watched = watched_routes(new)
        routes = {
            lst.name: RouteTable(
                lst,
                watch_routes(lst.name, watched[lst.name], self.stats)
                if lst.name in watched
                else None,
            )
            for lst in new.listeners
        }
        for name in _names(old.listeners) - _names(new.listeners):
            if name in previous.routes:
                routes[name] = previous.routes[name]
        chains, network_chains = build_chains(new, self.stats)
        ref.current = DataPlane(
            config=new,
            routes=routes,
            clusters={c.name: self.clusters[c.name] for c in new.clusters},
            faults=FaultTable.compile(new, previous.faults),
            chains=chains,
            network_chains=network_chains,
        )

        async def restore() -> None:
            ref.current = previous

        undo.append(restore)

    async def _closing_unused_filters(self) -> None:
        """Committed: the proxy-wasm hosts no chain of the data plane uses are closed (the
        requests in flight on them finish there). Not at the swap: an undo puts the old
        data plane back, hosts and all."""
        close_unused(self.control.dataplane.current)

    async def _move_listeners(
        self,
        old: Config,
        new: Config,
        bound: dict[str, Sockets],
        undo: list[Undo],
        commit: list[Undo],
    ) -> None:
        """Step 4: each listener takes its config live, moves to new sockets, or starts."""
        for lst in new.listeners:
            before = old.listener(lst.name)
            handle = self.listeners.get(lst.name)
            if handle is None or before is None:
                await self._start_listener(lst, bound.pop(lst.name), undo)
            elif lst.name in bound:
                sockets = bound.pop(lst.name)
                left = await handle.rebind(lst, sockets)
                undo.append(_rebinding(handle, before, left))
                commit.append(_closing(left))
            elif before != lst:
                undo.append(_reconfiguration(handle, before))
                await handle.reconfigure(lst)

    async def _install_on_workers(
        self,
        pool: WorkerPool,
        new: Config,
        bound: dict[str, Sockets],
        undo: list[Undo],
        commit: list[Undo],
    ) -> None:
        """Step 4 with workers: every worker serves ``new``, its listeners where they are held."""
        held_before, remote_before, installed_before = (
            dict(self.held),
            dict(self.remote),
            self.installed,
        )
        for name in _names(self.config.listeners) - _names(new.listeners):
            commit.append(_closing(self.held.pop(name, ())))
        for name, sockets in bound.items():
            if name in self.held:
                commit.append(_closing(self.held[name]))
            self.held[name] = sockets
        bound.clear()  # held now: closed by the commit, or by the undo below

        async def restore() -> None:
            for name, sockets in self.held.items():
                if held_before.get(name) is not sockets:
                    close_sockets(sockets)
            self.held, self.remote = held_before, remote_before
            self.installed = installed_before
            if installed_before is not None:
                await pool.install(installed_before)

        undo.append(restore)
        addresses = {lst.name: _held_address(lst, self.held[lst.name]) for lst in new.listeners}
        self.remote = {
            lst.name: RemoteListener(lst, addresses[lst.name], self.stats.listener(lst.name))
            for lst in new.listeners
        }
        self.installed = worker_config(new, addresses, self._members())
        await pool.install(self.installed)

    def _members(self) -> dict[str, tuple[Endpoint, ...]]:
        return {name: handle.snapshot.members for name, handle in self.clusters.items()}

    async def sync_members(self) -> None:
        """A cluster published new members: the workers get them (same config version)."""
        if self.pool is None or self.installed is None:
            return
        addresses = {name: remote.bound for name, remote in self.remote.items()}
        synced = worker_config(self.config, addresses, self._members())
        if synced == self.installed:
            return
        try:
            await self.pool.install(synced)
        except Exception:
            log.exception("installing new cluster members on the workers")
            return
        self.installed = synced

    async def sync_health(self, name: str) -> None:
        """A cluster's health verdicts changed: the workers get them."""
        handle = self.clusters.get(name)
        if self.pool is None or handle is None:
            return
        try:
            await self.pool.publish_health(name, dict(handle.health), handle.ejected)
        except Exception:
            log.exception("sending cluster %s's health verdicts to the workers", name)

    async def _start_listener(self, config: Listener, sockets: Sockets, undo: list[Undo]) -> None:
        handle = ListenerHandle(config, self.control.dataplane, self.stats, sockets)
        self._serial += 1
        child = f"listener:{config.name}#{self._serial}"
        try:
            await self.actors.start_child(_listener_child(handle, child))
        except BaseException:
            close_sockets(sockets)
            raise
        self.listeners[config.name] = handle

        async def stop() -> None:
            del self.listeners[config.name]
            await self.actors.stop_child(child)

        undo.append(stop)

    def _removal_of_cluster(self, name: str) -> Undo:
        async def remove() -> None:
            handle = self.clusters.pop(name)
            self.stats.forget_cluster(name)
            if f"cluster:{name}" in self.actors:
                await self.actors.stop_child(f"cluster:{name}")
            for state in handle.snapshot.all_endpoints:
                state.pool.drain()

        return remove

    def _removal_of_listener(self, name: str) -> Undo:
        """A removed listener drains and stops by itself; its stats go with it."""

        async def remove() -> None:
            self.stats.forget_listener(name)
            if self.pool is not None:
                return  # each worker drains it, as the config it installed says
            handle = self.listeners.pop(name)
            try:
                await handle.drain(REMOVED_LISTENER_GRACE)
            except ActorStopped:
                pass  # already stopped

        return remove

    async def _undo(self, undo: list[Undo]) -> None:
        for action in reversed(undo):
            try:
                await action()
            except Exception:
                log.exception("undoing a failed change")


def watched_routes(config: Config) -> dict[str, frozenset[str]]:
    """Per listener, the routes an active rollout watches (their requests counted per
    cluster for it)."""
    watched: dict[str, set[str]] = {}
    for rollout in config.rollouts:
        if rollout.active:
            watched.setdefault(rollout.listener, set()).add(rollout.route)
    return {name: frozenset(routes) for name, routes in watched.items()}


def _held_address(config: Listener, sockets: Sockets) -> Address:
    """The listener's address with the port its held socket got (port 0 resolved)."""
    return attrs.evolve(config.address, port=int(sockets[0].getsockname()[1]))


def _names(items: tuple[Listener, ...] | tuple[Cluster, ...]) -> set[str]:
    return {item.name for item in items}


def _reconfiguration(handle: ClusterHandle | ListenerHandle, before: Any) -> Undo:
    async def reconfigure_back() -> None:
        await handle.reconfigure(before)

    return reconfigure_back


def _rebinding(handle: ListenerHandle, before: Listener, sockets: Sockets) -> Undo:
    async def rebind_back() -> None:
        close_sockets(await handle.rebind(before, sockets))

    return rebind_back


def _closing(sockets: Sockets) -> Undo:
    async def close() -> None:
        close_sockets(sockets)

    return close


def _listener_child(handle: ListenerHandle, name: str) -> ChildSpec:
    async def start(*, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        await run_listener(handle, task_status=task_status)

    return ChildSpec(name=name, start=start, restart="transient")


def _cluster_child(handle: ClusterHandle) -> ChildSpec:
    async def start(*, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        await run_cluster(handle, task_status=task_status)

    return ChildSpec(name=f"cluster:{handle.name}", start=start)
