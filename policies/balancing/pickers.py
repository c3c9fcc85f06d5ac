"""Pickers: choose one item from a fixed, weighted list, many times over.

Theory of operation: a picker is built once from items (hosts, or the localities of a
priority level) and their integer weights, all positive, and then asked ``pick(key)``
on the data path. It keeps whatever mutable state its algorithm needs (a round robin's
position, a least-request schedule) and never allocates per pick beyond a tuple or two.
``key`` is the request's hash; only the consistent-hash pickers (``ring_hash``,
``maglev``) read it, the others accept it so that every picker has the same shape.

- ``smooth_round_robin``: nginx's smooth weighted round robin. Every pick adds each
  item's weight to its "current" value, picks the largest (first in order on ties) and
  subtracts the total weight from it. Over any ``sum(weights)`` consecutive picks from
  the start of a cycle each item is picked exactly ``weight`` times, interleaved rather
  than in bursts. The sequence repeats with that period, so a short cycle is computed
  once and replayed: O(1) per pick. A long one is computed as it goes: items of equal
  weight are picked in turn, so the largest current value of a weight class is always
  its next item in rotation, and tracking classes instead of items makes a pick
  O(distinct weights).
- ``weighted_random``: independent draws, P(item) = weight / total. O(log n).
- ``least_request``: Envoy's. With equal weights, power of ``choice_count`` choices:
  sample that many items uniformly (with replacement) and take the one with the fewest
  active requests, the first sampled on ties. With unequal weights, Envoy's earliest
  deadline first schedule over the dynamic weight ``weight / (active + 1) ** bias``,
  evaluated for an item when it is picked. O(choice_count) or O(log n).
"""

from __future__ import annotations

import heapq
import math
import random
from bisect import bisect_right
from collections.abc import Callable, Sequence
from itertools import accumulate
from typing import Generic, Protocol, TypeVar

__all__ = [
    "CYCLE_LIMIT",
    "Fixed",
    "Picker",
    "least_request",
    "smooth_round_robin",
    "weighted_random",
]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Picker(Protocol[T_co]):
    """Chooses one of a fixed set of items; ``key`` is the request hash."""

    def pick(self, key: int, /) -> T_co: ...


class Fixed(Generic[T]):
    """The only item, every time."""

    __slots__ = ("_item",)

    def __init__(self, item: T) -> None:
        self._item = item

    def pick(self, key: int, /) -> T:
        return self._item


class _Rotation(Generic[T]):
    """Replays ``items`` in turn: equal weights, or a precomputed smooth cycle."""

    __slots__ = ("_items", "_next")

    def __init__(self, items: Sequence[T]) -> None:
        self._items = tuple(items)
        self._next = 0

    def pick(self, key: int, /) -> T:
        i = self._next
        self._next = i + 1 if i + 1 < len(self._items) else 0
        return self._items[i]


class _SmoothWeighted(Generic[T]):
    """nginx's smooth weighted round robin, tracked per weight class.

    After ``t`` picks of a cycle an item of weight ``w`` picked ``k`` times has current
    value ``t * w - total * k``. Within a class (same ``w``) the items are picked in
    turn, so the class's best item is the one at its rotation position, picked
    ``picks // size`` times. nginx breaks ties by list order; so does this, by index.
    """

    __slots__ = ("_classes", "_items", "_picks", "_step", "_total")

    def __init__(self, items: Sequence[T], weights: Sequence[int]) -> None:
        members: dict[int, list[int]] = {}
        for i, w in enumerate(weights):
            members.setdefault(w, []).append(i)
        self._items = tuple(items)
        self._total = sum(weights)
        self._classes = tuple((w, tuple(idx)) for w, idx in members.items())
        self._picks = [0] * len(self._classes)
        self._step = 0

    def pick(self, key: int, /) -> T:
        t = self._step + 1
        total = self._total
        picks = self._picks
        best_class = -1
        best_value = 0
        best_index = 0
        for c, (w, members) in enumerate(self._classes):
            rounds, position = divmod(picks[c], len(members))
            value = t * w - total * rounds
            index = members[position]
            if best_class < 0 or value > best_value or (value == best_value and index < best_index):
                best_class, best_value, best_index = c, value, index
        picks[best_class] += 1
        if t == total:
            # End of the cycle: every item was picked exactly its weight times and every
            # current value is back to zero. Restarting keeps the integers small.
            self._step = 0
            for c in range(len(picks)):
                picks[c] = 0
        else:
            self._step = t
        return self._items[best_index]


#: the longest smooth round-robin cycle stored whole, so that a pick is O(1)
CYCLE_LIMIT = 4096


