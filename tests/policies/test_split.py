"""Examples of the weighted split: which cluster a draw lands on."""

from __future__ import annotations

import pytest

from policies.split import EmptySplit, WeightedSplit
from tests.strategies import ScriptedRandom


def picks(split: WeightedSplit, draws: list[float]) -> list[str]:
    rng = ScriptedRandom()
    rng.script(draws)
    return [split.pick(rng) for _ in draws]


def test_each_cluster_owns_its_share_of_the_unit_interval() -> None:
    split = WeightedSplit.of([("a", 1), ("b", 3)])  # a: [0, 1), b: [1, 4)
    assert split.cumulative == (1, 4)
    assert picks(split, [0.0, 0.2499, 0.25, 0.9999]) == ["a", "a", "b", "b"]


def test_zero_weights_take_nothing() -> None:
    split = WeightedSplit.of([("a", 0), ("b", 2), ("c", 0), ("d", 2)])
    assert split.clusters == ("b", "d")
    assert picks(split, [0.0, 0.49, 0.5, 0.99]) == ["b", "b", "d", "d"]


def test_a_single_cluster() -> None:
    split = WeightedSplit.single("only")
    assert picks(split, [0.7]) == ["only"]


def test_no_positive_weight_is_refused() -> None:
    with pytest.raises(EmptySplit):
        WeightedSplit.of([("a", 0)])
    with pytest.raises(EmptySplit):
        WeightedSplit.of([])
