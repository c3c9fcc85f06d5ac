"""Property tests of priority load spill, panic and locality weighting (Envoy's math)."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from policies.balancing import BalancerOptions, make_balancer, plan_priorities
from policies.balancing.priority import LevelCounts
from policies.hosts import Host, HostSet
from tests.strategies import at_most, host_lists, localities, seeds, share_tolerance

# (P0's healthy percent, P0's load) with P1 fully healthy: the table of issue 5.
ENVOY_TABLE = [(72, 100), (71, 99), (50, 70), (25, 35)]


def level_counts(max_levels: int = 4) -> st.SearchStrategy[list[LevelCounts]]:
    return st.lists(
        st.integers(1, 60).flatmap(lambda t: st.builds(LevelCounts, st.integers(0, t), st.just(t))),
        min_size=1,
        max_size=max_levels,
    )


def two_level_hosts(p0_healthy: int, p0_total: int, p1_total: int) -> HostSet:
    p0 = [Host(f"p0-{i:03}", 1, 0, healthy=i < p0_healthy) for i in range(p0_total)]
    p1 = [Host(f"p1-{i:03}", 1, 1) for i in range(p1_total)]
    return HostSet(p0 + p1)


@pytest.mark.parametrize(("healthy_percent", "p0_load"), ENVOY_TABLE)
def test_envoy_spillover_table(healthy_percent: int, p0_load: int) -> None:
    """The issue's table, through the whole balancer: keys k pick level by k mod 100.

    Exact: 10,000 consecutive keys send exactly ``100 * load`` keys to each level.
    """
    hosts = two_level_hosts(healthy_percent, 100, 10)
    b = make_balancer("maglev", hosts, random.Random(0), BalancerOptions(maglev_table_size=251))
    assert b.plan.loads == (p0_load, 100 - p0_load)
    assert b.plan.panic == (False, False)
    levels = Counter(b.pick(0.0, k).priority for k in range(10_000))  # type: ignore[union-attr]
    assert levels[0] == 100 * p0_load
    assert levels[1] == 100 * (100 - p0_load)


@given(p0_total=st.integers(1, 300), data=st.data(), p1_total=st.integers(1, 50))
def test_two_levels_spill_as_envoy_computes(
    p0_total: int, data: st.DataObject, p1_total: int
) -> None:
    """P1 fully healthy: P0 keeps min(100, 140 * healthy // total) percent, P1 the rest.

    Exact, in Envoy's integer arithmetic; the four rows of ENVOY_TABLE are instances.
    No level panics: the total availability is 100.
    """
    p0_healthy = data.draw(st.integers(0, p0_total))
    plan = plan_priorities([LevelCounts(p0_healthy, p0_total), LevelCounts(p1_total, p1_total)])
    p0_load = min(100, 140 * p0_healthy // p0_total)
    assert plan.loads == (p0_load, 100 - p0_load)
    assert plan.panic == (False, False)


@given(
    levels=level_counts(),
    overprovisioning=st.sampled_from([100, 140, 200]),
    threshold=st.sampled_from([0.0, 30.0, 50.0, 100.0]),
)
def test_priority_plan_invariants(
    levels: list[LevelCounts], overprovisioning: int, threshold: float
) -> None:
    """What holds for every plan, exactly.

    - loads are whole percents summing to 100;
    - no level panics while the total availability is 100;
    - total panic (every level in panic) shares load by host count;
    - otherwise a level with no health gets no load, and a level of health 100 leaves
      nothing for the levels after it;
    - panic disabled and nothing healthy: all load to P0.
    """
    plan = plan_priorities(
        levels, overprovisioning_percent=overprovisioning, panic_threshold=threshold
    )
    note(str(plan))
    assert sum(plan.loads) == 100
    assert all(load >= 0 for load in plan.loads)
    availability = min(100, sum(plan.health))
    if availability == 100:
        assert not any(plan.panic)
    if availability == 0 and threshold == 0:
        assert plan.loads == (100,) + (0,) * (len(levels) - 1)
        return
    if plan.total_panic or availability == 0:
        hosts = sum(c.total for c in levels)
        by_count = [100 * c.total // hosts for c in levels]
        by_count[0] += 100 - sum(by_count)
        assert list(plan.loads) == by_count
        return
    for i, health in enumerate(plan.health):
        if health == 0:
            assert plan.loads[i] == 0
        if health == 100:
            assert all(load == 0 for load in plan.loads[i + 1 :])


@given(levels=level_counts(), data=st.data())
def test_more_health_in_p0_never_takes_load_from_it(
    levels: list[LevelCounts], data: st.DataObject
) -> None:
    """With panic disabled, P0's load is non-decreasing in its healthy host count."""
    first = levels[0]
    more = LevelCounts(data.draw(st.integers(first.healthy, first.total)), first.total)
    before = plan_priorities(levels, panic_threshold=0.0)
    after = plan_priorities([more, *levels[1:]], panic_threshold=0.0)
    assert after.loads[0] >= before.loads[0]


mixed = host_lists(max_size=12, priority=st.integers(0, 3), healthy=st.booleans())


@at_most(100)
@given(hosts=mixed, seed=seeds)
def test_balancer_sends_each_level_its_planned_load(hosts: list[Host], seed: int) -> None:
    """The levels picked follow the plan.

    ``ring_hash``: exact, keys k choose the level by k mod 100. ``random``: 20,000
    picks, each level's share within the Bernstein bound (delta = 1e-9) of its load.
    """
    host_set = HostSet(hosts)
    options = BalancerOptions(min_ring_size=64)
    hashed = make_balancer("ring_hash", host_set, random.Random(seed), options)
    drawn = make_balancer("random", host_set, random.Random(seed), options)
    priorities = [level.priority for level in host_set.levels]
    planned = dict(zip(priorities, hashed.plan.loads, strict=True))
    by_key = Counter(hashed.pick(0.0, k).priority for k in range(10_000))  # type: ignore[union-attr]
    assert by_key == {p: 100 * load for p, load in planned.items() if load}
    picks = 20_000
    by_draw = Counter(drawn.pick(0.0).priority for _ in range(picks))  # type: ignore[union-attr]
    for p, load in planned.items():
        share = load / 100
        assert abs(by_draw[p] / picks - share) <= share_tolerance(picks, share)


@given(hosts=host_lists(min_size=2, max_size=10, healthy=st.booleans()), seed=seeds)
def test_a_level_in_panic_balances_over_all_its_hosts(hosts: list[Host], seed: int) -> None:
    """Below the panic threshold, round robin gives every host, healthy or not, its weight.

    Exact, over one full cycle; outside panic only the healthy hosts are picked.
    """
    host_set = HostSet(hosts)
    healthy = [h for h in hosts if h.healthy]
    b = make_balancer("round_robin", host_set, random.Random(seed))
    panic = 100 * len(healthy) / len(hosts) < 50
    assert b.plan.panic == (panic,)
    serving = hosts if panic else healthy
    total = sum(h.weight for h in serving)
    counts = Counter(b.pick(0.0).key for _ in range(total))  # type: ignore[union-attr]
    assert counts == {h.key: h.weight for h in serving}


@given(
    hosts=host_lists(min_size=2, max_size=16, locality=localities, healthy=st.booleans()),
    overprovisioning=st.sampled_from([100, 140, 200]),
)
def test_localities_share_load_by_weight_times_health(
    hosts: list[Host], overprovisioning: int
) -> None:
    """Locality L gets sum(weights in L) * min(1, overprovisioning * healthy_L / total_L).

    Checked over 2,000 round-robin picks (panic off). Smooth round robin never lets an
    item's count drift from its share by n - 1 picks or more (n localities: current
    values stay above -W and sum to 0). The weights are kept in units of 0.01% of
    health, which adds at most 2e-4 * sum(weights) / sum(locality weights) of share.
    """
    options = BalancerOptions(panic_threshold=0.0, overprovisioning_percent=overprovisioning)
    b = make_balancer("round_robin", HostSet(hosts), random.Random(0), options)
    groups: dict[str, list[Host]] = {}
    for h in hosts:
        groups.setdefault(h.locality, []).append(h)
    weight = {
        name: sum(h.weight for h in members)
        * min(1.0, overprovisioning / 100 * sum(h.healthy for h in members) / len(members))
        for name, members in groups.items()
    }
    total = sum(weight.values())
    if total == 0:
        assert b.pick(0.0) is None
        return
    picks = 2000
    counts = Counter(b.pick(0.0).locality for _ in range(picks))  # type: ignore[union-attr]
    quantization = 2e-4 * sum(h.weight for h in hosts) / total
    for name, w in weight.items():
        drift = abs(counts[name] - picks * w / total)
        assert drift < len(groups) + picks * quantization, (name, counts, weight)
