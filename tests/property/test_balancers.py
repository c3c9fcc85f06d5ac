"""Property tests of the load balancers (policies.balancing).

Each test states what it checks and, where the check is statistical, the bound and
where it comes from. Statistical examples draw their seed from Hypothesis, so every
example is deterministic and a failure replays exactly.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from fractions import Fraction

from hypothesis import assume, given, note
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from policies.balancing import (
    BalancerOptions,
    ClusterBalancer,
    hash_key,
    make_balancer,
    slow_start_percent,
)
from policies.balancing.pickers import CYCLE_LIMIT, smooth_round_robin
from policies.balancing.ring_hash import RingHash
from policies.balancing.slow_start import next_slow_start_change
from policies.hosts import Host, HostSet
from tests.strategies import (
    ScriptedRandom,
    at_most,
    balancer_options,
    host_keys,
    host_lists,
    host_sets,
    localities,
    policies,
    seeds,
    share_tolerance,
    weights,
)

SAMPLE_KEYS = tuple(hash_key(f"client-{i}") for i in range(4000))


def idle(host: Host) -> int:
    return 0


def balancer(
    policy: str,
    hosts: HostSet,
    seed: int = 0,
    options: BalancerOptions | None = None,
    active: dict[str, int] | None = None,
) -> ClusterBalancer:
    counts = active if active is not None else {}
    return make_balancer(
        policy,
        hosts,
        random.Random(seed),
        options or BalancerOptions(),
        active=lambda h: counts.get(h.key, 0),
    )


def nginx_smooth_round_robin(weights: Sequence[int]) -> Iterator[int]:
    """nginx's ngx_http_upstream_get_peer, verbatim in Python: the reference."""
    current = [0] * len(weights)
    total = sum(weights)
    while True:
        best = -1
        for i, w in enumerate(weights):
            current[i] += w
            if best < 0 or current[i] > current[best]:
                best = i
        current[best] -= total
        yield best


# -- round robin ------------------------------------------------------------------


@given(
    weights=st.lists(st.integers(1, 30), min_size=1, max_size=10),
    cycle_limit=st.sampled_from([0, CYCLE_LIMIT]),
)
def test_smooth_round_robin_is_nginx_pick_for_pick(weights: list[int], cycle_limit: int) -> None:
    """Both implementations (precomputed cycle, weight classes) make nginx's choices.

    Exact: no tolerance, for three cycles, which cover the end-of-cycle reset twice.
    """
    picker = smooth_round_robin(list(range(len(weights))), weights, cycle_limit=cycle_limit)
    reference = nginx_smooth_round_robin(weights)
    for _ in range(3 * sum(weights)):
        assert picker.pick(0) == next(reference)


@given(hosts=host_sets(max_size=10, locality=localities), seed=seeds, cycles=st.integers(1, 3))
def test_round_robin_gives_each_host_its_weight_every_cycle(
    hosts: HostSet, seed: int, cycles: int
) -> None:
    """Over each full cycle (sum of weights picks) every host is picked exactly its weight.

    Exact, with several localities too: each locality is then picked its total weight
    times per cycle, and a whole number of its own cycles runs inside it.
    """
    b = balancer("round_robin", hosts, seed)
    total = sum(h.weight for h in hosts)
    for _ in range(cycles):
        counts = Counter(b.pick(0.0).key for _ in range(total))  # type: ignore[union-attr]
        assert counts == {h.key: h.weight for h in hosts}


# -- random and least request: long-run shares ------------------------------------

PICKS = 20_000


@at_most(100)
@given(hosts=host_sets(max_size=8), seed=seeds, policy=st.sampled_from(["random", "least_request"]))
def test_random_and_idle_least_request_shares_converge_to_weights(
    hosts: HostSet, seed: int, policy: str
) -> None:
    """Each host's share of 20,000 picks is its weight share, within a Bernstein bound.

    ``random`` draws independently with P = weight / total. ``least_request`` with no
    requests in flight: equal weights sample two hosts and keep the first (a uniform
    draw); unequal weights follow the EDF schedule, which is tighter still. The bound
    (``share_tolerance``, delta = 1e-9 per host) holds for any such independent draws.
    One locality: the locality layer is the same code for every policy and is checked
    exactly by the round-robin test above.
    """
    b = balancer(policy, hosts, seed)
    counts = Counter(b.pick(0.0).key for _ in range(PICKS))  # type: ignore[union-attr]
    total = sum(h.weight for h in hosts)
    for h in hosts:
        share = h.weight / total
        observed = counts[h.key] / PICKS
        assert abs(observed - share) <= share_tolerance(PICKS, share), (h, observed, share)


