"""Ketama-style consistent hash ring: a host's points depend on its own weight only.

Theory of operation: every host puts points on a 64-bit ring; a request goes to the
first point at or after its hash, wrapping around. A host's points are the 64-bit words
of BLAKE2b-256 of ``"<key>_0"``, ``"<key>_1"``, ... (four points per digest, as
ketama takes four from each MD5), so a host with more points keeps the ones it had.

Point counts (the rule). With ``lightest`` the smallest weight present and
``per_lightest = ceil(min_ring_size / 2)``, a host of weight ``w`` gets
``per_lightest * w / lightest`` points: the lightest host ``per_lightest`` (512 by
default, so its share of the ring is off its weight share by about 1/sqrt(512) = 4.4%,
one standard deviation), the others in proportion, like ketama's fixed points per
server. Every host has at least ``per_lightest`` points, so a ring of two or more has
at least ``min_ring_size`` (Envoy's floor) without looking at the host count: that is
what keeps the scale still as hosts come and go. Only weight ratios matter, so the
shares the cluster balancer passes when it folds several localities into one ring
behave as the weights do while locality health holds. Two things change the scale:

- the lightest weight: a host lighter than all present joins, or the last host of the
  lightest weight leaves. Every other count is rescaled by the ratio of the lightest
  weights, a large move of keys; a canary should join at no less than the least
  weight already present.
- ``max_ring_size``: when ``per_lightest * total / lightest`` would exceed it, counts
  are ``max_ring_size * w / total`` instead (Envoy's fixed-size ring), so every count
  follows the total weight. With the defaults and equal weights that is beyond 256
  hosts. A host lighter than 1/max_ring_size of the total may get no point.

A fractional count keeps its last point when a coin hashed from the host's key falls
below the fraction, so counts are exact in expectation and stable while the scale is.
The ring is never empty: if every coin fails, the heaviest host gets one point.

Why keys move little: while the scale holds, a host joining leaves every other host's
points in place, so the keys that move are exactly those on the arcs its points end,
and they all move to it; a host leaving moves only its own keys. Its points are a
``weight / total`` share of the ring, and the arcs they end are that share of the ring
in expectation, within about sqrt(share / ring size) (tests/property/test_balancers.py
states the bounds checked). When the scale changes, the keys on the arcs of the points
added or removed move too: about twice the joiner's share in the capped regime, and
up to all keys when the lightest weight changes by a large factor.

Cost: a pick bisects the sorted point hashes between the bounds of the key's bucket
(the top bits of the hash, 8 to 16 points a bucket): O(log ring size) at worst, a few
comparisons in practice, about 0.15 us whatever the ring size, where bisecting the
whole ring took 0.25 us at 5,120 points and 0.36 us at 2**17 (cache misses). The
build hashes ring size / 4 digests and sorts, O(ring size log ring size): some 75 ms
and 7 MB for the 2**17 points of a capped ring in CPython, paid once per host set
snapshot (bench/bench_balancers.py). The hashes stay in a list: an ``array("Q")``
would take a sixth of the memory but 0.1 us more per pick, on the hot path.

Determinism: the ring depends only on the (key, weight) pairs, never on input order,
the process or a random seed, so rebuilding it from the same hosts maps every key the
same way. Points that collide are ordered by host key.
"""

from __future__ import annotations

import hashlib
import math
import struct
from bisect import bisect_left
from collections.abc import Sequence
from typing import Final, Generic, TypeVar

from policies.balancing.hashing import hash64

__all__ = ["RingHash"]

T = TypeVar("T")

_COIN: Final = b"ring-fraction"
_POINTS: Final = b"ring-points"
_TWO_64: Final = float(1 << 64)
_WORDS: Final = struct.Struct("<4Q").unpack
# A count within this relative distance of a whole number is that number: the
# per-locality shares the cluster balancer passes are weight ratios up to rounding,
# and a count must not hinge on a coin because of it.
_WHOLE: Final = 1e-9


def _point_hashes(prefix: bytes, count: int) -> list[int]:
    """The first ``count`` points of a host; ``prefix`` is its key and ``_``."""
    blake2b = hashlib.blake2b
    words = [
        word
        for j in range((count + 3) // 4)
        for word in _WORDS(blake2b(prefix + b"%d" % j, digest_size=32, person=_POINTS).digest())
    ]
    del words[count:]
    return words


def _rounded(wanted: float, prefix: bytes) -> int:
    """``wanted`` points, whole: the fraction is kept when the host's coin is below it."""
    nearest = round(wanted)
    if abs(wanted - nearest) <= _WHOLE * wanted:
        return nearest
    count = math.floor(wanted)
    if hash64(prefix, _COIN) < (wanted - count) * _TWO_64:
        count += 1
    return count


class RingHash(Generic[T]):
    """A hash ring over ``items`` named by ``keys``, with positive ``weights``."""

    __slots__ = ("_counts", "_hashes", "_owners", "_shift", "_starts", "scale")

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
        lightest = min(weights)
        units = math.fsum(weights) / lightest  # the total weight, in lightest hosts
        per_lightest = float(-(-min_ring_size // 2))
        # At the cap give or take _WHOLE is not past it: float noise in a ratio of
        # weights must not decide the regime.
        if per_lightest * units > max_ring_size * (1 + _WHOLE):
            per_lightest = max_ring_size / units
        #: points per unit of weight; it changes only as the module docstring says
        self.scale: Final = per_lightest / lightest
        prefixes = [keys[i].encode("utf-8", "surrogatepass") + b"_" for i in order]
        counts = [
            _rounded(per_lightest * (weights[i] / lightest), prefix)
            for i, prefix in zip(order, prefixes, strict=True)
        ]
        if not any(counts):
            heaviest = max(range(len(order)), key=lambda rank: (weights[order[rank]], -rank))
            counts[heaviest] = 1
        # Each point carries its host's rank in its low bits, so one sort of plain ints
        # orders the points by hash, and collisions by host key.
        shift = max(1, len(order).bit_length())
        points: list[int] = []
        for rank, (prefix, count) in enumerate(zip(prefixes, counts, strict=True)):
            points.extend([h << shift | rank for h in _point_hashes(prefix, count)])
        points.sort()
        mask = (1 << shift) - 1
        ranked = [items[i] for i in order]
        hashes = [p >> shift for p in points]
        self._hashes = hashes
        self._owners = tuple([ranked[p & mask] for p in points])
        self._counts = {keys[i]: c for i, c in zip(order, counts, strict=True)}
        # A bucket per 8 to 16 points, by the top bits of the hash: a pick bisects only
        # its bucket, a few points that are likely in cache, not the whole ring.
        bits = max(0, len(hashes).bit_length() - 4)
        self._shift = 64 - bits
        starts = []
        start = 0
        for bucket in range(1 << bits):
            start = bisect_left(hashes, bucket << self._shift, start)
            starts.append(start)
        starts.append(len(hashes))
        self._starts = starts

    def __len__(self) -> int:
        return len(self._hashes)

    def points(self, key: str, /) -> int:
        """How many points the host named ``key`` has on the ring (0 if none)."""
        return self._counts.get(key, 0)

    def pick(self, key: int, /) -> T:
        """The host of the first point at or after ``key``, a 64-bit hash."""
        bucket = key >> self._shift
        starts = self._starts
        i = bisect_left(self._hashes, key, starts[bucket], starts[bucket + 1])
        return self._owners[i if i < len(self._owners) else 0]