def smooth_round_robin(
    items: Sequence[T], weights: Sequence[int], *, cycle_limit: int = CYCLE_LIMIT
) -> Picker[T]:
    """nginx's smooth weighted round robin over ``items`` (positive integer weights).

    A cycle of at most ``cycle_limit`` picks (after dividing out the weights' common
    factor) is computed once and replayed, O(1) per pick; a longer one is computed as
    it goes, O(distinct weights) per pick.
    """
    if len(items) == 1:
        return Fixed(items[0])
    if len(set(weights)) == 1:
        return _Rotation(items)
    # Scaling every weight by the same factor leaves the sequence unchanged; dividing
    # out the common factor only shortens the cycle.
    common = math.gcd(*weights)
    reduced = [w // common for w in weights]
    live = _SmoothWeighted(items, reduced)
    cycle = sum(reduced)
    if cycle > cycle_limit:
        return live
    return _Rotation([live.pick(0) for _ in range(cycle)])


class _UniformRandom(Generic[T]):
    __slots__ = ("_items", "_n", "_random")

    def __init__(self, items: Sequence[T], rng: random.Random) -> None:
        self._items = tuple(items)
        self._n = len(self._items)
        self._random = rng.random

    def pick(self, key: int, /) -> T:
        # random() < 1 and n < 2**53, so the product never rounds up to n.
        return self._items[int(self._random() * self._n)]


class _WeightedRandom(Generic[T]):
    __slots__ = ("_cumulative", "_hi", "_items", "_random", "_total")

    def __init__(self, items: Sequence[T], weights: Sequence[int], rng: random.Random) -> None:
        self._items = tuple(items)
        self._cumulative = list(accumulate(weights))
        self._total = self._cumulative[-1]
        self._hi = len(self._items) - 1
        self._random = rng.random

    def pick(self, key: int, /) -> T:
        # The first item whose running sum exceeds the draw; ``hi`` caps the index
        # should the float product ever reach the total.
        draw = self._random() * self._total
        return self._items[bisect_right(self._cumulative, draw, 0, self._hi)]


def weighted_random(items: Sequence[T], weights: Sequence[int], rng: random.Random) -> Picker[T]:
    """Independent weighted draws from ``items`` (positive integer weights)."""
    if len(items) == 1:
        return Fixed(items[0])
    if len(set(weights)) == 1:
        return _UniformRandom(items, rng)
    return _WeightedRandom(items, weights, rng)


class _PowerOfChoices(Generic[T]):
    """Sample ``choices`` items uniformly, keep the least busy (the first on ties)."""

    __slots__ = ("_active", "_extra", "_items", "_n", "_random")

    def __init__(
        self,
        items: Sequence[T],
        rng: random.Random,
        active: Callable[[T], int],
        choices: int,
    ) -> None:
        self._items = tuple(items)
        self._n = len(self._items)
        self._random = rng.random
        self._active = active
        self._extra = range(choices - 1)

    def pick(self, key: int, /) -> T:
        items = self._items
        n = self._n
        draw = self._random
        active = self._active
        best = items[int(draw() * n)]
        best_active = active(best)
        for _ in self._extra:
            candidate = items[int(draw() * n)]
            candidate_active = active(candidate)
            if candidate_active < best_active:
                best = candidate
                best_active = candidate_active
        return best


class _WeightedLeastRequest(Generic[T]):
    """Envoy's EDF schedule over ``weight / (active + 1) ** bias``.

    Each item waits in a heap under a deadline. A pick takes the earliest, then puts it
    back at ``deadline + 1 / dynamic_weight``, the weight read now: a busy item comes
    back later. Ties go to the item queued first. Other items' deadlines were set when
    they were last picked (Envoy's behaviour: the load is sampled at pick time).
    """

    __slots__ = ("_active", "_bias", "_heap", "_items", "_sequence", "_weights")

    def __init__(
        self,
        items: Sequence[T],
        weights: Sequence[int],
        active: Callable[[T], int],
        bias: float,
    ) -> None:
        self._items = tuple(items)
        self._weights = tuple(float(w) for w in weights)
        self._active = active
        self._bias = bias
        self._heap = [(1.0 / w, i, i) for i, w in enumerate(self._weights)]
        heapq.heapify(self._heap)
        self._sequence = len(self._heap)

    def pick(self, key: int, /) -> T:
        heap = self._heap
        deadline, _, i = heap[0]
        item = self._items[i]
        weight = self._weights[i]
        bias = self._bias
        if bias:
            # Clamp a negative count (a caller's bug) rather than divide by zero.
            load = max(self._active(item), 0) + 1
            weight = weight / load if bias == 1.0 else weight / load**bias
        self._sequence += 1
        heapq.heapreplace(heap, (deadline + 1.0 / weight, self._sequence, i))
        return item


def least_request(
    items: Sequence[T],
    weights: Sequence[int],
    rng: random.Random,
    active: Callable[[T], int],
    *,
    choice_count: int = 2,
    bias: float = 1.0,
) -> Picker[T]:
    """Envoy's least request over ``items`` (positive integer weights)."""
    if len(items) == 1:
        return Fixed(items[0])
    if len(set(weights)) == 1:
        return _PowerOfChoices(items, rng, active, choice_count)
    return _WeightedLeastRequest(items, weights, active, bias)
