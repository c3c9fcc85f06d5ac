"""Where the control plane commits a change: the state file (one node) or etcd (a fleet).

Theory of operation: a ``Store`` is step 5 of a change (``gateway.control.plane``):
``commit(config)`` makes the change durable, or raises and the change is rolled back.

- ``FileStore``: today's state file, written atomically; the default.
- ``EtcdStore``: the shared part of the config (everything but ``admin`` and
  ``config_store``, which are each node's own) is one JSON document at
  ``<prefix>/config``. A commit is an etcd transaction comparing the key's
  ``mod_revision`` with the revision of the config this node runs: if another node
  committed since, the transaction fails and ``FleetConflict`` (412) carries what etcd
  holds now, which the control plane applies before anything else. A committed change
  is also written to the node's state file, its local cache, from which it starts when
  etcd is down. ``revision`` None means the node has not caught up with etcd since it
  started from that cache: commits are refused (``StoreUnavailable``, 503) until the
  watch (``gateway.control.fleet``) has read the config again.

Only the control plane actor calls ``commit`` and ``adopt``, so ``revision`` has one
writer; the watch reads it when it reconnects.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Protocol

import attrs
import trio

from gateway.config import Config, config_from_data, unstructure
from gateway.control.etcd import Compare, EtcdClient, KeyValue, put_op, range_op
from gateway.control.state import load_state, save_state
from gateway.errors import ConfigError, ConfigIssue, FleetConflict, StoreUnavailable

__all__ = ["EtcdStore", "FileStore", "Opened", "Store", "open_etcd_store"]

log = logging.getLogger("triogate.store")

#: the config's fields that are each node's own, never in etcd
LOCAL_FIELDS = ("admin", "config_store")


class Store(Protocol):
    """Step 5 of a change: make it durable, or raise (the change is rolled back)."""

    async def commit(self, config: Config) -> None: ...


@attrs.define
class FileStore:
    """The state file beside the config file (None: changes are not persisted)."""

    path: Path | None

    async def commit(self, config: Config) -> None:
        if self.path is not None:
            await trio.to_thread.run_sync(save_state, self.path, config)


def fleet_document(config: Config) -> bytes:
    """The shared part of ``config`` as etcd holds it."""
    data = unstructure(config)
    for field in LOCAL_FIELDS:
        del data[field]
    return json.dumps(data, separators=(",", ":")).encode()


def config_of_document(raw: bytes, local: Config) -> Config:
    """The config in ``raw`` with this node's own fields from ``local``; ``ConfigError``
    if it is not a valid config."""
    try:
        data: Any = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ConfigError([ConfigIssue("", "etcd's config document is not a JSON object")])
    for field in LOCAL_FIELDS:
        data[field] = unstructure(getattr(local, field))
    return config_from_data(data)


class EtcdStore:
    """The fleet's config in etcd, and this node's cache of it (see the module docstring)."""

    def __init__(self, client: EtcdClient, cache: FileStore, revision: int | None) -> None:
        self.client = client
        self.prefix = client.store.prefix
        self.config_key = f"{self.prefix}/config"
        self.cache = cache
        #: etcd's revision of the config this node runs; None: not caught up yet
        self.revision = revision

    async def commit(self, config: Config) -> None:
        if self.revision is None:
            raise StoreUnavailable(
                f"not caught up with etcd at {self.prefix} since starting from the local "
                "cache: writes are refused until etcd is back"
            )
        result = await self.client.txn(
            [Compare(self.config_key, "MOD", self.revision)],
            [put_op(self.config_key, fleet_document(config))],
            [range_op(self.config_key)],
        )
        if not result.succeeded:
            latest = result.ranges[0][0] if result.ranges and result.ranges[0] else None
            raise self._conflict(config, latest)
        self.revision = result.revision
        await self._cache(config)

    def _conflict(self, config: Config, latest: KeyValue | None) -> FleetConflict:
        current = config.version - 1
        if latest is not None:
            try:
                current = int(json.loads(latest.value).get("version", current))
            except (ValueError, AttributeError):
                pass
        return FleetConflict(
            config.version - 1,
            current,
            None if latest is None else (latest.value, latest.mod_revision),
        )

    async def adopt(self, config: Config, revision: int) -> None:
        """The node runs ``config``, etcd's at ``revision``, now (from another node)."""
        self.revision = revision
        await self._cache(config)

    async def _cache(self, config: Config) -> None:
        try:
            await self.cache.commit(config)
        except Exception:  # etcd has it: a cache that lags only matters if etcd is down
            log.exception("writing the local cache of config version %d", config.version)


@attrs.frozen
class Opened:
    """What ``open_etcd_store`` found: the store, the config to start with, what to say."""

    store: EtcdStore
    config: Config
    message: str


async def open_etcd_store(file_config: Config, cache_path: Path | None, source: str) -> Opened:
    """The fleet's config from etcd, seeded from ``file_config`` only if the prefix has
    none; or, with etcd unreachable, this node's cache (``StoreUnavailable`` if none)."""
    client = EtcdClient(file_config.config_store)
    cache = FileStore(cache_path)
    prefix = file_config.config_store.prefix
    key = f"{prefix}/config"
    try:
        result = await client.txn(
            [Compare(key, "CREATE", 0)],
            [put_op(key, fleet_document(file_config))],
            [range_op(key)],
        )
    except StoreUnavailable as e:
        cached = None if cache_path is None else load_state(cache_path)
        if cached is None:
            await client.aclose()
            where = "no local cache (--no-state)" if cache_path is None else f"none at {cache_path}"
            raise StoreUnavailable(f"{e}; and {where} to start from") from None
        config = attrs.evolve(
            cached, admin=file_config.admin, config_store=file_config.config_store
        )
        return Opened(
            EtcdStore(client, cache, None),
            config,
            f"etcd unreachable ({e}): starting from the local cache {cache_path}, config "
            f"version {config.version}; writes are refused until etcd is back",
        )
    if result.succeeded:
        store = EtcdStore(client, cache, result.revision)
        await store.adopt(file_config, result.revision)
        return Opened(
            store,
            file_config,
            f"etcd {prefix} was empty: seeded it from {source} (config version "
            f"{file_config.version}, revision {result.revision})",
        )
    [latest] = result.ranges[0]
    try:
        config = config_of_document(latest.value, file_config)
    except ConfigError:
        await client.aclose()
        raise
    store = EtcdStore(client, cache, latest.mod_revision)
    await store.adopt(config, latest.mod_revision)
    return Opened(
        store,
        config,
        f"etcd {prefix} holds config version {config.version} (revision "
        f"{latest.mod_revision}): serving it; {source} was not applied",
    )
