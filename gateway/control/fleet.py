"""A fleet of gateways sharing one config through etcd: the watch, the node's session
(its lease, its key under ``nodes/``, the rollout leadership) and the shared registry.

Theory of operation: every key of a fleet lives under ``config_store.prefix``:

    <prefix>/config                    the shared config, one JSON document
    <prefix>/nodes/<node>              each live node: address, version, start; lease-bound
    <prefix>/leader/rollouts           the node that drives the rollouts; lease-bound
    <prefix>/registry/<cluster>/<addr> each registered instance; bound to its TTL's lease

- ``run_store_watch`` watches the prefix from the revision it last saw. The config's
  changes go to the control plane (``StoreChanged``), the registry's to the
  ``FleetRegistry`` actor. When the stream breaks (etcd down) it retries with backoff
  and resumes from that revision; if etcd compacted it away, or the node started from
  its cache, it reads the whole prefix again first. The data path never waits on it.
- ``run_fleet_session`` holds one lease per node (``NODE_TTL``), kept alive every
  third of it, and under it the node's key and, when free, the leader key: the node
  that holds it drives the rollouts (``RolloutsHandle.leading``), the others follow
  the weights it writes into the config. A dead node's lease expires and its keys go;
  another node takes the leader key at its next round, within ``NODE_TTL`` plus a
  round, and restores each rollout at the step its status records.
- ``FleetRegistry`` is the actor that mirrors ``registry/`` into the local registry
  clusters: each instance registered here with a TTL of 0 (etcd's lease expires it, on
  every node at once: the watch sees the delete), and reconciled whenever a key
  changes, the config changes, or a second passes (a cluster added or restarted
  learns its instances again). A registration through the admin API is an etcd put
  bound to a new lease of its TTL, acknowledged once etcd has it and this node's
  mirror has applied it; a heartbeat is a keepalive of that lease.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import aclosing
from types import MappingProxyType
from typing import Any, Final, Protocol

import attrs
import trio

from gateway.cluster.actor import ClusterHandle, Registered
from gateway.config import Address, Endpoint, check_endpoint, structure, unstructure
from gateway.control.etcd import Compare, EtcdClient, Event, KeyValue, put_op, range_op
from gateway.control.plane import ControlPlane, StoreChanged
from gateway.control.store import EtcdStore
from gateway.discovery import NotARegistryCluster, NotRegistered, Registration
from gateway.errors import ActorStopped, ConfigError, ConfigIssue, GatewayError, StoreUnavailable
from gateway.runtime.actor import command

__all__ = [
    "NODE_TTL",
    "Fleet",
    "FleetRegistry",
    "LocalRegistrations",
    "Registrations",
    "run_fleet_registry",
    "run_fleet_session",
    "run_store_watch",
]

log = logging.getLogger("triogate.fleet")

#: seconds a node's lease lasts without a keepalive (its keys, leadership included)
NODE_TTL: Final = 3
#: seconds between two reconciles of the registry mirror when nothing changes
RECONCILE: Final = 1.0
#: the longest wait between two tries of a broken watch
MAX_BACKOFF: Final = 2.0


class Registrations(Protocol):
    """A registry cluster's registrations: the cluster actor's own (one node) or the
    fleet's in etcd."""

    async def register(self, endpoint: Endpoint, ttl: float | None) -> Registered: ...
    async def renew(self, key: str, ttl: float | None) -> Registration: ...
    async def deregister(self, key: str) -> Registration: ...
    async def registrations(self) -> tuple[Registration, ...]: ...


@attrs.frozen
class LocalRegistrations:
    """One node's registry: the cluster actor's, with its TTL timers."""

    handle: ClusterHandle

    async def register(self, endpoint: Endpoint, ttl: float | None) -> Registered:
        return await self.handle.register(endpoint, ttl)

    async def renew(self, key: str, ttl: float | None) -> Registration:
        return await self.handle.renew(key, ttl)

    async def deregister(self, key: str) -> Registration:
        return await self.handle.deregister(key)

    async def registrations(self) -> tuple[Registration, ...]:
        return self.handle.registrations


# -- the registry mirror -----------------------------------------------------------------


@attrs.frozen
class _Entry:
    """One registration as etcd holds it."""

    endpoint: Endpoint
    ttl: float
    lease: int
    revision: int


