"""Latency histograms as fixed bucket arrays, with Envoy's default bucket bounds.

Theory of operation: a histogram is a list of counts, one per bucket, plus the sum of
the recorded values. Bucket ``i`` counts values ``v`` with ``BOUNDS_MS[i-1] < v <=
BOUNDS_MS[i]`` (Prometheus's ``le`` rule); the last bucket counts everything above the
last bound. Recording is one ``bisect`` and two additions, so the data path can afford
it per request. Quantiles are estimated from the counts alone (linear interpolation
inside the bucket the rank falls in, as Prometheus's ``histogram_quantile`` does), so
they can be computed for any interval: since start from the counts, over a recent
window from the difference of two snapshots of the counts.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

#: Envoy's default histogram bucket bounds (``supported_buckets``), in milliseconds
BOUNDS_MS: tuple[float, ...] = (
    0.5,
    1.0,
    5.0,
    10.0,
    25.0,
    50.0,
    100.0,
    250.0,
    500.0,
    1000.0,
    2500.0,
    5000.0,
    10000.0,
    30000.0,
    60000.0,
    300000.0,
    600000.0,
    1800000.0,
    3600000.0,
)  # floats: bisect compares float with float, twice as fast as float with int
#: one bucket per bound, plus the overflow bucket
BUCKETS = len(BOUNDS_MS) + 1
#: the quantiles reported everywhere (admin API, dashboard)
QUANTILES: tuple[tuple[str, float], ...] = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))


class Histogram:
    """Counts per bucket and the sum of the values recorded (milliseconds)."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * BUCKETS
        self.sum = 0.0

    def record(self, ms: float) -> None:
        self.counts[bisect_left(BOUNDS_MS, ms)] += 1
        self.sum += ms

    @property
    def count(self) -> int:
        return sum(self.counts)

    def snapshot(self) -> tuple[int, ...]:
        return tuple(self.counts)

    def reset(self) -> None:
        counts = self.counts
        for i in range(BUCKETS):
            counts[i] = 0
        self.sum = 0.0


def quantile(counts: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile (0-1) estimated from bucket counts; None when nothing was counted.

    A rank in the overflow bucket reports the last bound: beyond it nothing is known.
    """
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        if n <= 0:
            continue
        if seen + n >= rank:
            if i >= len(BOUNDS_MS):
                return float(BOUNDS_MS[-1])
            lower = BOUNDS_MS[i - 1] if i else 0.0
            upper = BOUNDS_MS[i]
            return lower + (upper - lower) * max(rank - seen, 0.0) / n
        seen += n
    return float(BOUNDS_MS[-1])  # pragma: no cover - the loop always reaches the rank


def quantiles(counts: Sequence[int]) -> dict[str, float | None]:
    """p50, p90 and p99 of ``counts``."""
    return {name: quantile(counts, q) for name, q in QUANTILES}


def difference(now: Sequence[int], before: Sequence[int]) -> list[int]:
    """Counts recorded between two snapshots (a reset in between gives ``now`` itself)."""
    delta = [a - b for a, b in zip(now, before, strict=True)]
    return list(now) if any(d < 0 for d in delta) else delta
