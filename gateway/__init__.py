"""triogate's Trio side, and the public surface the admin API and the commands use.

Everything a layer above (``admin``, ``triogate``) needs is named here or in
``gateway.config`` (the config model); the modules below are the gateway's own
(an import-linter contract in ``pyproject.toml`` holds ``admin`` to this).

    gateway/
      app.py        run_gateway, Gateway: the supervision tree of one process
      dataplane.py  the snapshot the data side reads (the control/data boundary)
      runtime/      supervisor, the request/reply helper of actor handles
      control/      the control plane actor, the runtime view it publishes, the config
                    store (state file, or etcd shared by a fleet), the rollout actor
      cluster/      cluster actors and the snapshot they publish
      listener/     listener actors, the per-listener context and timers
      proxy/        the data path: HTTP/1.1 and TCP
      http1/        sans-IO HTTP/1.1 parsing and serialising
      upstream/     per-endpoint connection pools
      discovery/    endpoint sources (dns, file, registry)
      observe/      stats, access logs, trace context
      config/       the config model, structuring, validation
"""

from gateway.app import Gateway, Service, run_gateway
from gateway.cluster.actor import ClusterHandle
from gateway.cluster.view import health_view
from gateway.control.fleet import Registrations
from gateway.control.rollouts import ACTIONS as ROLLOUT_ACTIONS
from gateway.control.rollouts import RolloutAction, RolloutsHandle
from gateway.discovery import NotRegistered, Registration
from gateway.errors import (
    ChangeFailed,
    ConfigError,
    ConfigIssue,
    GatewayError,
    RolloutConflict,
    RolloutNotFound,
    StateFileError,
    StoreUnavailable,
    VersionMismatch,
    bind_failed,
)
from gateway.observe.events import Event, EventLog
from gateway.observe.stats.export import (
    PROMETHEUS_CONTENT_TYPE,
    clusters_view,
    prometheus_text,
    stats_json,
)
from gateway.runtime.supervisor import ChildSpec

__all__ = [
    "PROMETHEUS_CONTENT_TYPE",
    "ROLLOUT_ACTIONS",
    "ChangeFailed",
    "ChildSpec",
    "ClusterHandle",
    "ConfigError",
    "ConfigIssue",
    "Event",
    "EventLog",
    "Gateway",
    "GatewayError",
    "NotRegistered",
    "Registration",
    "Registrations",
    "RolloutAction",
    "RolloutConflict",
    "RolloutNotFound",
    "RolloutsHandle",
    "Service",
    "StateFileError",
    "StoreUnavailable",
    "VersionMismatch",
    "bind_failed",
    "clusters_view",
    "health_view",
    "prometheus_text",
    "run_gateway",
    "stats_json",
]