@attrs.frozen
class RegistryChanged:
    """Event: keys under ``registry/`` changed (``full``: these are all of them)."""

    kvs: tuple[Event, ...]
    full: bool
    reply: trio.MemorySendChannel[Exception | None] | None = None


class FleetRegistry:
    """Handle of the fleet registry actor: the registrations etcd holds, by cluster."""

    def __init__(self, client: EtcdClient, control: ControlPlane) -> None:
        self.client = client
        self.control = control
        self.root = f"{client.store.prefix}/registry/"
        #: (cluster, address) -> the registration; replaced whole by the actor
        self.entries: Mapping[tuple[str, str], _Entry] = MappingProxyType({})
        self.inbox, self._inbox_rx = trio.open_memory_channel[RegistryChanged](64)

    def key(self, cluster: str, address: str) -> str:
        return f"{self.root}{cluster}/{address}"

    def of(self, cluster: str) -> FleetRegistrations:
        return FleetRegistrations(self, cluster)

    async def changed(self, events: tuple[Event, ...], *, full: bool = False) -> None:
        """Tell the actor of ``events`` and wait until it has applied them."""
        await command(
            self.inbox,
            lambda reply: RegistryChanged(events, full, reply),
            who="the fleet registry",
        )


@attrs.frozen
class FleetRegistrations:
    """One registry cluster's registrations in etcd (see the module docstring)."""

    fleet: FleetRegistry
    cluster: str

    def _default_ttl(self) -> float:
        cluster = self.fleet.control.config.cluster(self.cluster)
        if cluster is None or cluster.discovery.type != "registry":
            kind = "no" if cluster is None else repr(cluster.discovery.type)
            raise NotARegistryCluster(
                f"cluster {self.cluster!r} takes its endpoints from {kind} discovery, "
                "not from registrations"
            )
        return cluster.discovery.default_ttl

    async def register(self, endpoint: Endpoint, ttl: float | None) -> Registered:
        issues = check_endpoint(endpoint, "")
        if ttl is not None and not (math.isfinite(ttl) and ttl >= 0):
            issues.append(ConfigIssue("ttl", "must be a number of seconds >= 0"))
        if issues:
            raise ConfigError(issues)
        ttl = self._default_ttl() if ttl is None else ttl
        client = self.fleet.client
        lease = await client.grant(ttl) if ttl > 0 else 0
        value = json.dumps({"endpoint": unstructure(endpoint), "ttl": ttl}).encode()
        key = self.fleet.key(self.cluster, str(endpoint.address))
        revision, previous = await client.put(key, value, lease)
        if previous is not None and previous.lease and previous.lease != lease:
            await client.revoke(previous.lease)  # bound to nothing now
        kv = KeyValue(key, value, revision, revision, lease)
        await self.fleet.changed((Event(kv, deleted=False),))
        return Registered(_registration(endpoint, ttl), previous is None)

    async def renew(self, key: str, ttl: float | None) -> Registration:
        if ttl is not None and not (math.isfinite(ttl) and ttl >= 0):
            raise ConfigError([ConfigIssue("ttl", "must be a number of seconds >= 0")])
        entry = self.fleet.entries.get((self.cluster, key))
        if entry is None:
            raise NotRegistered(f"no instance registered at {key}")
        if ttl is not None and ttl != entry.ttl:
            answer = await self.register(entry.endpoint, ttl)
            return answer.registration
        if entry.lease and await self.fleet.client.keepalive(entry.lease) == 0:
            raise NotRegistered(f"no instance registered at {key} (its TTL ran out)")
        return _registration(entry.endpoint, entry.ttl)

    async def deregister(self, key: str) -> Registration:
        entry = self.fleet.entries.get((self.cluster, key))
        deleted = await self.fleet.client.delete(self.fleet.key(self.cluster, key))
        if not deleted or entry is None:
            raise NotRegistered(f"no instance registered at {key}")
        if entry.lease:
            await self.fleet.client.revoke(entry.lease)
        await self.fleet.changed(tuple(Event(kv, deleted=True) for kv in deleted))
        return _registration(entry.endpoint, entry.ttl)

    async def registrations(self) -> tuple[Registration, ...]:
        """Every registration, with the time its lease has left (etcd's, not this node's)."""
        found = []
        for (cluster, _), entry in sorted(self.fleet.entries.items()):
            if cluster != self.cluster:
                continue
            left: float | None = None
            if entry.lease:
                left = float(await self.fleet.client.time_to_live(entry.lease))
                if left < 0:
                    continue  # expired; the watch's delete is on its way
            found.append(_registration(entry.endpoint, entry.ttl, left))
        return tuple(found)


