"""The config: model (frozen attrs), structuring with error paths, whole-config checks."""

from .load import config_from_data, config_from_text, load_config
from .model import (
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
)
from .structure import json_schema, structure, unstructure
from .validate import check, check_endpoint, check_endpoints, ensure_valid

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
    "structure",
    "unstructure",
]
