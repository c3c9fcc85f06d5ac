"""Example-based tests of policies.hosts and policies.balancing: the cases worth naming."""

from __future__ import annotations

import random
from bisect import bisect_left
from collections import Counter
from typing import get_args

import pytest

import policies.balancing as balancing
from gateway.config.model import LbPolicy
from policies.balancing import (
    POLICY_NAMES,
    BalancerConfigError,
    BalancerOptions,
    ClusterBalancer,
    hash_key,
    make_balancer,
)
from policies.balancing.ring_hash import RingHash
from policies.errors import PolicyError
from policies.hosts import Host, HostError, HostSet
from tests.strategies import ScriptedRandom


def build(
    policy: str,
    hosts: list[Host],
    options: BalancerOptions | None = None,
    active: dict[str, int] | None = None,
    seed: int = 0,
) -> ClusterBalancer:
    counts = active or {}
    return make_balancer(
        policy,
        HostSet(hosts),
        random.Random(seed),
        options or BalancerOptions(),
        active=lambda h: counts.get(h.key, 0),
    )


def keys(b: ClusterBalancer, n: int, now: float = 0.0) -> str:
    return "".join(b.pick(now).key for _ in range(n))  # type: ignore[union-attr]


# -- the public surface -------------------------------------------------------------


def test_public_surface() -> None:
    assert set(balancing.__all__) == {
        "DEFAULT_OPTIONS",
        "POLICY_NAMES",
        "ActiveRequests",
        "BalancerConfigError",
        "BalancerOptions",
        "ClusterBalancer",
        "PolicyName",
        "PriorityPlan",
        "hash_key",
        "make_balancer",
        "plan_priorities",
        "slow_start_percent",
    }


def test_policy_names_are_the_config_models() -> None:
    assert get_args(LbPolicy) == POLICY_NAMES


def test_errors_are_policy_errors_and_value_errors() -> None:
    assert issubclass(HostError, PolicyError)
    assert issubclass(HostError, ValueError)
    assert issubclass(BalancerConfigError, PolicyError)
    assert issubclass(BalancerConfigError, ValueError)


# -- hosts --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"key": "", "weight": 1}, "empty"),
        ({"key": "a:1", "weight": -1}, "weight"),
        ({"key": "a:1", "weight": 1, "priority": -1}, "priority"),
        ({"key": "a:1", "weight": 1, "ready_at": float("nan")}, "ready_at"),
    ],
)
def test_bad_hosts_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(HostError, match=message):
        Host(**kwargs)  # type: ignore[arg-type]


def test_duplicate_keys_are_refused() -> None:
    with pytest.raises(HostError, match="duplicate host key 'a:1'"):
        HostSet([Host("a:1", 1), Host("b:1", 1), Host("a:1", 2)])


def test_host_sets_ignore_input_order() -> None:
    a, b, c = Host("a:1", 1), Host("b:1", 2, priority=1), Host("c:1", 3, locality="z")
    assert HostSet([c, a, b]) == HostSet([a, b, c])
    assert HostSet([c, a, b]).hosts == (a, b, c)


def test_host_set_groups_by_priority_and_locality() -> None:
    hosts = HostSet(
        [
            Host("a:1", 1, 1, "x"),
            Host("b:1", 2, 0, "y", healthy=False),
            Host("c:1", 3, 0, "x"),
            Host("d:1", 0, 0, "x"),  # weight 0: no level
        ]
    )
    assert [level.priority for level in hosts.levels] == [0, 1]
    p0 = hosts.levels[0]
    assert [h.key for h in p0.hosts] == ["b:1", "c:1"]
    assert [h.key for h in p0.healthy] == ["c:1"]
    assert [(g.locality, g.weight, len(g.healthy)) for g in p0.localities] == [
        ("x", 3, 1),
        ("y", 2, 0),
    ]
    assert len(hosts) == 4
    assert hosts.get("d:1") == Host("d:1", 0, 0, "x")
    assert hosts.get("nope") is None


# -- options and construction --------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"choice_count": 1}, "choice_count"),
        ({"active_request_bias": -0.5}, "active_request_bias"),
        ({"min_ring_size": 0}, "min_ring_size"),
        ({"min_ring_size": 2048, "max_ring_size": 1024}, "max_ring_size"),
        ({"maglev_table_size": 65536}, "prime"),
        ({"slow_start_window": -1.0}, "slow_start_window"),
        ({"slow_start_min_percent": 0}, "slow_start_min_percent"),
        ({"panic_threshold": 101.0}, "panic_threshold"),
        ({"overprovisioning_percent": 0}, "overprovisioning_percent"),
    ],
)
def test_bad_options_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(BalancerConfigError, match=message):
        BalancerOptions(**kwargs)  # type: ignore[arg-type]


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(BalancerConfigError, match="unknown load balancing policy 'fastest'"):
        make_balancer("fastest", HostSet([]), random.Random(0))


