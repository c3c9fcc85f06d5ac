"""Ketama-style consistent hash ring, built the way Envoy builds it.

Theory of operation: every host puts points on a 64-bit ring, at the hashes of
``"<key>_0"``, ``"<key>_1"``, ...; a request goes to the first point at or after its
hash, wrapping around. A host's share of the ring is its share of the points, and the
point count is proportional to its weight: the ring is scaled so that the lightest
host gets a whole number of points and the ring holds at least ``min_ring_size`` of
them (at most ``max_ring_size``). Fractional point counts are carried from host to host
in key order, as Envoy does, so the ring size is exact.

Why keys move little: a host's points depend only on its own key, so adding or
removing a host adds or removes its points; the requests in the arcs they cover move,
the rest stay. Because the ring is rescaled to ``min_ring_size`` as the host count
changes, each other host also gains or loses its highest-numbered points, which moves
up to about as many keys again: with N equal hosts, adding one moves about 1/(N+1) of
the keys to it plus about as many between old hosts (Envoy's ring has the same
property; see tests/property/test_balancers.py for the bound checked).

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
