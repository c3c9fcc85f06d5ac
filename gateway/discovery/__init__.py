"""Where a cluster's endpoints come from: static config, DNS, a file, or a runtime registry.

Theory of operation: a cluster's ``discovery.type`` names one source.

- ``static``: the config's ``endpoints``; no task runs.
- ``dns`` (``dns.py``): a hostname re-resolved every ``interval``; every A/AAAA record
  is an endpoint on ``port``.
- ``file`` (``files.py``): a JSON or YAML endpoints file, re-read when it is replaced.
- ``registry`` (``registry.py``): instances register, heartbeat and deregister through
  the admin API; a registration whose TTL runs out expires.

The dns and file sources are tasks owned by the cluster actor (``run_source``, started
in the actor's nursery, restarted when the cluster's ``discovery`` config changes).
They never touch the actor's state: they send it ``EndpointsDiscovered`` or
``DiscoveryFailed`` (``reports.py``) through its inbox, and the actor rebuilds and
publishes the cluster snapshot. The registry is plain state inside the actor, changed
by the actor's own commands. On any failure the last good set of endpoints stays, and
the failure is counted (``DiscoveryStats``); the data path never waits on any of it.

For ``dns`` and ``file`` the config's ``endpoints`` are a seed, served until the
source's first good answer. Endpoints that leave the set drain like any removed
endpoint (``gateway.cluster``).
"""

from __future__ import annotations

from gateway.config import Discovery
from gateway.discovery.dns import DnsClient, Resolver, resolve_system, resolver_for, run_dns_source
from gateway.discovery.errors import (
    DiscoveryError,
    EndpointsFileError,
    NotARegistryCluster,
    NotRegistered,
    RegistryError,
    ResolutionFailed,
)
from gateway.discovery.files import parse_endpoints, run_file_source
from gateway.discovery.registry import Registration, Registry
from gateway.discovery.reports import (
    DiscoveryFailed,
    DiscoveryReport,
    DiscoveryStats,
    EndpointsDiscovered,
    ReportFn,
)

__all__ = [
    "DiscoveryError",
    "DiscoveryFailed",
    "DiscoveryReport",
    "DiscoveryStats",
    "DnsClient",
    "EndpointsDiscovered",
    "EndpointsFileError",
    "NotARegistryCluster",
    "NotRegistered",
    "Registration",
    "Registry",
    "RegistryError",
    "ReportFn",
    "ResolutionFailed",
    "Resolver",
    "has_source_task",
    "parse_endpoints",
    "resolve_system",
    "resolver_for",
    "run_dns_source",
    "run_file_source",
    "run_source",
]


def has_source_task(discovery: Discovery) -> bool:
    """Whether ``discovery`` runs a task that reports endpoints (dns, file)."""
    return discovery.type in ("dns", "file")


async def run_source(
    discovery: Discovery, report: ReportFn, resolver: Resolver | None = None
) -> None:
    """Run the dns or file source of ``discovery`` until cancelled.

    ``resolver`` replaces the one the config names (tests inject one).
    """
    if discovery.type == "dns":
        await run_dns_source(discovery, report, resolver or resolver_for(discovery))
    elif discovery.type == "file":
        await run_file_source(discovery, report)
    else:
        raise ValueError(f"discovery type {discovery.type!r} runs no source task")