def test_least_request_needs_the_active_counts() -> None:
    with pytest.raises(BalancerConfigError, match="active"):
        make_balancer("least_request", HostSet([Host("a:1", 1)]), random.Random(0))


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_nothing_to_pick(policy: str) -> None:
    assert build(policy, []).pick(0.0, 7) is None
    assert build(policy, [Host("a:1", 0), Host("b:1", 0)]).pick(0.0, 7) is None
    no_panic = BalancerOptions(panic_threshold=0.0)
    assert build(policy, [Host("a:1", 1, healthy=False)], no_panic).pick(0.0, 7) is None


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_total_panic_still_serves(policy: str) -> None:
    """Nothing healthy anywhere: every level panics and all hosts share the load."""
    hosts = [Host("a:1", 1, healthy=False), Host("b:1", 1, priority=1, healthy=False)]
    b = build(policy, hosts)
    assert b.plan.total_panic
    assert b.plan.loads == (50, 50)
    picked = {b.pick(0.0, k).key for k in range(200)}  # type: ignore[union-attr]
    assert picked == {"a:1", "b:1"}


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_an_unhealthy_p0_sends_everything_to_p1(policy: str) -> None:
    hosts = [
        Host("a:1", 1, healthy=False),
        Host("b:1", 1, healthy=False),
        Host("c:1", 1, priority=1),
    ]
    b = build(policy, hosts)
    assert b.plan.loads == (0, 100)
    assert {b.pick(0.0, k).key for k in range(100)} == {"c:1"}  # type: ignore[union-attr]


# -- round robin --------------------------------------------------------------------


def test_smooth_round_robin_is_nginx_example() -> None:
    """nginx's commit message example: weights {5, 1, 1} give a a b a c a a."""
    b = build("round_robin", [Host("a", 5), Host("b", 1), Host("c", 1)])
    assert keys(b, 14) == "aabacaa" * 2


def test_round_robin_over_equal_weights_is_a_rotation() -> None:
    b = build("round_robin", [Host("c", 3), Host("a", 3), Host("b", 3)])
    assert keys(b, 7) == "abcabca"


def test_localities_are_weighted_by_their_health() -> None:
    """x: 2 healthy hosts, weight 2. y: 1 of 2 healthy, weight 2 * min(1, 1.4 * 0.5) = 1.4."""
    hosts = [
        Host("x1", 1, locality="x"),
        Host("x2", 1, locality="x"),
        Host("y1", 1, locality="y"),
        Host("y2", 1, locality="y", healthy=False),
    ]
    b = build("round_robin", hosts)
    counts = Counter(b.pick(0.0).key for _ in range(340))  # type: ignore[union-attr]
    assert counts == {"x1": 100, "x2": 100, "y1": 140}


# -- least request ------------------------------------------------------------------


def test_two_choices_take_the_less_busy() -> None:
    hosts = HostSet([Host("a", 1), Host("b", 1), Host("c", 1)])
    busy = {"a": 5, "b": 1, "c": 1}
    rng = ScriptedRandom()
    b = make_balancer("least_request", hosts, rng, active=lambda h: busy[h.key])
    rng.choose([0, 1], 3)  # a or b: b
    rng.choose([1, 2], 3)  # b or c, a tie: the first sampled, b
    rng.choose([2, 1], 3)  # c or b: c
    rng.choose([0, 0], 3)  # a twice: a, busy as it is
    assert keys(b, 4) == "bbca"


def test_weighted_least_request_divides_weight_by_load() -> None:
    """a: weight 4 with 3 in flight -> 4 / (3 + 1) = 1; b: weight 2, idle -> 2. b gets 2/3."""
    b = build("least_request", [Host("a", 4), Host("b", 2)], active={"a": 3})
    counts = Counter(keys(b, 300))
    assert abs(counts["b"] - 200) <= 2


def test_weighted_least_request_with_bias_zero_ignores_load() -> None:
    options = BalancerOptions(active_request_bias=0.0)
    b = build("least_request", [Host("a", 4), Host("b", 2)], options, active={"a": 30})
    counts = Counter(keys(b, 300))
    assert abs(counts["a"] - 200) <= 2


def test_bias_sharpens_the_load_penalty() -> None:
    """bias 2: a's weight 4 / (1 + 1) ** 2 = 1 against b's 2."""
    options = BalancerOptions(active_request_bias=2.0)
    b = build("least_request", [Host("a", 4), Host("b", 2)], options, active={"a": 1})
    assert abs(Counter(keys(b, 300))["b"] - 200) <= 2


# -- consistent hashing --------------------------------------------------------------


def test_hash_key_is_stable_and_64_bit() -> None:
    assert hash_key("user-42") == 12029086546990375023
    assert hash_key(b"") == 13020603013274838756
    assert hash_key("10.0.0.1") == hash_key(b"10.0.0.1") == 16574176683607101011
    assert all(0 <= hash_key(str(i)) < 2**64 for i in range(100))


@pytest.mark.parametrize("policy", ["ring_hash", "maglev"])
def test_a_key_sticks_and_no_key_spreads(policy: str) -> None:
    hosts = [Host(f"10.0.0.{i}:80", 1) for i in range(5)]
    b = build(policy, hosts, BalancerOptions(maglev_table_size=1009))
    key = hash_key("session-1")
    assert len({b.pick(0.0, key) for _ in range(50)}) == 1
    assert len({b.pick(0.0) for _ in range(200)}) == 5


