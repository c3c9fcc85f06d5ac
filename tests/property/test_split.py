"""WeightedSplit against a linear-scan oracle, its shares against the weights, and what a
sticky split moves when the weights change."""

from __future__ import annotations

import random
from collections import Counter
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.split import EmptySplit, WeightedSplit, key_point
from tests.strategies import ScriptedRandom, at_most, seeds, share_tolerance

names = st.integers(0, 10_000).map(lambda n: f"c{n}")
#: weights with zeros among them, and at least one positive
splits = st.lists(
    st.tuples(names, st.integers(0, 1000)), min_size=1, max_size=8, unique_by=lambda p: p[0]
).filter(lambda pairs: any(w > 0 for _, w in pairs))
draws = st.floats(0.0, 1.0, exclude_max=True)


def oracle(pairs: list[tuple[str, int]], point: float) -> str:
    """The cluster whose interval [sum before it, sum with it) holds ``point``: a scan of
    the clusters in name order."""
    before = 0
    for cluster, weight in sorted(pairs):
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


# -- sticky splits: a key's point, and what a weight change moves ---------------------------

#: two to five clusters with weights for before and after a change (zeros allowed)
changes = st.lists(
    st.tuples(names, st.integers(0, 100), st.integers(0, 100)),
    min_size=2,
    max_size=5,
    unique_by=lambda t: t[0],
).filter(lambda ts: any(b > 0 for _, b, _ in ts) and any(a > 0 for _, _, a in ts))


def boundaries(split: WeightedSplit) -> list[float]:
    """Where each cluster's interval ends, as a share of [0, 1)."""
    total = split.cumulative[-1]
    return [c / total for c in split.cumulative]


def moved_share(old: WeightedSplit, new: WeightedSplit) -> float:
    """The exact share of [0, 1) whose cluster differs: the mapping is constant between
    consecutive boundaries of either split, so one probe per piece decides it."""
    cuts = sorted({0.0, 1.0, *boundaries(old), *boundaries(new)})
    return sum(
        b - a
        for a, b in pairwise(cuts)
        if b > a and old.pick_at((a + b) / 2) != new.pick_at((a + b) / 2)
    )


def boundary_shift(old: dict[str, int], new: dict[str, int]) -> float:
    """The sum over the name-ordered clusters of how far each running share moved."""
    names_ = sorted(old)
    old_total, new_total = sum(old.values()), sum(new.values())
    shift, old_sum, new_sum = 0.0, 0, 0
    for name in names_:
        old_sum += old[name]
        new_sum += new[name]
        shift += abs(old_sum / old_total - new_sum / new_total)
    return shift


@given(pairs=splits, u=draws, seed=seeds)
def test_a_keys_cluster_ignores_the_order_the_split_was_written_in(
    pairs: list[tuple[str, int]], u: float, seed: int
) -> None:
    shuffled = list(pairs)
    random.Random(seed).shuffle(shuffled)
    assert WeightedSplit.of(pairs).pick_at(u) == WeightedSplit.of(shuffled).pick_at(u)


@given(change=changes, u=draws)
def test_a_key_moves_only_if_a_boundary_crossed_its_point(
    change: list[tuple[str, int, int]], u: float
) -> None:
    old = WeightedSplit.of((c, b) for c, b, _ in change)
    new = WeightedSplit.of((c, a) for c, _, a in change)
    if old.pick_at(u) != new.pick_at(u):
        assert any(
            min(x, y) <= u <= max(x, y)
            for x, y in zip(
                boundaries_by_name(change, 1), boundaries_by_name(change, 2), strict=True
            )
        )


def boundaries_by_name(change: list[tuple[str, int, int]], column: int) -> list[float]:
    """Every cluster's interval end (zero weights included), in name order."""
    rows = sorted(change)
    total = sum(row[column] for row in rows)
    running, out = 0, []
    for row in rows:
        running += row[column]
        out.append(running / total)
    return out


@given(change=changes)
def test_what_moves_is_at_least_the_shift_in_shares_and_at_most_the_boundaries_shift(
    change: list[tuple[str, int, int]],
) -> None:
    old_weights = {c: b for c, b, _ in change}
    new_weights = {c: a for c, _, a in change}
    old = WeightedSplit.of(old_weights.items())
    new = WeightedSplit.of(new_weights.items())
    moved = moved_share(old, new)
    old_total, new_total = sum(old_weights.values()), sum(new_weights.values())
    # no assignment can move fewer keys than the shares changed by (total variation)
    least = (
        sum(abs(old_weights[c] / old_total - new_weights[c] / new_total) for c in old_weights) / 2
    )
    assert least - 1e-9 <= moved <= boundary_shift(old_weights, new_weights) + 1e-9


@given(a=st.integers(0, 100), b=st.integers(0, 100))
def test_two_clusters_move_exactly_the_change_in_share(a: int, b: int) -> None:
    old = (
        WeightedSplit.of([("v1", 100 - a), ("v2", a)]) if a < 100 else WeightedSplit.of([("v2", 1)])
    )
    new = (
        WeightedSplit.of([("v1", 100 - b), ("v2", b)]) if b < 100 else WeightedSplit.of([("v2", 1)])
    )
    assert abs(moved_share(old, new) - abs(a - b) / 100) < 1e-9


def test_a_population_of_users_keeps_the_shares_and_a_change_moves_about_ten_percent() -> None:
    users = [key_point(f"user-{i}".encode()) for i in range(10_000)]
    before = WeightedSplit.of([("v1", 90), ("v2", 10)])
    after = WeightedSplit.of([("v1", 80), ("v2", 20)])
    first = [before.pick_at(u) for u in users]
    assert first == [before.pick_at(u) for u in users]  # sticky
    assert abs(first.count("v2") / len(users) - 0.10) <= 0.02
    second = [after.pick_at(u) for u in users]
    assert abs(second.count("v2") / len(users) - 0.20) <= 0.02
    moved = [(x, y) for x, y in zip(first, second, strict=True) if x != y]
    assert abs(len(moved) / len(users) - 0.10) <= 0.02
    assert set(moved) == {("v1", "v2")}  # nobody goes back from the canary


@given(key=st.binary(max_size=64))
def test_a_keys_point_is_in_the_unit_interval(key: bytes) -> None:
    assert 0.0 <= key_point(key) < 1.0
