"""Hosts and the immutable host set a balancer is built from.

Theory of operation: a cluster actor owns its endpoints and, after every change,
publishes a ``HostSet``: an immutable snapshot of the hosts that may take new
requests. Draining, disabled and removed endpoints are not in it (the data path filters
them); unhealthy hosts are, with ``healthy=False``, because the balancer needs them to
compute each priority's health and to balance across them in panic.

A ``HostSet`` does the grouping every balancer needs once, on construction: hosts by
priority (0 first), and within a priority by locality, each with its healthy subset.
Everything is sorted by key, so two host sets holding the same hosts are equal and
balance identically whatever order the hosts arrived in.

Invariants:

- host keys are unique within a set;
- a host of weight 0 takes no traffic: it stays in ``hosts`` (for stats and the admin
  API) but belongs to no priority level, so it counts toward no level's health;
- every ``PriorityLevel`` holds at least one host, every ``LocalityGroup`` too.

``ready_at`` is an instant on the caller's clock (the same clock that later passes
``now`` to ``pick``): when the host was added or last became healthy. Slow start ramps
its weight up from there.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator

import attrs

from policies.errors import PolicyError

__all__ = ["Host", "HostError", "HostSet", "LocalityGroup", "PriorityLevel"]


class HostError(PolicyError, ValueError):
    """A host, or a set of hosts, that breaks the rules (negative weight, duplicate key)."""


@attrs.frozen
class Host:
    """One upstream endpoint as the balancer sees it."""

    #: unique within a cluster, e.g. ``"127.0.0.1:9001"``; ring hash and Maglev hash it
    key: str
    #: relative share of traffic; 0 takes none
    weight: int
    #: 0 is preferred; higher levels take load only as lower ones lose health
    priority: int = 0
    locality: str = ""
    healthy: bool = True
    #: when the host was added or last became healthy (caller's clock), for slow start
    ready_at: float = 0.0

    def __attrs_post_init__(self) -> None:
        if not self.key:
            raise HostError("host key must not be empty")
        if self.weight < 0:
            raise HostError(f"host {self.key}: weight must be >= 0, got {self.weight}")
        if self.priority < 0:
            raise HostError(f"host {self.key}: priority must be >= 0, got {self.priority}")
        if not math.isfinite(self.ready_at):
            raise HostError(f"host {self.key}: ready_at must be finite")


@attrs.frozen
class LocalityGroup:
    """The hosts of one locality within one priority level."""

    locality: str
    #: every host of the locality at this level, by key
    hosts: tuple[Host, ...]
    #: the healthy ones among them, by key
    healthy: tuple[Host, ...]
    #: sum of ``hosts``' weights: the locality's capacity before health is applied
    weight: int


@attrs.frozen
class PriorityLevel:
    """The hosts of one priority, grouped by locality."""

    priority: int
    #: every host at this priority, by key
    hosts: tuple[Host, ...]
    #: the healthy ones among them, by key
    healthy: tuple[Host, ...]
    #: by locality name
    localities: tuple[LocalityGroup, ...]


def _sorted_hosts(hosts: Iterable[Host]) -> tuple[Host, ...]:
    ordered = tuple(sorted(hosts, key=lambda h: h.key))
    for a, b in itertools.pairwise(ordered):
        if a.key == b.key:
            raise HostError(f"duplicate host key {a.key!r}")
    return ordered


def _group_levels(hosts: tuple[Host, ...]) -> tuple[PriorityLevel, ...]:
    by_priority: dict[int, dict[str, list[Host]]] = {}
    for h in hosts:
        if h.weight > 0:
            by_priority.setdefault(h.priority, {}).setdefault(h.locality, []).append(h)
    levels = []
    for priority in sorted(by_priority):
        groups = by_priority[priority]
        localities = tuple(
            LocalityGroup(
                locality=name,
                hosts=tuple(members),
                healthy=tuple(h for h in members if h.healthy),
                weight=sum(h.weight for h in members),
            )
            for name, members in sorted(groups.items())
        )
        level_hosts = tuple(sorted((h for g in localities for h in g.hosts), key=lambda h: h.key))
        levels.append(
            PriorityLevel(
                priority=priority,
                hosts=level_hosts,
                healthy=tuple(h for h in level_hosts if h.healthy),
                localities=localities,
            )
        )
    return tuple(levels)


@attrs.frozen
class HostSet:
    """An immutable snapshot of a cluster's hosts, grouped for picking."""

    #: every host, sorted by key
    hosts: tuple[Host, ...] = attrs.field(converter=_sorted_hosts)
    #: the levels that hold at least one host of positive weight, by priority
    levels: tuple[PriorityLevel, ...] = attrs.field(init=False, eq=False, repr=False)
    _by_key: dict[str, Host] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        # The derived fields are a pure function of ``hosts``; frozen attrs allows
        # setting them only through object.__setattr__.
        object.__setattr__(self, "levels", _group_levels(self.hosts))
        object.__setattr__(self, "_by_key", {h.key: h for h in self.hosts})

    def __len__(self) -> int:
        return len(self.hosts)

    def __iter__(self) -> Iterator[Host]:
        return iter(self.hosts)

    def get(self, key: str) -> Host | None:
        """The host with ``key``, or None."""
        return self._by_key.get(key)
