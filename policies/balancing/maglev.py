"""Maglev consistent hashing (Eisenbud et al., NSDI 2016), weighted as Envoy does.

Theory of operation: a lookup table of prime size M maps ``key % M`` to a host. Each
host walks its own permutation of the slots, ``(offset + j * skip) % M`` with offset and
skip hashed from its key (M prime makes every skip a generator), and the hosts take
turns claiming their next free slot until the table is full. Weights set how often a
host gets a turn: a host of the heaviest weight claims a slot every round, one of a
third of that weight every third round, so its share of slots is its share of weight.

Why keys move little: the table depends only on the (key, weight) pairs. Removing a
host frees its slots, which the others' permutations reclaim; slots held by the others
mostly stay put, because each host's permutation is fixed. The Maglev paper measures
slightly more than the minimal 1/N disruption; see tests/property/test_balancers.py
for the bound checked. Hosts are taken in key order, so the table does not depend on
input order, the process or a random seed.

Building costs about M * ln(M) probes, some 40 ms per table for M = 65537 in CPython
(one table per priority level with load): build once per host set snapshot, never per
request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar

from policies.balancing.hashing import hash64

__all__ = ["Maglev"]

T = TypeVar("T")

_OFFSET = b"maglev-offset"
_SKIP = b"maglev-skip"


class Maglev(Generic[T]):
    """A Maglev table over ``items`` named by ``keys``, with positive ``weights``."""

    __slots__ = ("_size", "_table")

    def __init__(
        self,
        items: Sequence[T],
        keys: Sequence[str],
        weights: Sequence[float],
        *,
        table_size: int = 65537,
    ) -> None:
        order = sorted(range(len(items)), key=keys.__getitem__)
        m = table_size
        encoded = [keys[i].encode("utf-8", "surrogatepass") for i in order]
        slot = [hash64(k, _OFFSET) % m for k in encoded]  # each host's next candidate
        skip = [hash64(k, _SKIP) % (m - 1) + 1 for k in encoded]
        weight = [float(weights[i]) for i in order]
        heaviest = max(weight)
        claimed = [0.0] * len(order)  # Envoy's target_weight: turns taken, in weight units
        table = [-1] * m
        filled = 0
        round_ = 0  # Envoy's iteration: in round 0 every host takes a slot
        while filled < m:
            for rank, w in enumerate(weight):
                if round_ * w < claimed[rank]:
                    continue
                claimed[rank] += heaviest
                c = slot[rank]
                s = skip[rank]
                while table[c] >= 0:
                    c += s
                    if c >= m:
                        c -= m
                table[c] = rank
                c += s
                slot[rank] = c - m if c >= m else c
                filled += 1
                if filled == m:
                    break
            round_ += 1
        self._size = m
        self._table = tuple(items[order[rank]] for rank in table)

    def __len__(self) -> int:
        return self._size

    def pick(self, key: int, /) -> T:
        return self._table[key % self._size]
