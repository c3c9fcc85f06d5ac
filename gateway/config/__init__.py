"""The config: model (frozen attrs), structuring with error paths, whole-config checks."""

from gateway.config.load import config_from_data, config_from_text, load_config
from gateway.config.model import (
    AccessLogConfig,
    Address,
    AdminConfig,
    Cluster,
    Config,
    Discovery,
    Endpoint,
    HashPolicy,
    Listener,
    PoolConfig,
    RetryPolicy,
    Route,
    RouteMatch,
    TracingConfig,
    VirtualHost,
    WeightedCluster,
    needs_rebind,
)
from gateway.config.structure import json_schema, structure, unstructure
from gateway.config.validate import check, check_endpoint, check_endpoints, ensure_valid

__all__ = [
    "AccessLogConfig",
    "Address",
    "AdminConfig",
    "Cluster",
    "Config",
    "Discovery",
    "Endpoint",
    "HashPolicy",
    "Listener",
    "PoolConfig",
    "RetryPolicy",
    "Route",
    "RouteMatch",
    "TracingConfig",
    "VirtualHost",
    "WeightedCluster",
    "check",
    "check_endpoint",
    "check_endpoints",
    "config_from_data",
    "config_from_text",
    "ensure_valid",
    "json_schema",
    "load_config",
    "needs_rebind",
    "structure",
    "unstructure",
]
