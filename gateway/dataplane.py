"""The data plane's view of the world: one immutable snapshot, swapped whole.

The control plane is the only writer of ``DataPlaneRef.current``. A connection reads it
once at the start of each request and uses that snapshot to the end, so a config change
never splits a request across two versions (requests in flight finish on the config
they started with; new requests see the new one).
"""

from __future__ import annotations

import attrs

from gateway.cluster.actor import ClusterHandle
from gateway.config import Config
from gateway.faults.table import FaultTable
from gateway.filters.chain import HttpFilterChain
from gateway.filters.network import NetworkFilterChain
from gateway.routing import RouteTable


@attrs.frozen
class DataPlane:
    config: Config
    routes: dict[str, RouteTable]
    clusters: dict[str, ClusterHandle]
    #: the HTTP faults of this version, the built-in last filter of every HTTP
    #: listener's chain (``gateway.filters.chain``); None when none is configured
    faults: FaultTable | None = None
    #: the HTTP filter chains of the listeners that have ``http_filters``; empty when
    #: none has, as the data path tests
    chains: dict[str, HttpFilterChain] = attrs.field(factory=dict)
    #: the network filter chains of the tcp listeners that have one
    network_chains: dict[str, NetworkFilterChain] = attrs.field(factory=dict)


class DataPlaneRef:
    """The mutable cell holding the current ``DataPlane``."""

    __slots__ = ("current",)

    def __init__(self, current: DataPlane) -> None:
        self.current = current