@given(
    hosts=host_lists(min_size=2, max_size=8),
    seed=seeds,
    picks=st.integers(1, 500),
)
def test_weighted_least_request_when_idle_tracks_weights_within_one_round(
    hosts: list[Host], seed: int, picks: int
) -> None:
    """Unequal weights, nothing in flight: the EDF schedule is deterministic and tight.

    After N picks every host i has count_i with -1 <= count_i - N w_i / W <= n w_i / W
    (n hosts, W total weight): every deadline before the last one served was served, and
    none after it. Widened by one pick each way for floating-point deadline ties.
    """
    assume(len({h.weight for h in hosts}) > 1)
    b = balancer("least_request", HostSet(hosts), seed)
    counts = Counter(b.pick(0.0).key for _ in range(picks))  # type: ignore[union-attr]
    total = sum(h.weight for h in hosts)
    for h in hosts:
        drift = counts[h.key] - picks * h.weight / total
        assert -2 <= drift <= len(hosts) * h.weight / total + 1, (h, drift)


@given(
    active=st.lists(st.integers(0, 50), min_size=2, max_size=10),
    weight=weights,
    choice_count=st.integers(2, 4),
    data=st.data(),
)
def test_least_request_never_picks_a_busier_candidate(
    active: list[int], weight: int, choice_count: int, data: st.DataObject
) -> None:
    """With equal weights the pick has the fewest active requests of the hosts sampled.

    Exact: the rng is scripted to sample chosen hosts, so the candidates are known; ties
    go to the first sampled, as in Envoy.
    """
    keys = data.draw(host_keys(min_size=len(active), max_size=len(active)))
    hosts = HostSet(Host(k, weight) for k in keys)
    in_flight = {h.key: a for h, a in zip(hosts.hosts, active, strict=True)}
    rng = ScriptedRandom()
    b = make_balancer(
        "least_request",
        hosts,
        rng,
        BalancerOptions(choice_count=choice_count),
        active=lambda h: in_flight[h.key],
    )
    n = len(keys)
    for _ in range(10):
        sampled = data.draw(
            st.lists(st.integers(0, n - 1), min_size=choice_count, max_size=choice_count)
        )
        rng.choose(sampled, n)
        picked = b.pick(0.0)
        candidates = [hosts.hosts[i] for i in sampled]
        fewest = min(in_flight[c.key] for c in candidates)
        expected = next(c for c in candidates if in_flight[c.key] == fewest)
        assert picked is expected


# -- health and panic, across every policy: a state machine -----------------------


