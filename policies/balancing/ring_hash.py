"""Ketama-style consistent hash ring, as Envoy builds it but for one rounding rule.

Theory of operation: every host puts points on a 64-bit ring, at the hashes of
``"<key>_0"``, ``"<key>_1"``, ...; a request goes to the first point at or after its
hash, wrapping around. A host's share of the ring is its share of the points. The ring
is scaled to about ``min_ring_size`` points (more if the lightest host would otherwise
get less than one point, never more than ``max_ring_size``, where a host lighter than
1/max_ring_size of the total weight may get none), and each host's point count is its
weight share of that: ``scale * weight / total``.

That count is rarely whole. Envoy rounds by scaling the ring so the lightest host's
count is whole and carrying fractions from host to host; as the host count changes,
that rounding moves every host's count in steps (with N equal hosts each has
ceil(1024 / N) points: 52 at N = 20 and 49 at 21; 2 at N = 1023 and 1 at 1024, half of
every host's points gone at once). Here a host keeps its last, fractional point when a
coin hashed from its key falls below the fraction: counts are exact in expectation and
follow the weights smoothly. The ring size is then ``min_ring_size`` give or take the
coins (at most one point per host).

Why keys move little: a host's points depend only on its own key and count, and a
count change adds or removes its highest-numbered points. When a host joins, its points
take the keys of the arcs they split; the others' counts shrink by its share of the
weight, and the keys of the points they drop move to the next point along. With N
equal hosts, adding one moves about 1/(N+1) of the keys to it and about as many again
between the others: about 2/(N+1) in all, the price of keeping the ring's size fixed
(tests/property/test_balancers.py states the bound checked). Maglev moves about half as
many.

Determinism: the ring depends only on the (key, weight) pairs, never on input order,
the process or a random seed, so rebuilding it from the same hosts maps every key the
same way. Points that collide are ordered by host key.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from typing import Generic, TypeVar

from .hashing import hash64

__all__ = ["RingHash"]

T = TypeVar("T")

_COIN = b"ring-fraction"
_TWO_64 = float(1 << 64)


class RingHash(Generic[T]):
    """A hash ring over ``items`` named by ``keys``, with positive ``weights``."""

    __slots__ = ("_hashes", "_owners")

    def __init__(
        self,
        items: Sequence[T],
        keys: Sequence[str],
        weights: Sequence[float],
        *,
        min_ring_size: int = 1024,
        max_ring_size: int = 1 << 17,
    ) -> None:
        order = sorted(range(len(items)), key=keys.__getitem__)
        total = math.fsum(weights)
        normalized = [weights[i] / total for i in order]
        # Points per unit of normalized weight: enough for the ring size, and enough
        # that the lightest host gets a whole point.
        scale = min(max(float(min_ring_size), 1.0 / min(normalized)), float(max_ring_size))
        points: list[tuple[int, int]] = []
        for rank, i in enumerate(order):
            prefix = keys[i].encode("utf-8", "surrogatepass") + b"_"
            wanted = scale * normalized[rank]
            count = math.floor(wanted)
            # The fraction of a point is a coin stable per host: the host keeps its
            # last point while its fraction is above the coin, so as weights shift the
            # expected count tracks them exactly instead of jumping by a whole point
            # for every host at once.
            if hash64(prefix, _COIN) < (wanted - count) * _TWO_64:
                count += 1
            points.extend((hash64(prefix + str(n).encode("ascii")), rank) for n in range(count))
        points.sort()
        self._hashes = [h for h, _ in points]
        self._owners = tuple(items[order[rank]] for _, rank in points)

    def __len__(self) -> int:
        return len(self._hashes)

    def pick(self, key: int, /) -> T:
        i = bisect_left(self._hashes, key)
        return self._owners[i if i < len(self._owners) else 0]
