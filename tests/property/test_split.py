"""WeightedSplit against a linear-scan oracle, and its shares against the weights."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.split import EmptySplit, WeightedSplit
from tests.strategies import ScriptedRandom, at_most, seeds, share_tolerance

names = st.integers(0, 10_000).map(lambda n: f"c{n}")
#: weights with zeros among them, and at least one positive
splits = st.lists(
    st.tuples(names, st.integers(0, 1000)), min_size=1, max_size=8, unique_by=lambda p: p[0]
).filter(lambda pairs: any(w > 0 for _, w in pairs))
draws = st.floats(0.0, 1.0, exclude_max=True)


def oracle(pairs: list[tuple[str, int]], point: float) -> str:
    """The cluster whose interval [sum before it, sum with it) holds ``point``: a scan."""
    before = 0
    for cluster, weight in pairs:
        if weight > 0 and before <= point < before + weight:
            return cluster
        before += max(weight, 0)
    raise AssertionError(f"{point} is past every interval")


@given(pairs=splits, u=draws)
def test_pick_is_the_cluster_whose_interval_holds_the_draw(
    pairs: list[tuple[str, int]], u: float
) -> None:
    split = WeightedSplit.of(pairs)
    live = [(c, w) for c, w in pairs if w > 0]
    rng = ScriptedRandom()
    rng.script([u])
    picked = split.pick(rng)
    if len(live) == 1:
        assert picked == live[0][0]
    else:
        total = sum(w for _, w in live)
        assert picked == oracle(pairs, u * total)


@given(pairs=splits)
def test_a_draw_on_a_running_sum_belongs_to_the_next_cluster(pairs: list[tuple[str, int]]) -> None:
    split = WeightedSplit.of(pairs)
    total = split.cumulative[-1]
    for i, start in enumerate((0, *split.cumulative[:-1])):
        u = start / total
        if u * total != start:
            continue  # not exactly representable: the oracle test covers it
        rng = ScriptedRandom()
        rng.script([u])
        assert split.pick(rng) == split.clusters[i]


@given(pairs=splits, seed=seeds)
def test_never_a_cluster_of_weight_zero(pairs: list[tuple[str, int]], seed: int) -> None:
    split = WeightedSplit.of(pairs)
    rng = random.Random(seed)
    positive = {c for c, w in pairs if w > 0}
    assert set(split.clusters) == positive
    assert all(split.pick(rng) in positive for _ in range(50))


@at_most(40)
@given(pairs=splits, seed=seeds)
def test_shares_follow_the_weights(pairs: list[tuple[str, int]], seed: int) -> None:
    picks = 4000
    split = WeightedSplit.of(pairs)
    rng = random.Random(seed)
    seen = Counter(split.pick(rng) for _ in range(picks))
    total = sum(w for _, w in pairs if w > 0)
    for cluster, weight in pairs:
        share = weight / total
        if weight <= 0:
            assert seen[cluster] == 0
        elif share < 1:
            assert abs(seen[cluster] / picks - share) <= share_tolerance(picks, share), cluster


class NoDraws(random.Random):
    def random(self) -> float:
        raise AssertionError("a split of one cluster drew a random number")


@given(cluster=names, others=st.lists(names, max_size=4))
def test_one_live_cluster_draws_nothing(cluster: str, others: list[str]) -> None:
    pairs = [(cluster, 3)] + [(o, 0) for o in others if o != cluster]
    assert WeightedSplit.of(pairs).pick(NoDraws()) == cluster


@given(pairs=st.lists(st.tuples(names, st.integers(-5, 0)), max_size=5))
def test_a_split_without_positive_weight_is_refused(pairs: list[tuple[str, int]]) -> None:
    with pytest.raises(EmptySplit):
        WeightedSplit.of(pairs)