class BalancerMachine(RuleBasedStateMachine):
    """A cluster whose hosts come, go, fail and recover; a balancer per snapshot.

    Invariants, exact: a pick is None only when no host can be picked (none of positive
    weight, or none healthy with panic disabled); a picked host belongs to the snapshot,
    has positive weight, sits in a level with load, and is healthy unless its level is
    in panic; the hash policies map a key to the same host every time.
    """

    def __init__(self) -> None:
        super().__init__()
        self.hosts: dict[str, Host] = {}
        self.now = 1000.0
        self.policy = "round_robin"
        self.options = BalancerOptions()
        self.seed = 0
        self.active: dict[str, int] = {}
        self.balancer = self.rebuild()

    def rebuild(self) -> ClusterBalancer:
        self.balancer = balancer(
            self.policy, HostSet(self.hosts.values()), self.seed, self.options, self.active
        )
        return self.balancer

    @initialize(policy=policies, options=balancer_options(slow_start=True), seed=seeds)
    def configure(self, policy: str, options: BalancerOptions, seed: int) -> None:
        self.policy, self.options, self.seed = policy, options, seed
        self.rebuild()

    @rule(
        n=st.integers(0, 2**20),
        weight=st.integers(0, 5),
        priority=st.integers(0, 2),
        locality=localities,
        healthy=st.booleans(),
    )
    def add_host(self, n: int, weight: int, priority: int, locality: str, healthy: bool) -> None:
        key = f"10.0.{n >> 8 & 255}.{n & 255}:{8000 + (n >> 16)}"
        self.hosts[key] = Host(key, weight, priority, locality, healthy, ready_at=self.now)
        self.rebuild()

    @precondition(lambda self: self.hosts)
    @rule(data=st.data())
    def remove_host(self, data: st.DataObject) -> None:
        del self.hosts[data.draw(st.sampled_from(sorted(self.hosts)))]
        self.rebuild()

    @precondition(lambda self: self.hosts)
    @rule(data=st.data(), healthy=st.booleans())
    def set_health(self, data: st.DataObject, healthy: bool) -> None:
        host = self.hosts[data.draw(st.sampled_from(sorted(self.hosts)))]
        if host.healthy != healthy:
            ready_at = self.now if healthy else host.ready_at
            self.hosts[host.key] = Host(
                host.key, host.weight, host.priority, host.locality, healthy, ready_at
            )
            self.rebuild()

    @precondition(lambda self: self.hosts)
    @rule(data=st.data(), active=st.integers(0, 20))
    def set_active(self, data: st.DataObject, active: int) -> None:
        self.active[data.draw(st.sampled_from(sorted(self.hosts)))] = active

    @rule(dt=st.floats(0, 30))
    def advance_clock(self, dt: float) -> None:
        self.now += dt

    @rule(keys=st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=20))
    def pick(self, keys: list[int]) -> None:
        b = self.balancer
        levels = b.hosts.levels
        index = {level.priority: i for i, level in enumerate(levels)}
        # With panic disabled and no level healthy enough to register, Envoy sends all
        # load to P0's healthy hosts: none. Otherwise some level can always serve.
        pickable = bool(levels) and (self.options.panic_threshold > 0 or sum(b.plan.health) > 0)
        for key in keys:
            host = b.pick(self.now, key)
            note(f"{self.policy} picked {host} for {key}")
            if host is None:
                assert not pickable
                continue
            assert pickable
            assert b.hosts.get(host.key) is host
            assert host.weight > 0
            level = index[host.priority]
            assert b.plan.loads[level] > 0
            assert host.healthy or b.plan.panic[level]
            if self.policy in ("ring_hash", "maglev"):
                assert b.pick(self.now, key) is host

    @invariant()
    def loads_add_up(self) -> None:
        loads = self.balancer.plan.loads
        assert sum(loads) == (100 if loads else 0)


TestBalancerMachine = BalancerMachine.TestCase
TestBalancerMachine.settings = at_most(200, stateful_step_count=40)


# -- consistent hashing -----------------------------------------------------------

mixed_hosts = host_lists(
    max_size=10,
    priority=st.integers(0, 1),
    locality=localities,
    healthy=st.booleans(),
)


@at_most(100)
@given(
    hosts=mixed_hosts,
    policy=st.sampled_from(["ring_hash", "maglev"]),
    seeds=st.tuples(seeds, seeds),
    order=st.randoms(use_true_random=False),
)
def test_rebuilding_the_same_hosts_maps_every_key_the_same(
    hosts: list[Host], policy: str, seeds: tuple[int, int], order: random.Random
) -> None:
    """Same hosts, any order, any rng: identical mapping for every key. Exact.

    Priorities, localities and health vary, so the priority choice and the locality
    weighting are covered as well as the ring and the table.
    """
    options = BalancerOptions(min_ring_size=256, maglev_table_size=1009)
    shuffled = hosts[:]
    order.shuffle(shuffled)
    a = balancer(policy, HostSet(hosts), seeds[0], options)
    b = balancer(policy, HostSet(shuffled), seeds[1], options)
    for key in SAMPLE_KEYS[:1000]:
        assert a.pick(0.0, key) == b.pick(0.0, key)


