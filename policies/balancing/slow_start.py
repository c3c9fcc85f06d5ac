"""Slow start: a newly ready host's weight ramps up over a window.

Theory of operation: a host that was just added, or just became healthy again, has
cold caches and connection pools; sending it its full share at once is how a recovering
host falls over again. For ``window`` seconds after its ``ready_at`` its weight is
scaled by a factor that grows linearly from ``floor`` percent to 100 percent, as
Envoy's slow start does with aggression 1.0.

The factor is a whole percent: the last 1% step of the line reached, never below the
floor (a staircase under the line, one step per 1% of the window). That keeps the
balancers' weights integers (so smooth round robin stays exact) and lets a balancer
rebuild its pickers only when some host's percent changes (at most 100 times per window
per host) rather than on every pick.

``now`` and ``ready_at`` are instants on the caller's clock, in seconds. The factor is
non-decreasing in ``now`` and is exactly 100 from ``ready_at + window`` on.
"""

from __future__ import annotations

import math

__all__ = ["next_slow_start_change", "slow_start_percent"]


def _boundary(ready_at: float, window: float, percent: int) -> float:
    """The instant the ramp reaches ``percent``; exactly ``ready_at + window`` at 100."""
    return ready_at + window * (percent / 100)


def _reached(now: float, ready_at: float, window: float) -> int:
    """The largest percent whose boundary is at or before ``now`` (0 if none)."""
    if now >= ready_at + window:
        return 100
    # Estimate, then settle against the boundaries themselves, so that the percent and
    # the instants at which it changes agree to the last bit of rounding.
    percent = min(max(int(100 * (now - ready_at) / window), 0), 99)
    while percent < 100 and _boundary(ready_at, window, percent + 1) <= now:
        percent += 1
    while percent > 0 and _boundary(ready_at, window, percent) > now:
        percent -= 1
    return percent


def slow_start_percent(now: float, ready_at: float, window: float, floor: int) -> int:
    """The percent of its weight a host ready since ``ready_at`` gets at ``now``."""
    if window <= 0:
        return 100
    return max(floor, _reached(now, ready_at, window))


def next_slow_start_change(now: float, ready_at: float, window: float, floor: int) -> float:
    """The earliest instant after ``now`` at which the percent changes (inf if never)."""
    percent = slow_start_percent(now, ready_at, window, floor)
    if percent >= 100:
        return math.inf
    return _boundary(ready_at, window, percent + 1)