@pytest.mark.parametrize("policy", ["ring_hash", "maglev"])
def test_hash_policies_follow_weights(policy: str) -> None:
    """Weight 3 against 1: about 3/4 of 20,000 keys (ring: b's 512 points, +-4.4%)."""
    b = build(policy, [Host("a", 3), Host("b", 1)])
    counts = Counter(b.pick(0.0, hash_key(str(i))).key for i in range(20_000))  # type: ignore[union-attr]
    assert 0.70 < counts["a"] / 20_000 < 0.80


def ring(weights: list[int], **options: int) -> tuple[RingHash[str], list[str]]:
    keys = [f"10.0.0.{i}:80" for i in range(len(weights))]
    return RingHash(keys, keys, [float(w) for w in weights], **options), keys


def test_ring_hash_gives_the_lightest_host_half_the_min_ring_size() -> None:
    """So two hosts make ``min_ring_size`` points, and more hosts more, in proportion."""
    r, (a, b) = ring([1, 1])
    assert (len(r), r.points(a), r.points(b)) == (1024, 512, 512)
    r, (a, b, c) = ring([2, 6, 3], min_ring_size=100)
    assert (len(r), r.points(a), r.points(b), r.points(c)) == (275, 50, 150, 75)
    assert r.points("10.9.9.9:80") == 0


def test_ring_hash_keeps_every_count_while_the_lightest_weight_holds() -> None:
    before, keys = ring([1, 3, 2])
    after, _ = ring([1, 3, 2, 1])
    assert after.scale == before.scale == 512
    assert [after.points(k) for k in keys] == [before.points(k) for k in keys]
    assert after.points("10.0.0.3:80") == 512


def test_ring_hash_rescales_when_a_lighter_host_joins() -> None:
    """The lightest weight halves: every other host's count doubles."""
    before, keys = ring([2, 4])
    after, _ = ring([2, 4, 1])
    assert [before.points(k) for k in keys] == [512, 1024]
    assert [after.points(k) for k in keys] == [1024, 2048]


def test_a_capped_ring_follows_the_total_weight() -> None:
    """10 equal hosts would make 5120 points: capped at 4096, 409.6 each, by coin."""
    r, keys = ring([1] * 10, max_ring_size=4096)
    assert r.scale == 409.6
    assert {r.points(k) for k in keys} <= {409, 410}
    assert abs(len(r) - 4096) < 10


@pytest.mark.parametrize("weights", [[1], [1, 1], [1, 3, 2], [1] * 40])
def test_ring_hash_picks_the_first_point_at_or_after_the_key(weights: list[int]) -> None:
    """The bucketed bisection agrees with a bisection of the whole ring, at every edge."""
    r, _ = ring(weights, min_ring_size=64)
    points = r._hashes  # white box: the reference needs the points
    edges = {0, 2**64 - 1, *points, *(p + 1 for p in points), *(p - 1 for p in points)}
    for key in sorted(k for k in edges if 0 <= k < 2**64):
        i = bisect_left(points, key)
        assert r.pick(key) == r._owners[i if i < len(points) else 0], key


def test_the_balancer_picks_from_the_ring_of_its_hosts() -> None:
    hosts = [Host(f"10.0.0.{i}:80", w) for i, w in enumerate([1, 3, 2])]
    b = build("ring_hash", hosts)
    r = RingHash(hosts, [h.key for h in hosts], [float(h.weight) for h in hosts])
    assert all(b.pick(0.0, hash_key(str(i))) is r.pick(hash_key(str(i))) for i in range(2000))


def test_ring_hash_ignores_slow_start() -> None:
    hosts = [Host("a", 1), Host("b", 1, ready_at=100.0)]
    b = build("ring_hash", hosts, BalancerOptions(slow_start_window=60.0))
    early = [b.pick(100.0, k) for k in range(0, 2**64, 2**54)]
    late = [b.pick(1000.0, k) for k in range(0, 2**64, 2**54)]
    assert early == late


# -- slow start ---------------------------------------------------------------------


def test_slow_start_ramps_a_new_host() -> None:
    """a ready long ago, b ready at 100 with a 10 s window: 10%, then 50%, then all."""
    hosts = [Host("a", 1), Host("b", 1, ready_at=100.0)]
    b = build("round_robin", hosts, BalancerOptions(slow_start_window=10.0))
    assert Counter(keys(b, 110, now=100.0))["b"] == 10
    assert Counter(keys(b, 150, now=105.0))["b"] == 50
    assert Counter(keys(b, 2, now=110.0))["b"] == 1


def test_slow_start_floor_is_configurable() -> None:
    options = BalancerOptions(slow_start_window=10.0, slow_start_min_percent=25)
    b = build("random", [Host("a", 3), Host("b", 1, ready_at=50.0)], options, seed=3)
    assert balancing.slow_start_percent(50.0, 50.0, 10.0, 25) == 25
    counts = Counter(keys(b, 10_000, now=50.0))
    # b: 1 * 25 against a: 3 * 100, so 25/325 = 7.7% of picks
    assert 600 < counts["b"] < 950
