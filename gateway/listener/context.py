"""What every connection of one listener shares: its config, stats, access log and timers.

Timers: a connection's timeouts (idle, header, route) are one plain float deadline per
connection and one cancel scope; ``run_timers``, a task of the listener, wakes every
``TIMER_TICK`` and cancels the scope of each connection past its deadline. ``now`` is the
clock at the last tick plus one tick, so a deadline computed from it never fires early
and at most two ticks late: moving a trio deadline three times per request cost ~10% of
the request rate.

Only the listener actor's task changes the config parts (``reconfigure``) and the drain
flag; connections read them. The listener's network toxics live in one ``ToxicTable``
for the listener's life (``toxic_table``; live links watch its version); ``toxics`` is
that table while the listener has toxics and None otherwise, the one attribute an HTTP
connection tests at its start.
"""

from __future__ import annotations

import random
from typing import Protocol

import attrs
import trio

from gateway.config import Listener
from gateway.dataplane import DataPlaneRef
from gateway.faults.toxics import ToxicTable
from gateway.filters.chain import FilterLog
from gateway.observe.accesslog import AccessLog
from gateway.observe.stats import ClusterStats, ListenerStats, StatsRegistry
from gateway.proxy.mirror import Mirror
from gateway.tls import ServerTls
from policies.split import WeightedSplit

#: granularity of the idle, header and route timeouts (seconds)
TIMER_TICK = 0.05


class TimedConnection(Protocol):
    """A connection under the listener's timers."""

    deadline: float
    scope: trio.CancelScope

    def cancel_if_idle(self) -> None: ...


@attrs.define
class ListenerContext:
    """What every connection of one listener shares."""

    config: Listener
    dataplane: DataPlaneRef
    scheme: bytes = b"http"
    rng: random.Random = attrs.field(factory=random.Random)
    #: set when the listener drains: connections finish their request, then close
    draining: bool = False
    #: every open connection, for the timer task and the drain (which closes at once
    #: those waiting for their next request)
    connections: set[TimedConnection] = attrs.field(factory=set)
    #: the clock as of the timer task's last tick, plus one tick: a deadline computed
    #: from it never fires early, and at most two ticks late
    now: float = 0.0
    #: where this listener's (and its clusters') stats live
    registry: StatsRegistry = attrs.field(factory=StatsRegistry)
    stats: ListenerStats = attrs.field(init=False)
    #: ``registry.clusters`` (one dict for the registry's life), one lookup closer
    cluster_stats: dict[str, ClusterStats] = attrs.field(init=False)
    access_log: AccessLog = attrs.field(init=False)
    #: copies of requests on their way to shadow clusters
    mirror: Mirror = attrs.field(init=False)
    #: the ``on_log`` hooks of HTTP filters, run in the listener's task
    filter_log: FilterLog = attrs.field(init=False)
    #: ``config.tracing``, flattened for the data path
    start_traceparent: bool = attrs.field(init=False)
    traceparent_sampled: bool = attrs.field(init=False)
    #: the listener's network toxics, for its whole life (updated in place)
    toxic_table: ToxicTable = attrs.field(init=False)
    #: ``toxic_table`` while the listener has toxics, None while it has none
    toxics: ToxicTable | None = attrs.field(init=False)
    #: an L4 listener's clusters: its ``cluster``, or its weighted ``split``
    l4_split: WeightedSplit | None = attrs.field(init=False)
    #: the TLS contexts in force (None: cleartext); replaced on a reload of the files
    #: (``gateway.tls.reload``), so a connection reads it once, at its start
    tls: ServerTls | None = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.stats = self.registry.listener(self.config.name)
        self.cluster_stats = self.registry.clusters
        self.access_log = AccessLog(self.config.access_log, self.stats)
        self.mirror = Mirror(self.stats, self.dataplane)
        self.filter_log = FilterLog()
        self.start_traceparent = self.config.tracing.start_traceparent
        self.traceparent_sampled = self.config.tracing.sampled
        self.toxic_table = ToxicTable(self.config.toxics)
        self.toxics = self.toxic_table if self.config.toxics else None
        self.l4_split = _l4_split(self.config)
        self.tls = ServerTls(self.config.tls) if self.config.tls is not None else None
        self.scheme = b"https" if self.tls is not None else b"http"

    def reconfigure(self, config: Listener) -> None:
        """Take a new config of the same listener (one that needs no rebind)."""
        self.config = config
        self.access_log.reconfigure(config.access_log)
        self.start_traceparent = config.tracing.start_traceparent
        self.traceparent_sampled = config.tracing.sampled
        self.toxic_table.update(config.toxics)
        self.toxics = self.toxic_table if config.toxics else None
        self.l4_split = _l4_split(config)
        if config.tls is None:
            self.tls = None
        elif self.tls is None or self.tls.config != config.tls:
            self.tls = ServerTls(config.tls)  # validation loaded these files already
        self.scheme = b"https" if self.tls is not None else b"http"

    async def run_timers(self, tick: float = TIMER_TICK) -> None:
        """Cancel connections past their deadline; runs until cancelled."""
        while True:
            now = trio.current_time()
            self.now = now + tick
            for conn in self.connections:
                if conn.deadline <= now:
                    conn.scope.cancel()
            await trio.sleep(tick)

    @property
    def name(self) -> str:
        return self.config.name


def _l4_split(config: Listener) -> WeightedSplit | None:
    """Where an L4 listener's connections go; None for an HTTP listener."""
    if config.cluster is not None:
        return WeightedSplit.single(config.cluster)
    if config.split:
        return WeightedSplit.of((wc.cluster, wc.weight) for wc in config.split)
    return None
