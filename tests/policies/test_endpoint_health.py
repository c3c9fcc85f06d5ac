"""The combined health view: every source's say, and Envoy's flag names."""

from __future__ import annotations

import pytest

from policies.breaker import BreakerState
from policies.endpoint_health import EndpointHealth, HealthFlag, Routing, endpoint_health
from policies.errors import InvalidSetting
from policies.health import HealthState


def test_a_plain_active_endpoint_is_healthy() -> None:
    health = endpoint_health("active")
    assert health == EndpointHealth(frozenset(), Routing.HEALTHY)
    assert health.in_host_set and health.healthy
    assert str(health) == "healthy"


def test_draining_and_disabled_are_excluded_whatever_else() -> None:
    for state, flag in [
        ("draining", HealthFlag.PENDING_DYNAMIC_REMOVAL),
        ("disabled", HealthFlag.FAILED_EDS_HEALTH),
    ]:
        health = endpoint_health(state, HealthState.HEALTHY)  # type: ignore[arg-type]
        assert health.routing is Routing.EXCLUDED and not health.in_host_set
        assert health.flags == {flag}


def test_failed_checks_ejection_and_an_open_breaker_make_it_unhealthy() -> None:
    health = endpoint_health(
        "active", HealthState.UNHEALTHY, ejected=True, breaker=BreakerState.OPEN
    )
    assert health.routing is Routing.UNHEALTHY
    assert health.in_host_set and not health.healthy
    assert str(health) == "/breaker_open/failed_active_hc/failed_outlier_check"
    assert endpoint_health("active", ejected=True).flags == {HealthFlag.FAILED_OUTLIER_CHECK}


def test_pending_checks_and_a_half_open_breaker_still_serve() -> None:
    health = endpoint_health("active", HealthState.UNKNOWN, breaker=BreakerState.HALF_OPEN)
    assert health.routing is Routing.HEALTHY
    assert str(health) == "/pending_active_hc"


def test_an_unknown_config_state_is_refused() -> None:
    with pytest.raises(InvalidSetting):
        endpoint_health("paused")  # type: ignore[arg-type]
