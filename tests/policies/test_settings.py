"""The configs are ready for the config model: structured from plain data, errors by field.

``gateway.config.structure`` builds attrs classes from YAML data and reports a model's
own ``ValueError`` at the object's path; ``InvalidSetting`` also names the field, and
``problems`` lists every bad field of one object, not only the first.
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config.structure import json_schema, structure, unstructure
from gateway.errors import ConfigError
from policies import settings
from policies.backoff import BackoffConfig
from policies.breaker import BreakerConfig
from policies.errors import InvalidSetting
from policies.health import HealthCheckConfig
from policies.limits import CircuitBreakerThresholds, RetryBudget
from policies.outlier import OutlierConfig

CONFIGS: list[type[Any]] = [
    BreakerConfig,
    CircuitBreakerThresholds,
    RetryBudget,
    OutlierConfig,
    HealthCheckConfig,
    BackoffConfig,
]


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_defaults_round_trip_through_plain_data(cls: type[Any]) -> None:
    default = cls()
    assert structure(cls, unstructure(default)) == default
    assert structure(cls, {}) == default
    schema = json_schema(cls, defs := {})
    assert schema == {"$ref": f"#/components/schemas/{cls.__name__}"}
    assert set(defs[cls.__name__]["properties"]) == {f.name for f in cls.__attrs_attrs__ if f.init}


def test_yaml_shaped_data_builds_every_config() -> None:
    assert structure(
        HealthCheckConfig,
        {"type": "tcp", "send": "hex:50494e47", "expect": "PONG", "interval": 2},
    ) == HealthCheckConfig(type="tcp", send="hex:50494e47", expect="PONG", interval=2.0)
    assert structure(HealthCheckConfig, {"expected_statuses": [[200, 299], [304, 304]]}) == (
        HealthCheckConfig(expected_statuses=((200, 299), (304, 304)))
    )
    assert structure(BreakerConfig, {"failure_statuses": [500, 503]}) == BreakerConfig(
        failure_statuses=(500, 503)
    )
    assert structure(
        CircuitBreakerThresholds, {"retry_budget": {"budget_percent": 25}}
    ) == CircuitBreakerThresholds(retry_budget=RetryBudget(25.0, 3))


def test_a_range_error_comes_out_at_the_config_objects_path_naming_the_field() -> None:
    with pytest.raises(ConfigError) as caught:
        structure(BreakerConfig, {"window": 0}, path="clusters[0].breaker")
    [issue] = caught.value.issues
    assert str(issue) == "clusters[0].breaker.window: must be a number > 0, not 0.0"
    with pytest.raises(ConfigError) as caught:
        structure(
            CircuitBreakerThresholds,
            {"retry_budget": {"budget_percent": 200}},
            path="clusters[1].circuit_breakers",
        )
    [issue] = caught.value.issues
    assert issue.path == "clusters[1].circuit_breakers.retry_budget.budget_percent"
    assert issue.message.startswith("must be")


def test_the_error_carries_the_field_for_a_path_per_field() -> None:
    with pytest.raises(InvalidSetting) as caught:
        OutlierConfig(interval=-1)
    error = caught.value
    assert (error.field, error.reason) == ("interval", "must be a number > 0, not -1")
    assert isinstance(error, ValueError)


def test_problems_lists_every_bad_field_then_the_cross_field_rules() -> None:
    found = settings.problems(BreakerConfig, {"window": 0, "open_time": -1, "bogus_free": None})
    assert [p.field for p in found] == ["window", "open_time"]
    found = settings.problems(BreakerConfig, {"open_time": 100})
    assert [p.field for p in found] == ["max_open_time"]
    assert settings.problems(HealthCheckConfig, {"expected_statuses": [[200, 299]]}) == []
    assert settings.problems(BreakerConfig, {"unknown": 1}) == []  # the loader's to report
    found = settings.problems(HealthCheckConfig, {"type": "http", "send": "x", "timeout": 0})
    assert [p.field for p in found] == ["timeout"]  # cross-field rules wait for the fields


def test_booleans_are_not_numbers() -> None:
    with pytest.raises(InvalidSetting):
        BreakerConfig(minimum_requests=True)
    with pytest.raises(InvalidSetting):
        OutlierConfig(interval=True)
