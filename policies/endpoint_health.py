"""One endpoint's health for the balancer, from everything that has a say in it.

Theory of operation
-------------------
Four sources judge an endpoint; each is owned elsewhere and read here at one instant:

    config state    ``active``, ``draining`` or ``disabled`` (the cluster's config or
                    the admin API)
    active checks   ``HealthState`` from ``policies.health`` (None: not checked)
    outlier         whether ``policies.outlier`` has it ejected
    breaker         its ``BreakerState`` from ``policies.breaker`` *at now*
                    (``state_at(now)``), None if it has no breaker

``endpoint_health`` folds them into an ``EndpointHealth``: the set of Envoy's health
flags that apply and one ``Routing`` verdict, which is what the cluster snapshot needs
to build a ``HostSet``:

    EXCLUDED   not in the host set: draining or disabled (takes no new request, not
               even in panic); Envoy's ``pending_dynamic_removal`` / ``failed_eds_health``
    UNHEALTHY  in the host set with ``healthy=False``: counts against its priority's
               health, and takes traffic only in panic. ``failed_active_hc`` (checks
               say unhealthy), ``failed_outlier_check`` (ejected), ``breaker_open``
    HEALTHY    in the host set, healthy. ``pending_active_hc`` (checked, no verdict
               yet) is informational: such an endpoint serves (``policies.health``)

The flags' names are the ones Envoy's admin ``/clusters`` prints, except
``breaker_open``: Envoy's breakers are thresholds, not per-endpoint states. A half-open
breaker is healthy, so that the balancer sends it the probes that can close it; an
open one becomes half-open at ``open_until``, when the snapshot must be rebuilt.
"""

from __future__ import annotations

import enum
from typing import Literal

import attrs

from policies.breaker import BreakerState
from policies.errors import InvalidSetting
from policies.health import HealthState

__all__ = ["ConfigState", "EndpointHealth", "HealthFlag", "Routing", "endpoint_health"]

#: the endpoint's state in the config (``gateway.config``'s ``EndpointState``)
ConfigState = Literal["active", "draining", "disabled"]


class HealthFlag(enum.Enum):
    """Why an endpoint is not plainly healthy (Envoy's names, plus ``breaker_open``)."""

    FAILED_ACTIVE_HC = "failed_active_hc"
    PENDING_ACTIVE_HC = "pending_active_hc"
    FAILED_OUTLIER_CHECK = "failed_outlier_check"
    #: disabled by the config or an operator
    FAILED_EDS_HEALTH = "failed_eds_health"
    #: draining: finishing its requests, taking no new ones
    PENDING_DYNAMIC_REMOVAL = "pending_dynamic_removal"
    BREAKER_OPEN = "breaker_open"


class Routing(enum.Enum):
    """What the balancer does with an endpoint."""

    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    EXCLUDED = "excluded"


_EXCLUDING = frozenset({HealthFlag.FAILED_EDS_HEALTH, HealthFlag.PENDING_DYNAMIC_REMOVAL})
_UNHEALTHY = frozenset(
    {HealthFlag.FAILED_ACTIVE_HC, HealthFlag.FAILED_OUTLIER_CHECK, HealthFlag.BREAKER_OPEN}
)


@attrs.frozen
class EndpointHealth:
    """An endpoint's flags and the verdict they add up to."""

    flags: frozenset[HealthFlag]
    routing: Routing

    @property
    def in_host_set(self) -> bool:
        """Whether the endpoint belongs in the balancer's ``HostSet``."""
        return self.routing is not Routing.EXCLUDED

    @property
    def healthy(self) -> bool:
        """The ``Host.healthy`` of an endpoint in the host set."""
        return self.routing is Routing.HEALTHY

    def __str__(self) -> str:
        """As Envoy's admin prints ``health_flags``: ``healthy`` or ``/flag/flag``."""
        if not self.flags:
            return "healthy"
        return "".join(f"/{flag.value}" for flag in sorted(self.flags, key=lambda f: f.value))


def endpoint_health(
    config_state: ConfigState,
    check: HealthState | None = None,
    ejected: bool = False,
    breaker: BreakerState | None = None,
) -> EndpointHealth:
    """Fold an endpoint's config state, active checks, ejection and breaker into one."""
    flags: set[HealthFlag] = set()
    if config_state == "disabled":
        flags.add(HealthFlag.FAILED_EDS_HEALTH)
    elif config_state == "draining":
        flags.add(HealthFlag.PENDING_DYNAMIC_REMOVAL)
    elif config_state != "active":
        raise InvalidSetting(
            "config_state", f"must be active, draining or disabled, not {config_state!r}"
        )
    if check is HealthState.UNHEALTHY:
        flags.add(HealthFlag.FAILED_ACTIVE_HC)
    elif check is HealthState.UNKNOWN:
        flags.add(HealthFlag.PENDING_ACTIVE_HC)
    if ejected:
        flags.add(HealthFlag.FAILED_OUTLIER_CHECK)
    if breaker is BreakerState.OPEN:
        flags.add(HealthFlag.BREAKER_OPEN)
    if flags & _EXCLUDING:
        routing = Routing.EXCLUDED
    elif flags & _UNHEALTHY:
        routing = Routing.UNHEALTHY
    else:
        routing = Routing.HEALTHY
    return EndpointHealth(frozenset(flags), routing)