def _registration(endpoint: Endpoint, ttl: float, left: float | None = None) -> Registration:
    now = trio.current_time()
    expires = math.inf if ttl <= 0 else now + (ttl if left is None else left)
    return Registration(endpoint, ttl, expires)


async def run_fleet_registry(
    fleet: FleetRegistry, *, task_status: trio.TaskStatus[FleetRegistry] = trio.TASK_STATUS_IGNORED
) -> None:
    """The fleet registry actor: applies etcd's registrations to the local clusters."""
    entries: dict[tuple[str, str], _Entry] = dict(fleet.entries)
    task_status.started(fleet)
    while True:
        msg: RegistryChanged | None = None
        with trio.move_on_after(RECONCILE):
            msg = await fleet._inbox_rx.receive()
        if msg is not None:
            if msg.full:
                entries.clear()
            for event in msg.kvs:
                _apply_event(fleet, entries, event)
            fleet.entries = MappingProxyType(dict(entries))
        await _reconcile(fleet.control, entries)
        if msg is not None and msg.reply is not None:
            with msg.reply:
                msg.reply.send_nowait(None)


def _apply_event(
    fleet: FleetRegistry, entries: dict[tuple[str, str], _Entry], event: Event
) -> None:
    cluster, _, address = event.kv.key.removeprefix(fleet.root).rpartition("/")
    current = entries.get((cluster, address))
    if current is not None and current.revision > event.kv.mod_revision:
        return  # older than what is applied (the admin's own put, then the watch's)
    if event.deleted:
        entries.pop((cluster, address), None)
        return
    try:
        data = json.loads(event.kv.value)
        endpoint = structure(Endpoint, data["endpoint"])
        ttl = float(data["ttl"])
    except (ValueError, KeyError, TypeError, ConfigError) as e:
        log.warning("etcd key %s is not a registration: %s", event.kv.key, e)
        return
    entries[(cluster, address)] = _Entry(endpoint, ttl, event.kv.lease, event.kv.mod_revision)


async def _reconcile(control: ControlPlane, entries: dict[tuple[str, str], _Entry]) -> None:
    """Every local registry cluster registers exactly etcd's instances (TTL 0 here)."""
    for name, handle in control.clusters.items():
        cluster = control.config.cluster(name)
        if cluster is None or cluster.discovery.type != "registry":
            continue
        want = {addr: e.endpoint for (c, addr), e in entries.items() if c == name}
        have = {r.key: r.endpoint for r in handle.registrations}
        try:
            for addr, endpoint in want.items():
                if have.get(addr) != endpoint:
                    await handle.register(endpoint, 0)
            for addr in have.keys() - want.keys():
                await handle.deregister(addr)
        except (GatewayError, ActorStopped) as e:
            log.warning("cluster %s: the fleet's registrations not applied yet: %s", name, e)


# -- the watch -----------------------------------------------------------------------------


