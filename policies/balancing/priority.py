"""How load spills across priority levels, and when a level panics: Envoy's math.

Theory of operation: hosts sit in priority levels, 0 preferred. Each level has a
*health*, in percent: its healthy share scaled by the overprovisioning factor (1.4 by
default) and capped at 100, in integer arithmetic as Envoy computes it::

    health[p] = min(100, overprovisioning_percent * healthy[p] // total[p])

so a level at 72% healthy still has health 100 and keeps all of its load, and at 71%
it has 99. Load, in whole percents summing to 100, goes to the levels in order, each
taking its health's share of the *normalized total availability*
``min(100, sum(health))`` until the 100 is used up; rounding leftovers go to the first
level with any health. With two levels and P1 fully healthy, P0 at 72/71/50/25%
healthy gives 100/0, 99/1, 70/30, 35/65.

A level is in *panic* when its raw healthy percentage is below the panic threshold
(50% by default): it then balances across all its hosts, healthy or not, because
sending everything to a few survivors would only knock them over too. No level panics
while the total availability is 100 (the levels below can absorb the load). When every
level panics, load is shared by host count instead ("total panic"). With the threshold
at 0 (panic disabled) and no healthy host anywhere, all load goes to the first level and
nothing can be picked.

There is no degraded state here (Envoy's third health state): hosts are healthy or not.
Levels with no hosts are not represented; an empty Envoy level has health 0 and is
always "in panic", so dropping it changes no load and no panic flag.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

__all__ = ["LevelCounts", "PriorityPlan", "level_health", "level_in_panic", "plan_priorities"]


@attrs.frozen
class LevelCounts:
    """How many hosts a priority level has, and how many of them are healthy."""

    healthy: int
    total: int


@attrs.frozen
class PriorityPlan:
    """Per level (in priority order): its health, its share of the load, its panic flag."""

    health: tuple[int, ...]
    #: whole percents; sum to 100 when there is at least one level
    loads: tuple[int, ...]
    panic: tuple[bool, ...]

    @property
    def total_panic(self) -> bool:
        """Every level is in panic: load follows host counts, not health."""
        return bool(self.panic) and all(self.panic)


def level_health(counts: LevelCounts, overprovisioning_percent: int) -> int:
    """A level's health in percent: its healthy share times the factor, capped at 100."""
    if counts.total == 0:
        return 0
    return min(100, overprovisioning_percent * counts.healthy // counts.total)


def level_in_panic(counts: LevelCounts, panic_threshold: float) -> bool:
    """Whether the level's raw healthy percentage is below the panic threshold."""
    healthy_percent = 100.0 * counts.healthy / counts.total if counts.total else 0.0
    return healthy_percent < panic_threshold


def _distribute(health: Sequence[int], total_availability: int) -> list[int]:
    loads = []
    remaining = 100
    first_available = -1
    for i, h in enumerate(health):
        if first_available < 0 and h > 0:
            first_available = i
        load = min(remaining, h * 100 // total_availability)
        loads.append(load)
        remaining -= load
    if remaining:
        loads[first_available] += remaining
    return loads


def _by_host_count(levels: Sequence[LevelCounts]) -> list[int]:
    total = sum(c.total for c in levels)
    loads = [100 * c.total // total for c in levels]
    first_nonempty = next(i for i, c in enumerate(levels) if c.total)
    loads[first_nonempty] += 100 - sum(loads)
    return loads


def plan_priorities(
    levels: Sequence[LevelCounts],
    *,
    overprovisioning_percent: int = 140,
    panic_threshold: float = 50.0,
) -> PriorityPlan:
    """Envoy's per-priority load and panic flags for ``levels`` (priority order)."""
    if not levels:
        return PriorityPlan((), (), ())
    health = tuple(level_health(c, overprovisioning_percent) for c in levels)
    total_availability = min(100, sum(health))
    if total_availability == 0 and panic_threshold == 0:
        loads = [0] * len(levels)
        loads[0] = 100
        return PriorityPlan(health, tuple(loads), (False,) * len(levels))
    if total_availability == 100:
        panic = (False,) * len(levels)
    else:
        panic = tuple(level_in_panic(c, panic_threshold) for c in levels)
    if all(panic) or total_availability == 0:
        # The second case needs a tiny threshold: a level keeps a host or two healthy,
        # too few to register as health (140 * 1 // 200 == 0), yet is not in panic.
        # Envoy computes no loads there; the total-panic rule is the safe reading.
        return PriorityPlan(health, tuple(_by_host_count(levels)), panic)
    return PriorityPlan(health, tuple(_distribute(health, total_availability)), panic)
