"""The state changes worth telling an operator about, kept in memory and logged.

Theory of operation: an ``EventLog`` belongs to the control side (one per control
plane). Actors that change an endpoint's state (cluster actors, on a health verdict)
call ``record``: a plain append to a bounded deque, no waiting, so an actor never
blocks on it. The newest ``capacity`` events are kept (older ones fall off), and each
is also written as one JSON line to the ``triogate.events`` logger. The admin API reads
them with ``recent``, newest last.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from typing import Any

import attrs

__all__ = ["EVENTS_KEPT", "Event", "EventLog"]

log = logging.getLogger("triogate.events")

#: events kept in memory
EVENTS_KEPT = 1000


@attrs.frozen
class Event:
    """One endpoint's state went from ``old`` to ``new`` at ``at`` (Unix time)."""

    at: float
    cluster: str
    endpoint: str
    #: what changed: ``health`` (active checks), ``ejection`` (outlier detection),
    #: ``breaker`` (a cluster's classic breaker: endpoint ``*``)
    kind: str
    old: str
    new: str
    reason: str
    #: an ejection: when it ends (Unix time); None for every other change
    until: float | None = None

    def as_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


class EventLog:
    """The newest events, bounded; see the module docstring."""

    def __init__(self, capacity: int = EVENTS_KEPT) -> None:
        self._events: deque[Event] = deque(maxlen=capacity)

    def record(
        self,
        cluster: str,
        endpoint: str,
        kind: str,
        old: str,
        new: str,
        reason: str,
        until: float | None = None,
    ) -> Event:
        """Keep one event (stamped now) and log it as a JSON line."""
        event = Event(time.time(), cluster, endpoint, kind, old, new, reason, until)
        self._events.append(event)
        log.info("%s", json.dumps(event.as_json()))
        return event

    def recent(self, cluster: str | None = None, limit: int = 100) -> list[Event]:
        """The newest ``limit`` events (of ``cluster``, when given), newest last."""
        if limit <= 0:
            return []
        picked: list[Event] = []
        for event in reversed(self._events):
            if cluster is None or event.cluster == cluster:
                picked.append(event)
                if len(picked) == limit:
                    break
        picked.reverse()
        return picked

    def __len__(self) -> int:
        return len(self._events)
