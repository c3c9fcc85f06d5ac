"""Datagram toxics: loss shares against ``percent``, delays within Toxiproxy's jitter range,
the rolls of ``toxicity`` and ``source``, and re-rolls that keep what did not change."""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable

from hypothesis import given
from hypothesis import strategies as st

from policies.datagram_toxics import NO_TOXICS, decide, roll_session, source_holds
from policies.toxics import Stream, ToxicAttributes, ToxicSpec, latency_delay, parse_source
from tests.strategies import at_most, seeds, share_tolerance

CLIENT = ipaddress.ip_address("192.0.2.7")
streams = st.sampled_from(["upstream", "downstream"])
latencies = st.builds(
    ToxicSpec,
    name=st.just("lat"),
    type=st.just("latency"),
    stream=streams,
    attributes=st.builds(
        ToxicAttributes, latency=st.integers(0, 5000), jitter=st.integers(-10, 5000)
    ),
)
losses = st.builds(
    ToxicSpec,
    name=st.just("loss"),
    type=st.just("packet_loss"),
    stream=streams,
    attributes=st.builds(
        ToxicAttributes, percent=st.one_of(st.sampled_from([0.0, 100.0]), st.floats(0, 100))
    ),
)


def latency(ms: int, name: str = "t", toxicity: float = 1.0) -> ToxicSpec:
    """A latency toxic of ``ms``."""
    return ToxicSpec(name, "latency", toxicity=toxicity, attributes=ToxicAttributes(latency=ms))


def loss(percent: float, stream: Stream = "downstream", source: Iterable[str] = ()) -> ToxicSpec:
    """A packet_loss toxic dropping ``percent``; ``source`` strings parsed."""
    return ToxicSpec(
        "t",
        "packet_loss",
        stream,
        attributes=ToxicAttributes(percent=percent),
        source=tuple(parse_source(s) for s in source),
    )


@given(toxic=latencies, seed=seeds)
def test_a_delay_is_within_latency_plus_or_minus_jitter(toxic: ToxicSpec, seed: int) -> None:
    rng = random.Random(seed)
    a = toxic.attributes
    jitter = max(a.jitter, 0)
    for _ in range(50):
        delay = decide((toxic,), rng)
        assert delay is not None
        ms = round(delay * 1000)
        assert delay >= 0.0
        # Toxiproxy's U[-jitter, +jitter) in whole ms; a negative total is no delay
        assert max(a.latency - jitter, 0) <= ms < a.latency + jitter + (jitter == 0)
        if jitter == 0:
            assert ms == a.latency


@at_most(30)
@given(toxic=losses, seed=seeds)
def test_the_loss_share_is_percent(toxic: ToxicSpec, seed: int) -> None:
    rng = random.Random(seed)
    picks = 5000
    dropped = sum(decide((toxic,), rng) is None for _ in range(picks))
    percent = toxic.attributes.percent
    share = percent / 100
    assert abs(dropped / picks - share) <= share_tolerance(picks, share)
    if percent == 0:
        assert dropped == 0
    if percent == 100:
        assert dropped == picks


@given(chain=st.lists(st.one_of(latencies, losses), max_size=5), seed=seeds)
def test_a_chain_drops_or_delays_by_the_sum_of_its_latencies(
    chain: list[ToxicSpec], seed: int
) -> None:
    # the same draws, replayed toxic by toxic: the oracle
    verdict = decide(tuple(chain), random.Random(seed))
    rng = random.Random(seed)
    total = 0.0
    for toxic in chain:
        if toxic.type == "packet_loss":
            if rng.random() * 100 < toxic.attributes.percent:
                assert verdict is None
                return
        else:
            total += latency_delay(toxic.attributes.latency, toxic.attributes.jitter, rng)
    assert verdict == total


@at_most(30)
@given(toxicity=st.floats(0, 1), seed=seeds)
def test_toxicity_is_the_share_of_sessions_that_get_the_toxic(toxicity: float, seed: int) -> None:
    rng = random.Random(seed)
    toxic = latency(10, name="t", toxicity=toxicity)
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
    toxic = loss(100, stream="upstream", source=networks)
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
    toxic = loss(100, source=["192.0.2.0/24"])
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
    toxics = [latency(i, name=f"t{i}", toxicity=t) for i, t in enumerate(toxicities)]
    first = roll_session(toxics, CLIENT, rng)
    after = [
        latency(t.attributes.latency + 1, name=t.name, toxicity=t.toxicity) if i in changed else t
        for i, t in enumerate(toxics)
    ]
    second = roll_session(after, CLIENT, rng, first)
    for i, toxic in enumerate(toxics):
        if i not in changed:
            assert second.rolls[toxic.name][1] == first.rolls[toxic.name][1]
    # the chain keeps the listener's order
    assert [t.name for t in second.downstream] == [t.name for t in after if second.rolls[t.name][1]]
    assert roll_session([], CLIENT, rng, second) is NO_TOXICS
