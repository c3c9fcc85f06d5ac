"""What a discovery source tells its cluster actor, and what the actor counts.

Messages are past-tense events, frozen, carrying the ``Discovery`` config of the source
that sent them: after a reconfiguration the actor ignores reports still queued from the
source it replaced.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs

from gateway.config import Discovery, Endpoint


@attrs.frozen
class EndpointsDiscovered:
    """A source found this set of endpoints (non-empty for dns; as written for file)."""

    endpoints: tuple[Endpoint, ...]
    source: Discovery


@attrs.frozen
class DiscoveryFailed:
    """A source could not get a set; the cluster keeps its last good one."""

    reason: str
    source: Discovery


DiscoveryReport = EndpointsDiscovered | DiscoveryFailed
#: how a source hands a report to its actor (the actor inbox's ``send``)
ReportFn = Callable[[DiscoveryReport], Awaitable[None]]


@attrs.frozen
class DiscoveryStats:
    """A cluster's discovery counters, published by its actor as one immutable value."""

    #: ``static``, ``dns``, ``file`` or ``registry``
    source: str = "static"
    #: answers accepted (dns resolutions, file reads; registry: registrations)
    resolutions: int = 0
    #: answers refused: failed resolutions, empty answers, malformed or missing files
    failures: int = 0
    #: times the set of endpoints changed
    changes: int = 0
    #: registry: registrations removed because their TTL ran out
    expirations: int = 0
    #: why the last failure happened
    last_error: str | None = None
    #: wall-clock (Unix) times of the last accepted answer and of the last failure
    last_success: float | None = None
    last_failure: float | None = None
