"""What the control plane publishes about the running gateway: one immutable value.

The control plane actor replaces ``ControlPlane.view`` after every message it handles;
nothing else writes it and nobody edits it. The admin API, the CLI and tests read it
(and through its handles, the snapshots each actor publishes) without asking an actor:
a read never waits, and never sees a change half made.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING

import attrs

from gateway.config import Config

if TYPE_CHECKING:
    from gateway.cluster.actor import ClusterHandle
    from gateway.listener.actor import ListenerHandle

_NO_LISTENERS: MappingProxyType[str, ListenerHandle] = MappingProxyType({})
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
    listeners: MappingProxyType[str, ListenerHandle] = _NO_LISTENERS
    clusters: MappingProxyType[str, ClusterHandle] = _NO_CLUSTERS
