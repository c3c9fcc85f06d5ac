"""What the control plane publishes about the running gateway: one immutable value.

The control plane actor replaces ``ControlPlane.view`` after every message it handles;
nothing else writes it and nobody edits it. The admin API, the CLI and tests read it
(and through its handles, the snapshots each actor publishes) without asking an actor:
a read never waits, and never sees a change half made.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol

import attrs

from gateway.config import Address, Config, Listener

if TYPE_CHECKING:
    from gateway.cluster.actor import ClusterHandle


class ListenerView(Protocol):
    """What the view shows of a listener: a ``ListenerHandle`` in a single process, a
    ``RemoteListener`` (served by the worker processes) in a primary."""

    @property
    def config(self) -> Listener: ...

    @property
    def bound(self) -> Address | None: ...

    @property
    def connections(self) -> int: ...


_NO_LISTENERS: MappingProxyType[str, ListenerView] = MappingProxyType({})
_NO_CLUSTERS: MappingProxyType[str, ClusterHandle] = MappingProxyType({})


@attrs.frozen
class RuntimeView:
    """The running config, whether the gateway serves, and the actors that run it."""

    #: the config in force (its ``version`` is the ETag of the admin API)
    config: Config
    #: serving, and not draining (``/ready``)
    ready: bool = False
    draining: bool = False
    #: the listener and cluster actors of ``config``, by name
    listeners: MappingProxyType[str, ListenerView] = _NO_LISTENERS
    clusters: MappingProxyType[str, ClusterHandle] = _NO_CLUSTERS