async def run_store_watch(
    store: EtcdStore,
    control: ControlPlane,
    registry: FleetRegistry,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Watch the prefix and hand each change to its owner, until cancelled."""
    client, prefix = store.client, store.prefix
    task_status.started()
    start: int | None = None if store.revision is None else store.revision + 1
    backoff = 0.05
    while True:
        try:
            if start is None:  # started from the cache, or compacted: read it all again
                found = await client.range(prefix + "/", prefix=True)
                await _deliver_all(store, control, registry, found.kvs)
                start = found.revision + 1
                log.info("etcd %s read whole at revision %d", prefix, found.revision)
            async with aclosing(client.watch(prefix + "/", start)) as batches:
                async for batch in batches:
                    backoff = 0.05
                    if batch.compacted:
                        log.warning(
                            "etcd compacted past revision %d: reading %s again", start, prefix
                        )
                        start = None
                        break
                    await _deliver(store, control, registry, batch.events)
                    for event in batch.events:
                        start = max(start, event.kv.mod_revision + 1)
        except StoreUnavailable as e:
            log.warning("etcd watch on %s: %s; again in %.2f s", prefix, e, backoff)
            await trio.sleep(backoff)
            backoff = min(MAX_BACKOFF, backoff * 2)


async def _deliver_all(
    store: EtcdStore, control: ControlPlane, registry: FleetRegistry, kvs: tuple[KeyValue, ...]
) -> None:
    for kv in kvs:
        if kv.key == store.config_key:
            await control.inbox.send(StoreChanged(kv.value, kv.mod_revision))
    await registry.changed(
        tuple(Event(kv, deleted=False) for kv in kvs if kv.key.startswith(registry.root)),
        full=True,
    )


async def _deliver(
    store: EtcdStore, control: ControlPlane, registry: FleetRegistry, events: tuple[Event, ...]
) -> None:
    registered = tuple(e for e in events if e.kv.key.startswith(registry.root))
    for event in events:
        if event.kv.key != store.config_key:
            continue
        if event.deleted:
            log.error("etcd %s was deleted: serving the last config applied", store.config_key)
        else:
            await control.inbox.send(StoreChanged(event.kv.value, event.kv.mod_revision))
    if registered:
        await registry.changed(registered)


# -- the node's session: its key and the rollout leadership ------------------------------


class Fleet:
    """This node in its fleet: its name, whether it leads the rollouts, the registry."""

    def __init__(
        self,
        store: EtcdStore,
        control: ControlPlane,
        address: Callable[[], Address | None] = lambda: None,
    ) -> None:
        self.store = store
        self.client = store.client
        self.control = control
        self.node = uuid.uuid4().hex[:12]
        self.started = time.time()
        #: the admin API's address, once it serves (what ``/fleet`` shows)
        self.address = address
        #: whether this node holds the leader key (drives the rollouts)
        self.leading = False
        self.registry = FleetRegistry(store.client, control)
        self.node_key = f"{store.prefix}/nodes/{self.node}"
        self.leader_key = f"{store.prefix}/leader/rollouts"

    def _node_value(self) -> bytes:
        return json.dumps(
            {
                "node": self.node,
                "address": None if (address := self.address()) is None else str(address),
                "version": self.control.version,
                "started": self.started,
                "pid": os.getpid(),
            }
        ).encode()

    async def nodes(self) -> list[dict[str, Any]]:
        """Every live node (its lease-bound key), with its uptime and whether it leads."""
        found = await self.client.range(f"{self.store.prefix}/nodes/", prefix=True)
        leader = await self.client.range(self.leader_key)
        leading = leader.kvs[0].value.decode() if leader.kvs else None
        now = time.time()
        nodes = []
        for kv in found.kvs:
            data = json.loads(kv.value)
            data["uptime"] = max(0.0, now - float(data.get("started", now)))
            data["leader"] = data.get("node") == leading
            data["self"] = data.get("node") == self.node
            nodes.append(data)
        return nodes


async def run_fleet_session(
    fleet: Fleet, *, task_status: trio.TaskStatus[Fleet] = trio.TASK_STATUS_IGNORED
) -> None:
    """Keep this node's lease, its key and (when free) the leader key, until cancelled;
    the lease is revoked on the way out, so a node that stops hands over at once."""
    client = fleet.client
    lease = 0
    written = b""
    last_alive = trio.current_time()
    task_status.started(fleet)
    try:
        while True:
            try:
                if lease and await client.keepalive(lease) == 0:
                    log.warning("node %s: its lease expired; taking a new one", fleet.node)
                    lease, written, fleet.leading = 0, b"", False
                if not lease:
                    lease = await client.grant(NODE_TTL)
                last_alive = trio.current_time()
                value = fleet._node_value()
                if value != written:
                    await client.put(fleet.node_key, value, lease)
                    written = value
                result = await client.txn(
                    [Compare(fleet.leader_key, "CREATE", 0)],
                    [put_op(fleet.leader_key, fleet.node.encode(), lease)],
                    [range_op(fleet.leader_key)],
                )
                leading = result.succeeded or any(
                    kv.value == fleet.node.encode() for kvs in result.ranges for kv in kvs
                )
                if leading != fleet.leading:
                    log.warning(
                        "node %s %s the rollouts", fleet.node, "leads" if leading else "follows"
                    )
                fleet.leading = leading
            except StoreUnavailable as e:
                if trio.current_time() - last_alive >= NODE_TTL:
                    fleet.leading = False  # its lease may be gone: another node may lead
                log.debug("node %s: etcd: %s", fleet.node, e)
            await trio.sleep(NODE_TTL / 3)
    finally:
        if lease:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                try:
                    await client.revoke(lease)
                except StoreUnavailable:
                    pass
