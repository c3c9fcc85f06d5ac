"""Every resilience config as the config model will carry it: plain data both ways, and
every field's error naming that field."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config.structure import structure, unstructure
from policies import settings
from policies.backoff import BackoffConfig
from policies.breaker import BreakerConfig
from policies.errors import InvalidSetting
from policies.health import HealthCheckConfig
from policies.limits import CircuitBreakerThresholds, RetryBudget
from policies.outlier import OutlierConfig
from tests.strategies import (
    backoff_configs,
    breaker_configs,
    health_check_configs,
    outlier_configs,
    retry_budgets,
    thresholds,
)

any_config = st.one_of(
    breaker_configs(),
    outlier_configs(),
    health_check_configs(),
    retry_budgets,
    thresholds,
    backoff_configs(),
)

CLASSES: list[type[Any]] = [
    BreakerConfig,
    OutlierConfig,
    HealthCheckConfig,
    RetryBudget,
    CircuitBreakerThresholds,
    BackoffConfig,
]


@given(config=any_config)
def test_every_valid_config_round_trips_through_plain_data(config: Any) -> None:
    data = unstructure(config)
    assert structure(type(config), data) == config
    assert settings.problems(type(config), attrs.asdict(config, recurse=False)) == []


@pytest.mark.parametrize(
    ("cls", "field"),
    [(cls, field.name) for cls in CLASSES for field in attrs.fields(cls) if field.init],
)
def test_every_field_refuses_a_value_of_the_wrong_kind_by_name(cls: type[Any], field: str) -> None:
    # -1 is out of range for every number here, and of the wrong type for the rest
    with pytest.raises(InvalidSetting) as caught:
        cls(**{field: -1})
    assert caught.value.field == field
    assert [p.field for p in settings.problems(cls, {field: -1})] == [field]
