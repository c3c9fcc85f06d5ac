"""Weighted traffic split: which of a route's clusters one request goes to.

Theory of operation
-------------------
A split is a list of ``(cluster, weight)`` with integer weights; a cluster of weight 0
takes nothing and is left out when the split is built, and at least one weight must be
positive. A request's cluster is drawn with probability ``weight / total``, independently
of every other request (Envoy's ``weighted_clusters``): one uniform draw ``point`` in
``[0, total)`` from the injected ``rng``, then a binary search of the running sums of the
weights. Cluster ``i`` owns the interval ``[sum of weights before it, that sum plus its
weight)``, so ``bisect_right`` finds it (a draw equal to a running sum belongs to the next
cluster). A split of one cluster draws nothing.

Pure and synchronous: no clock, no I/O; the only randomness is ``rng.random()``, one call
per pick of a split of two clusters or more.
"""

from __future__ import annotations

import itertools
import random
from bisect import bisect_right
from collections.abc import Iterable

import attrs

from policies.errors import PolicyError


class EmptySplit(PolicyError, ValueError):
    """A split without a cluster of positive weight."""


@attrs.frozen
class WeightedSplit:
    """Clusters and the running sums of their (positive) weights."""

    clusters: tuple[str, ...]
    cumulative: tuple[int, ...]

    @classmethod
    def of(cls, weights: Iterable[tuple[str, int]]) -> WeightedSplit:
        """The split of ``(cluster, weight)`` pairs; weights of 0 or less take nothing."""
        live = [(cluster, weight) for cluster, weight in weights if weight > 0]
        if not live:
            raise EmptySplit("a split needs a cluster of positive weight")
        return cls(
            tuple(cluster for cluster, _ in live),
            tuple(itertools.accumulate(weight for _, weight in live)),
        )

    @classmethod
    def single(cls, cluster: str) -> WeightedSplit:
        """Every request to ``cluster``."""
        return cls((cluster,), (1,))

    def pick(self, rng: random.Random) -> str:
        """The cluster for one request."""
        clusters = self.clusters
        if len(clusters) == 1:
            return clusters[0]
        cumulative = self.cumulative
        return clusters[bisect_right(cumulative, rng.random() * cumulative[-1])]
