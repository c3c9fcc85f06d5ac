"""The control side's event log: bounded, filtered by cluster, newest last, logged."""

from __future__ import annotations

import json
import logging

import pytest

from gateway.observe.events import EventLog


def test_the_log_keeps_the_newest_and_filters_by_cluster() -> None:
    events = EventLog(capacity=5)
    for i in range(8):
        events.record("api" if i % 2 else "web", f"127.0.0.1:{9000 + i}", "health", "a", "b", "")
    assert len(events) == 5
    assert [e.endpoint for e in events.recent()] == [f"127.0.0.1:{9000 + i}" for i in range(3, 8)]
    assert [e.endpoint for e in events.recent("api")] == [
        "127.0.0.1:9003",
        "127.0.0.1:9005",
        "127.0.0.1:9007",
    ]
    assert [e.endpoint for e in events.recent("api", limit=1)] == ["127.0.0.1:9007"]
    assert events.recent("nope") == [] and events.recent(limit=0) == []


def test_each_event_is_one_json_line_on_the_events_logger(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events = EventLog()
    with caplog.at_level(logging.INFO, logger="triogate.events"):
        event = events.record("api", "127.0.0.1:9001", "health", "healthy", "unhealthy", "timeout")
    [record] = [r for r in caplog.records if r.name == "triogate.events"]
    assert json.loads(record.getMessage()) == event.as_json()
    assert event.as_json()["reason"] == "timeout" and event.at > 0
