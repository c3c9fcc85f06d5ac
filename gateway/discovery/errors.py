"""Errors of endpoint discovery.

    GatewayError (gateway.errors)
    └── DiscoveryError
        ├── ResolutionFailed                 a DNS name did not resolve (NXDOMAIN, SERVFAIL,
        │                                    refused, timed out); the last good set stays
        ├── EndpointsFileError(ValueError)   an endpoints file is unreadable or malformed;
        │                                    the last good set stays
        └── RegistryError
            ├── NotRegistered                no registration for that address   -> 404
            └── NotARegistryCluster          the cluster's endpoints are not
                                             registered at runtime              -> 409

A source never raises these to its cluster actor: it reports them as ``DiscoveryFailed``
and they are counted in ``DiscoveryStats``. The registry errors answer the admin API.
"""

from __future__ import annotations

from gateway.errors import GatewayError


class DiscoveryError(GatewayError):
    """Root of the discovery errors."""


class ResolutionFailed(DiscoveryError):
    """A name did not resolve to any address; the message says why."""


class EndpointsFileError(DiscoveryError, ValueError):
    """An endpoints file that cannot be read or does not hold a valid endpoint list."""


class RegistryError(DiscoveryError):
    """A registry command that cannot be carried out."""


class NotRegistered(RegistryError):
    status_hint = 404


class NotARegistryCluster(RegistryError):
    status_hint = 409
