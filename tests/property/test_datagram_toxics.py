"""Datagram toxics: loss shares against ``percent``, delays within Toxiproxy's jitter range,
the rolls of ``toxicity`` and ``source``, and re-rolls that keep what did not change."""

from __future__ import annotations

import ipaddress
import random

from hypothesis import given
from hypothesis import strategies as st

from policies.datagram_toxics import (
    NO_TOXICS,
    DatagramToxic,
    decide,
    latency_delay,
    roll_session,
    source_holds,
)
from tests.strategies import at_most, seeds, share_tolerance

CLIENT = ipaddress.ip_address("192.0.2.7")
streams = st.sampled_from(["upstream", "downstream"])
latencies = st.builds(
    DatagramToxic,
    name=st.just("lat"),
    type=st.just("latency"),
    stream=streams,
    latency=st.integers(0, 5000),
    jitter=st.integers(-10, 5000),
)
losses = st.builds(
    DatagramToxic,
    name=st.just("loss"),
    type=st.just("packet_loss"),
    stream=streams,
    percent=st.one_of(st.sampled_from([0.0, 100.0]), st.floats(0, 100)),
)


@given(toxic=latencies, seed=seeds)
def test_a_delay_is_within_latency_plus_or_minus_jitter(toxic: DatagramToxic, seed: int) -> None:
    rng = random.Random(seed)
    jitter = max(toxic.jitter, 0)
    for _ in range(50):
        delay = latency_delay(toxic, rng)
        ms = round(delay * 1000)
        assert delay >= 0.0
        # Toxiproxy's U[-jitter, +jitter) in whole ms; a negative total is no delay
        assert max(toxic.latency - jitter, 0) <= ms < toxic.latency + jitter + (jitter == 0)
        if jitter == 0:
            assert ms == toxic.latency


@at_most(30)
@given(toxic=losses, seed=seeds)
def test_the_loss_share_is_percent(toxic: DatagramToxic, seed: int) -> None:
    rng = random.Random(seed)
    picks = 5000
    dropped = sum(decide((toxic,), rng) is None for _ in range(picks))
    share = toxic.percent / 100
    assert abs(dropped / picks - share) <= share_tolerance(picks, share)
    if toxic.percent == 0:
        assert dropped == 0
    if toxic.percent == 100:
        assert dropped == picks


@given(chain=st.lists(st.one_of(latencies, losses), max_size=5), seed=seeds)
def test_a_chain_drops_or_delays_by_the_sum_of_its_latencies(
    chain: list[DatagramToxic], seed: int
) -> None:
    # the same draws, replayed toxic by toxic: the oracle
    verdict = decide(tuple(chain), random.Random(seed))
    rng = random.Random(seed)
    total = 0.0
    for toxic in chain:
        if toxic.type == "packet_loss":
            if rng.random() * 100 < toxic.percent:
                assert verdict is None
                return
        else:
            total += latency_delay(toxic, rng)
    assert verdict == total


@at_most(30)
@given(toxicity=st.floats(0, 1), seed=seeds)
def test_toxicity_is_the_share_of_sessions_that_get_the_toxic(toxicity: float, seed: int) -> None:
    rng = random.Random(seed)
    toxic = DatagramToxic("t", "latency", toxicity=toxicity, latency=10)
    sessions = 3000
    got = sum(bool(roll_session([toxic], CLIENT, rng).downstream) for _ in range(sessions))
    assert abs(got / sessions - toxicity) <= share_tolerance(sessions, toxicity)


@given(
    networks=st.lists(st.sampled_from(["192.0.2.0/24", "198.51.100.0/24", "::/0", "10.0.0.1"])),
    client=st.sampled_from(["192.0.2.7", "198.51.100.1", "10.0.0.1", "2001:db8::1"]),
    seed=seeds,
)
def test_a_source_restriction_keeps_the_toxic_off_other_clients(
    networks: list[str], client: str, seed: int
) -> None:
    toxic = DatagramToxic("t", "packet_loss", "upstream", percent=100, source=tuple(networks))
    address = ipaddress.ip_address(client)
    holds = not networks or any(
        address.version == ipaddress.ip_network(n).version and address in ipaddress.ip_network(n)
        for n in networks
    )
    assert source_holds(toxic, address) == holds
    rolled = roll_session([toxic], address, random.Random(seed))
    assert rolled.upstream == ((toxic,) if holds else ())
    assert rolled.downstream == ()


def test_an_ipv4_mapped_client_matches_its_ipv4_network() -> None:
    toxic = DatagramToxic("t", "packet_loss", source=("192.0.2.0/24",))
    assert source_holds(toxic, ipaddress.ip_address("::ffff:192.0.2.9"))


@given(
    toxicities=st.lists(st.floats(0, 1), min_size=1, max_size=6),
    changed=st.sets(st.integers(0, 5)),
    seed=seeds,
)
def test_a_re_roll_keeps_the_rolls_of_unchanged_toxics(
    toxicities: list[float], changed: set[int], seed: int
) -> None:
    rng = random.Random(seed)
    toxics = [
        DatagramToxic(f"t{i}", "latency", toxicity=t, latency=i) for i, t in enumerate(toxicities)
    ]
    first = roll_session(toxics, CLIENT, rng)
    after = [
        DatagramToxic(t.name, "latency", toxicity=t.toxicity, latency=t.latency + 1)
        if i in changed
        else t
        for i, t in enumerate(toxics)
    ]
    second = roll_session(after, CLIENT, rng, first)
    for i, toxic in enumerate(toxics):
        if i not in changed:
            assert second.rolls[toxic.name][1] == first.rolls[toxic.name][1]
    # the chain keeps the listener's order
    assert [t.name for t in second.downstream] == [t.name for t in after if second.rolls[t.name][1]]
    assert roll_session([], CLIENT, rng, second) is NO_TOXICS