@at_most(100)
@given(
    hosts=host_lists(min_size=2, max_size=40, weight=st.integers(1, 10)),
    remove=st.booleans(),
)
def test_maglev_adding_or_removing_one_host_moves_about_its_share_of_keys(
    hosts: list[Host], remove: bool
) -> None:
    """One host joins (or leaves) N others: the keys that move stay near its share.

    ``ideal`` is the host's weight share, the least any scheme can move. With K = 4000
    sampled keys, sampling adds at most 4 sqrt(p / K) (4 sigma) to a fraction p. The
    bound is ideal + 0.01 (+ sampling): the table keeps each survivor's permutation, but
    freed or taken slots cascade a little: measured at most 0.008 of the table for
    N <= 120 at the default 65537 slots. (Ring hash: the tests below.)
    """
    joined, others = hosts[-1], hosts[:-1]
    before, after = HostSet(others), HostSet(hosts)
    if remove:
        before, after = after, before
    a = balancer("maglev", before)
    b = balancer("maglev", after)
    moved = sum(a.pick(0.0, k) != b.pick(0.0, k) for k in SAMPLE_KEYS) / len(SAMPLE_KEYS)
    ideal = joined.weight / sum(h.weight for h in hosts)
    bound = ideal + 0.01
    bound += 4 * math.sqrt(bound / len(SAMPLE_KEYS))
    note(f"moved {moved:.4f}, ideal {ideal:.4f}, bound {bound:.4f}")
    assert moved <= bound


# Ring hash, one host joining N others. Leaving is joining run backwards: the same keys
# move, so the tests build the ring without the host and with it and compare.

#: failure probability allowed to each statistical bound below, per example
RING_DELTA = 1e-9
_LOG_TERM = math.log(1 / RING_DELTA)


def ring_of(hosts: Sequence[Host], options: BalancerOptions) -> RingHash[Host]:
    """The ring ``ClusterBalancer`` builds for one healthy locality of ``hosts``."""
    return RingHash(
        hosts,
        [h.key for h in hosts],
        [float(h.weight) for h in hosts],
        min_ring_size=options.min_ring_size,
        max_ring_size=options.max_ring_size,
    )


