"""The toxic decisions against oracles: slices sum to the chunk and stay in bounds, a
pacer never beats its rate, a chain keeps every byte in order (and a limit exactly its
count), source matching is ``ipaddress``'s, and a machine that sends chunks while it
changes the toxics loses no byte and never writes out of order."""

from __future__ import annotations

import ipaddress
import random

from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from policies.toxics import (
    Close,
    LinkChain,
    Pacer,
    ToxicAttributes,
    ToxicSpec,
    Write,
    latency_delay,
    parse_source,
    roll,
    slice_sizes,
    source_matches,
)
from tests.strategies import seeds


@given(
    size=st.integers(0, 5000),
    average=st.integers(1, 300),
    variation_share=st.floats(0, 0.99),
    seed=seeds,
)
def test_slices_sum_to_the_chunk_and_stay_within_the_bound(
    size: int, average: int, variation_share: float, seed: int
) -> None:
    variation = int(average * variation_share)  # validation: variation < average
    sizes = slice_sizes(size, average, variation, random.Random(seed))
    assert sum(sizes) == size
    assert all(0 < s <= average + variation for s in sizes)


@given(
    rate=st.integers(1, 10_000),
    sizes=st.lists(st.integers(1, 100_000), min_size=1, max_size=20),
    gaps=st.lists(st.floats(0, 2), min_size=20, max_size=20),
)
def test_a_pacer_never_sends_faster_than_its_rate(
    rate: int, sizes: list[int], gaps: list[float]
) -> None:
    pacer = Pacer(rate)
    earliest = 0.0
    booked: list[tuple[float, int]] = []
    for size, gap in zip(sizes, gaps, strict=False):
        earliest += gap
        at = pacer.reserve(size, earliest)
        assert at >= earliest
        booked.append((at, size))
    # between any two bookings, the earlier ones' bytes took their time at the rate
    for i in range(1, len(booked)):
        before = sum(size for _, size in booked[i - 1 : i])
        assert booked[i][0] - booked[i - 1][0] >= before / (rate * 1000.0) - 1e-9


@given(latency=st.integers(0, 1000), jitter=st.integers(-5, 500), seed=seeds)
def test_latency_is_within_its_jitter_and_never_negative(
    latency: int, jitter: int, seed: int
) -> None:
    delay = latency_delay(latency, jitter, random.Random(seed))
    spread = max(jitter, 0)
    assert max(latency - spread, 0) / 1000 <= delay
    assert delay < (latency + spread) / 1000 or (spread == 0 and delay == latency / 1000)


@given(seed=seeds)
def test_toxicity_zero_never_rolls_on_and_one_always_does(seed: int) -> None:
    rng = random.Random(seed)
    assert not any(roll(0.0, rng) for _ in range(100))
    assert all(roll(1.0, rng) for _ in range(100))


addresses = st.one_of(
    st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str), st.just("unknown")
)
networks = st.one_of(
    st.tuples(st.ip_addresses(v=4), st.integers(0, 32)),
    st.tuples(st.ip_addresses(v=6), st.integers(0, 128)),
).map(lambda p: f"{p[0]}/{p[1]}")


@given(client=addresses, source=st.lists(networks, max_size=3))
def test_source_matching_is_network_membership(client: str, source: list[str]) -> None:
    parsed = tuple(parse_source(s) for s in source)
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        expected = not source
    else:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        expected = not source or any(address in n for n in parsed)
    assert source_matches(parsed, client) == expected


def test_an_ipv4_mapped_client_matches_its_ipv4_network() -> None:
    assert source_matches((parse_source("10.0.0.0/8"),), "::ffff:10.1.2.3")


PASSING = ["latency", "bandwidth", "slicer", "noop", "slow_close"]


@st.composite
def passing_specs(draw: st.DrawFn, name: str) -> ToxicSpec:
    """A toxic that keeps every byte (whatever its roll)."""
    kind = draw(st.sampled_from(PASSING))
    average = draw(st.integers(1, 64))
    return ToxicSpec(
        name=name,
        type=kind,
        toxicity=draw(st.sampled_from([0.0, 0.5, 1.0])),
        attributes=ToxicAttributes(
            latency=draw(st.integers(0, 500)),
            jitter=draw(st.integers(0, 100)),
            rate=draw(st.integers(1, 1000)),
            shared=draw(st.booleans()),
            delay=draw(st.integers(0, 2000)),
            average_size=average,
            size_variation=draw(st.integers(0, average - 1)),
        ),
    )


@given(
    limit=st.integers(0, 300),
    chunks=st.lists(st.binary(min_size=1, max_size=100), min_size=1, max_size=8),
    seed=seeds,
)
def test_limit_data_passes_exactly_its_bytes_then_closes(
    limit: int, chunks: list[bytes], seed: int
) -> None:
    spec = ToxicSpec(name="cap", type="limit_data", attributes=ToxicAttributes(bytes=limit))
    chain = LinkChain.build([spec], "127.0.0.1", random.Random(seed), 0.0)
    written = b""
    closed = False
    for i, chunk in enumerate(chunks):
        for step in chain.on_chunk(chunk, float(i), float(i)):
            if isinstance(step, Close):
                closed = True
                break
            written += step.data
        if closed:
            break
    sent = b"".join(chunks)
    assert written == sent[:limit]
    assert closed == (len(sent) >= limit)


class ChainMachine(RuleBasedStateMachine):
    """Chunks through one link while its listener's toxics change: no byte is lost or
    reordered, and a plan's times never go backwards."""

    def __init__(self) -> None:
        super().__init__()
        self.rng = random.Random(0)
        self.now = 0.0
        self.specs: list[ToxicSpec] = []
        self.chain = LinkChain.build([], "127.0.0.1", self.rng, self.now)
        self.sent = b""
        self.written = b""
        self.shared: dict[str, Pacer] = {}

    @rule(seed=seeds)
    def reseed(self, seed: int) -> None:
        self.rng.seed(seed)

    @rule(dt=st.floats(0, 2))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule(data=st.binary(min_size=1, max_size=300))
    def chunk(self, data: bytes) -> None:
        self.sent += data
        plan = self.chain.on_chunk(data, self.now, self.now)
        times = [step.at for step in plan]
        assert times == sorted(times)
        assert all(isinstance(step, Write) and step.at >= self.now for step in plan)
        self.written += b"".join(step.data for step in plan if isinstance(step, Write))

    @rule(
        specs=st.lists(st.sampled_from(["a", "b", "c"]), unique=True).flatmap(
            lambda names: st.tuples(*(passing_specs(n) for n in names))
        )
    )
    def change_toxics(self, specs: tuple[ToxicSpec, ...]) -> None:
        before = {s.spec.name: s for s in self.chain.stages}
        for spec in specs:
            if spec.attributes.shared and spec.type == "bandwidth":
                self.shared.setdefault(spec.name, Pacer(spec.attributes.rate))
        self.chain = self.chain.rebuilt(specs, "127.0.0.1", self.now, self.shared)
        assert not self.chain.closes
        for stage in self.chain.stages:
            old = before.get(stage.spec.name)
            if old is not None and old.spec == stage.spec:
                assert stage is old  # unchanged: roll and state kept

    @invariant()
    def every_byte_in_order(self) -> None:
        assert self.written == self.sent

    @invariant()
    def eof_never_before_now(self) -> None:
        assert self.chain.on_eof(self.now) >= self.now


TestChainMachine = ChainMachine.TestCase
