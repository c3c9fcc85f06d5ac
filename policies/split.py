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

Sticky splits (``pick_at``): a request with a key (a user id from a header or cookie)
is not drawn at random but placed at ``key_point(key)``, a stable hash of the key in
``[0, 1)``, and goes to the cluster whose interval holds ``point * total``. The same key
always lands on the same cluster while the weights stay, and over a population of keys
(uniform points) the shares are the weights. The clusters are laid out in a stable
order, by name (never the order a split was written in, which an API client may not
keep), so what a weight change moves is exactly the points between a boundary's old
and new place: from 90/10 to 80/20 the boundary goes from 0.9 to 0.8 and the keys in
``[0.8, 0.9)``, 10% of them, move; nobody else does. With two clusters that is the
least any assignment can move. With three or more, a change between clusters that are
neighbours in the order is minimal too; a change across others also shifts the
intervals in between (``tests/property/test_split.py`` bounds what moves by the sum of
the boundaries' shifts). The point hash is salted (``person``) so that it is independent
of a ring-hash balancer's hash of the same header.

Pure and synchronous: no clock, no I/O; the only randomness is ``rng.random()``, one call
per pick of a split of two clusters or more without a key.
"""

from __future__ import annotations

import itertools
import random
from bisect import bisect_right
from collections.abc import Iterable
from typing import Final

import attrs

from policies.balancing.hashing import hash64
from policies.errors import PolicyError

_SPLIT: Final = b"triogate-split"
_TWO_53: Final = float(1 << 53)


class EmptySplit(PolicyError, ValueError):
    """A split without a cluster of positive weight."""


@attrs.frozen
class WeightedSplit:
    """Clusters (by name) and the running sums of their (positive) weights."""

    clusters: tuple[str, ...]
    cumulative: tuple[int, ...]

    @classmethod
    def of(cls, weights: Iterable[tuple[str, int]]) -> WeightedSplit:
        """The split of ``(cluster, weight)`` pairs; weights of 0 or less take nothing."""
        live = sorted((cluster, weight) for cluster, weight in weights if weight > 0)
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
        return self.pick_at(rng.random())

    def pick_at(self, point: float) -> str:
        """The cluster whose interval holds ``point`` (in ``[0, 1)``) scaled to the total."""
        cumulative = self.cumulative
        return self.clusters[bisect_right(cumulative, point * cumulative[-1])]


def key_point(key: bytes) -> float:
    """A sticky split key's stable place in ``[0, 1)``."""
    return (hash64(key, _SPLIT) >> 11) / _TWO_53  # 53 bits: exact in a float, below 1.0
