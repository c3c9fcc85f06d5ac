"""The config file: every error reported by path, in one pass; valid files load."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given

from gateway.config import (
    Address,
    Cluster,
    Config,
    config_from_text,
    json_schema,
    structure,
    unstructure,
)
from gateway.errors import ConfigError
from policies.health import HealthCheckConfig
from tests.strategies import health_check_configs

EXAMPLE = """
admin: {address: 127.0.0.1:9901}
listeners:
  - name: web
    address: 127.0.0.1:8080
    protocol: http
    routes:
      - match: {prefix: /api}
        cluster: api
      - match: {prefix: /}
        cluster: web
clusters:
  - name: api
    endpoints:
      - {address: 127.0.0.1:9001}
      - {address: 127.0.0.1:9002}
  - name: web
    endpoints: [{address: 127.0.0.1:9003}]
"""


def issues_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_from_text(text)
    return [str(i) for i in info.value.issues]


def test_the_issue_example_loads() -> None:
    config = config_from_text(EXAMPLE)
    assert [c.name for c in config.clusters] == ["api", "web"]
    assert config.clusters[0].endpoints[1].address == Address("127.0.0.1", 9002)
    assert config.listeners[0].routes[0].timeout == 15.0
    assert config.admin.address.port == 9901


def test_every_error_is_reported_by_path() -> None:
    bad = (
        EXAMPLE.replace("127.0.0.1:9002", "127.0.0.1:99999")
        .replace("cluster: web\n", "cluster: nowhere\n")
        .replace(
            "{address: 127.0.0.1:9003}", "{address: 127.0.0.1:9003, weight: heavy, colour: red}"
        )
    )
    assert issues_of(bad) == [
        "clusters[0].endpoints[1].address: port must be 1-65535",
        "clusters[1].endpoints[0].colour: unknown field",
        "clusters[1].endpoints[0].weight: must be integer, not 'heavy'",
        "listeners[0].routes[1].cluster: unknown cluster 'nowhere' (the clusters: api, web)",
    ]


@pytest.mark.parametrize(
    ("fragment", "replacement", "expected"),
    [
        (
            "{prefix: /api}",
            "{prefix: api}",
            "listeners[0].routes[0].match.prefix: must start with '/'",
        ),
        (
            "{prefix: /api}",
            "{}",
            "listeners[0].routes[0].match: needs exactly one of 'prefix', 'path' or 'regex'",
        ),
        (
            "protocol: http",
            "protocol: gopher",
            "listeners[0].protocol: must be one of 'http', 'tcp', 'udp', not 'gopher'",
        ),
        (
            "address: 127.0.0.1:8080",
            "address: nowhere",
            "listeners[0].address: must be 'host:port'",
        ),
        ("- name: api", "- name: web", "clusters: cluster 'web' defined twice"),
        (
            "{address: 127.0.0.1:9002}",
            "{address: 127.0.0.1:9001}",
            "clusters[0].endpoints: endpoint 127.0.0.1:9001 listed twice",
        ),
        (
            "address: 127.0.0.1:8080",
            "address: 127.0.0.1:9901",
            "listeners: address 127.0.0.1:9901 is used twice",
        ),
        (
            "    endpoints: [{address: 127.0.0.1:9003}]",
            "    endpoints: {address: 127.0.0.1:9003}",
            "clusters[1].endpoints: must be a list, not dict",
        ),
    ],
)
def test_single_errors(fragment: str, replacement: str, expected: str) -> None:
    assert fragment in EXAMPLE
    assert expected in issues_of(EXAMPLE.replace(fragment, replacement, 1))


def test_split_weights_must_have_a_positive_sum() -> None:
    text = EXAMPLE.replace(
        "        cluster: api\n",
        "        split: [{cluster: api, weight: 0}, {cluster: web, weight: -1}]\n",
    )
    assert issues_of(text) == [
        "listeners[0].routes[0].split[1].weight: must be >= 0",
        "listeners[0].routes[0].split: weights must have a positive sum",
    ]


def test_yaml_syntax_error_names_line() -> None:
    [issue] = issues_of("listeners: [\n  {name: web\n")
    assert "not valid YAML" in issue and ":3:" in issue


def test_unstructure_round_trips() -> None:
    config = config_from_text(EXAMPLE)
    assert structure(Config, unstructure(config)) == config


def test_json_schema_covers_the_model() -> None:
    defs: dict[str, object] = {}
    ref = json_schema(Config, defs)
    assert ref == {"$ref": "#/components/schemas/Config"}
    endpoint = defs["Endpoint"]
    assert isinstance(endpoint, dict)
    assert endpoint["required"] == ["address"]
    assert endpoint["properties"]["state"] == {"enum": ["active", "draining", "disabled"]}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "triogate.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_validate_command(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(EXAMPLE)
    ok = run_cli("validate", str(good))
    assert ok.returncode == 0, ok.stderr
    assert "ok (1 listener(s), 2 cluster(s))" in ok.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.replace("127.0.0.1:9002", "127.0.0.1:70000"))
    failed = run_cli("validate", str(bad))
    assert failed.returncode == 2
    assert "clusters[0].endpoints[1].address: port must be 1-65535" in failed.stderr


def test_run_refuses_a_bad_file_without_starting(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.replace("cluster: web\n", "cluster: gone\n"))
    failed = run_cli("run", "--no-state", str(bad))
    assert failed.returncode == 2
    assert "listeners[0].routes[1].cluster: unknown cluster 'gone'" in failed.stderr
    assert "listener web" not in failed.stdout


@given(health_check=health_check_configs())
def test_a_health_check_round_trips_through_json(health_check: HealthCheckConfig) -> None:
    # as the state file and the admin API carry it
    config = Config(clusters=(Cluster("api", endpoints=(), health_check=health_check),), version=1)
    assert structure(Config, json.loads(json.dumps(unstructure(config)))) == config


def test_health_check_errors_name_the_field() -> None:
    data = {"clusters": [{"name": "api", "health_check": {"type": "tcp", "expect": "hex:zz"}}]}
    with pytest.raises(ConfigError) as caught:
        structure(Config, data)
    assert [i.path for i in caught.value.issues] == ["clusters[0].health_check.expect"]