def ring_capped(hosts: Sequence[Host], options: BalancerOptions) -> bool:
    """Whether ``ring_hash.py``'s rule caps the ring of these hosts (exact arithmetic)."""
    lightest = min(h.weight for h in hosts)
    natural = -(-options.min_ring_size // 2) * Fraction(sum(h.weight for h in hosts), lightest)
    return natural > options.max_ring_size


def arc_bound(points: float, ring_size: int) -> float:
    """The most of the ring that the arcs ending at ``points`` of its points cover.

    True with probability 1 - RING_DELTA when the ``ring_size`` points are independent
    and uniform (the hash as a random function) and which ``points`` of them are
    counted does not depend on where they fall; see the test below for the derivation.
    Increasing in ``points``, so a bound on the count gives a bound on the arcs.
    """
    if points <= 0:
        return 0.0
    if points >= ring_size:
        return 1.0
    log_term = _LOG_TERM
    reach = points + log_term + math.sqrt(log_term * log_term + 2 * points * log_term)
    return min(1.0, reach / (ring_size - 1))


ring_options = st.builds(
    BalancerOptions,
    min_ring_size=st.sampled_from([64, 256, 1024]),
    max_ring_size=st.sampled_from([2048, 16384]),
)


@at_most(100)
@given(
    hosts=host_lists(min_size=2, max_size=21),
    data=st.data(),
    min_ring_size=st.sampled_from([64, 256, 1024]),
    keys=st.lists(st.integers(0, 2**64 - 1), max_size=50),
)
def test_ring_hash_join_leaves_the_others_points_and_moves_keys_only_to_the_joiner(
    hosts: list[Host], data: st.DataObject, min_ring_size: int, keys: list[int]
) -> None:
    """The consistency property of ``ring_hash.py``'s point rule. Exact, every example.

    A host joins at no less than the lightest weight present, and the ring stays below
    ``max_ring_size`` (at most 21 hosts of weight <= 10: at most 210 lightest hosts'
    worth of points, 107,520 at the most, under the default 2**17). Then the scale is
    unchanged, every other host keeps its point count, hence its points; the joiner's
    share of points is its weight share up to the rounding of each count by less than
    a point, |k/M - ideal| < (1 + n ideal) / M for n hosts; and every key whose host
    differs between the rings without and with the joiner is the joiner's in the
    second: a join moves keys only to the joiner, a leave only the leaver's keys.
    """
    others = hosts[:-1]
    joined = Host(hosts[-1].key, data.draw(st.integers(min(h.weight for h in others), 10)))
    hosts = [*others, joined]
    options = BalancerOptions(min_ring_size=min_ring_size)
    assert not ring_capped(hosts, options)
    without, with_ = ring_of(others, options), ring_of(hosts, options)
    assert with_.scale == without.scale
    assert [with_.points(h.key) for h in others] == [without.points(h.key) for h in others]
    k, m = with_.points(joined.key), len(with_)
    ideal = joined.weight / sum(h.weight for h in hosts)
    assert len(without) == m - k
    assert abs(k / m - ideal) < (1 + len(hosts) * ideal) / m
    for key in (*SAMPLE_KEYS, *keys):
        if without.pick(key) is not with_.pick(key):
            assert with_.pick(key) is joined, key


@at_most(100)
@given(hosts=host_lists(min_size=2, max_size=40), options=ring_options)
def test_ring_hash_moves_only_the_keys_on_arcs_of_points_that_change(
    hosts: list[Host], options: BalancerOptions
) -> None:
    """A join moves at most the joiner's share of the ring's arcs, plus any rescale's.

    Which keys move: if a key's point p in the ring without the joiner is still in the
    ring with it, and its point q there was already in the ring without, then q <= p
    (q is the first point at or after the key with the joiner) and p <= q (likewise
    without), so p = q. A moved key therefore sits on an arc ending at a point only the
    ring with the joiner has (``added``, of the M' points in that ring) or only the ring
    without it has (``removed``, of M). Counts grow or shrink a host's points from the
    end of its list, so ``added`` and ``removed`` are sums of count differences.

    How much: the arcs ending at k of M uniform points, chosen without regard to
    position, span A ~ Beta(k, M - k): mean k/M, standard deviation about sqrt(k)/M.
    Beta(k, M - k) is the k-th smallest of M - 1 uniforms, so P(A > t) = P(Bin(M - 1,
    t) < k) <= exp(-((M - 1) t - k)^2 / (2 (M - 1) t)) by Chernoff's lower tail, which
    is delta = 1e-9 at t(k, M) = (k + L + sqrt(L^2 + 2 L k)) / (M - 1), L = ln(1/delta)
    = 20.7 (``arc_bound``). Given the rings, the K = 4000 sampled keys that move are
    Bin(K, A), at most A + ``share_tolerance(K, A)`` (Bernstein, delta = 1e-9).

    While the scale holds (``ring_hash.py``: the joiner is no lighter than the lightest
    other host and the ring is not capped), removed = 0 and added = k, the joiner's
    points, with k < ideal M' + 1 + n ideal for n hosts (the test above). Checked:

        moved <= t(ideal M' + 1 + n ideal, M') + sampling
              ~= ideal + sqrt(2 L ideal / M') + (L + 1 + n ideal) / M' + sampling

    that is about ideal (1 + 6.4 / sqrt(k)): 1.28 ideal for the 512 points of a lightest
    joiner at the default ``min_ring_size``, against the 2 ideal of a fixed-size ring.
    Otherwise the scale changed, and checked is

        moved <= t(added, M') + t(removed, M) + sampling

    about 2 ideal when the ring is capped (the others give up about ideal M points),
    and 1 - 1/r + ideal / r when the joiner is r times lighter than the lightest other
    (every other count grows r-fold).
    """
    joined, others = hosts[-1], hosts[:-1]
    without, with_ = ring_of(others, options), ring_of(hosts, options)
    moved = sum(without.pick(k) is not with_.pick(k) for k in SAMPLE_KEYS) / len(SAMPLE_KEYS)
    ideal = joined.weight / sum(h.weight for h in hosts)
    added = with_.points(joined.key)
    removed = 0
    for h in others:
        change = with_.points(h.key) - without.points(h.key)
        added += max(change, 0)
        removed += max(-change, 0)
    if joined.weight >= min(h.weight for h in others) and not (
        ring_capped(hosts, options) or ring_capped(others, options)
    ):
        most = ideal * len(with_) + 1 + len(hosts) * ideal
        arcs = arc_bound(most, len(with_))
    else:
        arcs = min(1.0, arc_bound(added, len(with_)) + arc_bound(removed, len(without)))
    bound = arcs + share_tolerance(len(SAMPLE_KEYS), arcs, RING_DELTA)
    note(f"moved {moved:.4f}, ideal {ideal:.4f}, +{added} -{removed} points, bound {bound:.4f}")
    assert moved <= bound


@at_most(100)
@given(hosts=host_lists(min_size=2, max_size=8), seed=seeds)
def test_maglev_without_a_key_picks_a_uniformly_random_slot(hosts: list[Host], seed: int) -> None:
    """No hash key: a random 64-bit key, so each host's frequency is its share of slots.

    The slot shares are counted exactly from the table (every key mod 1009); the
    20,000 keyless picks must match them within the Bernstein bound (delta = 1e-9).
    """
    options = BalancerOptions(maglev_table_size=1009)
    b = balancer("maglev", HostSet(hosts), seed, options)
    slots = Counter(b.pick(0.0, k).key for k in range(1009))  # type: ignore[union-attr]
    picks = Counter(b.pick(0.0).key for _ in range(PICKS))  # type: ignore[union-attr]
    for h in hosts:
        share = slots[h.key] / 1009
        assert abs(picks[h.key] / PICKS - share) <= share_tolerance(PICKS, share)


# -- slow start -------------------------------------------------------------------

instants = st.floats(-1e3, 1e4, allow_nan=False)


@given(
    ready_at=instants,
    window=st.floats(0.001, 600),
    floor=st.integers(1, 100),
    t=st.lists(instants, min_size=2, max_size=10),
)
def test_slow_start_percent_ramps_up_and_reaches_full_weight(
    ready_at: float, window: float, floor: int, t: list[float]
) -> None:
    """Non-decreasing in time, never below the floor, exactly 100 from the window's end.

    And the instant reported as the next change is in the future, with the percent
    unchanged until then. Exact.
    """
    t.sort()
    percents = [slow_start_percent(now, ready_at, window, floor) for now in t]
    assert percents == sorted(percents)
    assert all(floor <= p <= 100 for p in percents)
    assert slow_start_percent(ready_at + window, ready_at, window, floor) == 100
    for now, p in zip(t, percents, strict=True):
        if now >= ready_at + window:
            assert p == 100
        change = next_slow_start_change(now, ready_at, window, floor)
        assert change > now
        if math.isfinite(change):
            just_before = max(now, math.nextafter(change, -math.inf))
            assert slow_start_percent(just_before, ready_at, window, floor) == p


@at_most(100)
@given(
    hosts=host_lists(min_size=2, max_size=6, weight=st.integers(1, 5)),
    window=st.floats(1, 120),
    steps=st.lists(st.floats(0, 1.2), min_size=2, max_size=6),
)
def test_round_robin_ramps_a_new_host_up_to_its_weight(
    hosts: list[Host], window: float, steps: list[float]
) -> None:
    """A host added at ``ready_at`` gets, per round-robin cycle, exactly its ramped weight.

    At each instant its share over one full cycle is w p / (100 W_others + w p), with p
    its slow-start percent: exact, non-decreasing, and w / W from the window's end on.
    """
    ready_at = 500.0
    newcomer = attrs_evolve_ready(hosts[-1], ready_at)
    host_set = HostSet([*hosts[:-1], newcomer])
    others = sum(h.weight for h in hosts[:-1])
    b = balancer("round_robin", host_set, options=BalancerOptions(slow_start_window=window))
    last_share = 0.0
    for fraction in sorted(steps):
        now = ready_at + fraction * window
        p = slow_start_percent(now, ready_at, window, 10)
        effective = [100 * h.weight for h in hosts[:-1]] + [p * newcomer.weight]
        cycle = sum(effective) // math.gcd(*effective)
        picks = Counter(b.pick(now).key for _ in range(cycle))  # type: ignore[union-attr]
        ramped = newcomer.weight * p
        assert picks[newcomer.key] * (100 * others + ramped) == cycle * ramped
        share = picks[newcomer.key] / cycle
        assert share >= last_share
        last_share = share
    end = Counter(b.pick(ready_at + window).key for _ in range(others + newcomer.weight))  # type: ignore[union-attr]
    assert end[newcomer.key] == newcomer.weight


def attrs_evolve_ready(host: Host, ready_at: float) -> Host:
    return Host(host.key, host.weight, host.priority, host.locality, host.healthy, ready_at)
