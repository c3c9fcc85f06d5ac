"""The fault table of a config version: grouping by listener, header tests, and what it
carries over from the version before (``first_n`` counts, the active count)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import Config, HeaderMatch, config_from_data
from gateway.faults.table import FaultTable
from gateway.routing import header_condition


def config_with(*faults: dict[str, Any], **extra: Any) -> Config:
    route = {"name": "main", "match": {"prefix": "/"}, "cluster": "a"}
    return config_from_data(
        {
            "listeners": [
                {"name": "web", "address": "127.0.0.1:0", "routes": [route]},
                {"name": "api", "address": "127.0.0.1:0", "routes": [route]},
                {"name": "raw", "address": "127.0.0.1:0", "protocol": "tcp", "cluster": "a"},
            ],
            "clusters": [{"name": "a", "endpoints": [{"address": "127.0.0.1:9"}]}],
            "faults": list(faults),
            **extra,
        }
    )


def test_no_faults_no_table() -> None:
    assert FaultTable.compile(config_with(), None) is None


def test_faults_are_grouped_by_listener_in_config_order() -> None:
    table = FaultTable.compile(
        config_with(
            {"name": "everywhere", "percent": 0, "abort": {"status": 503}},
            {"name": "web-only", "listener": "web", "abort": {"status": 503}},
        ),
        None,
    )
    assert table is not None
    assert {name: [f.name for f in faults] for name, faults in table.listeners.items()} == {
        "web": ["everywhere", "web-only"],
        "api": ["everywhere"],
    }  # a tcp listener has no HTTP requests to fault
    # the first that takes a request decides it, whether or not it then applies
    taken = table.taking("web", "main", "a", [])
    assert taken is not None and taken.name == "everywhere"


def test_first_n_counts_survive_other_changes_and_restart_when_replaced() -> None:
    fault = {"name": "f", "first_n": 3, "abort": {"status": 503}}
    first = FaultTable.compile(config_with(fault), None)
    assert first is not None
    first.counters["f"].injected = 2
    first.active.count = 1
    other_change = FaultTable.compile(config_with(fault, max_active_faults=5), first)
    assert other_change is not None
    assert other_change.counters["f"].injected == 2
    assert (other_change.active, other_change.max_active) == (first.active, 5)
    replaced = FaultTable.compile(config_with({**fault, "first_n": 4}), other_change)
    assert replaced is not None and replaced.counters["f"].injected == 0


HEADERS = [(b"X-User", b"test"), (b"x-tag", b"a"), (b"X-Tag", b"b")]

HEADER_TESTS: list[tuple[dict[str, Any], bool]] = [
    ({"name": "x-user", "exact": "test"}, True),
    ({"name": "X-USER", "exact": "Test"}, False),  # names in any case, values exact
    ({"name": "x-user", "prefix": "te"}, True),
    ({"name": "x-user", "regex": "t.s"}, False),  # a full match
    ({"name": "x-user", "regex": "t.st"}, True),
    ({"name": "x-tag", "exact": "a,b"}, True),  # repeated fields joined by commas
    ({"name": "x-user", "present": True}, True),
    ({"name": "x-none", "present": True}, False),
    ({"name": "x-none", "absent": True}, True),
    ({"name": "x-user", "absent": True}, False),
    ({"name": "x-none", "exact": "1"}, False),
    ({"name": "x-none", "exact": "1", "invert": True}, True),
    ({"name": "x-user", "exact": "test", "invert": True}, False),
]


@pytest.mark.parametrize(("spec", "passes"), HEADER_TESTS)
def test_header_tests(spec: dict[str, Any], passes: bool) -> None:
    assert header_condition(HeaderMatch(**spec)).accepts(HEADERS) is passes


def test_scope_by_route_and_cluster() -> None:
    table = FaultTable.compile(
        config_with(
            {"name": "r", "listener": "web", "route": "main", "cluster": "a", "delay": {"fixed": 1}}
        ),
        None,
    )
    assert table is not None
    assert table.taking("web", "main", "a", []) is not None
    assert table.taking("web", "other", "a", []) is None
    assert table.taking("web", "main", "b", []) is None
    assert table.taking("api", "main", "a", []) is None
