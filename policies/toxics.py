"""Network toxics (Toxiproxy's): what one direction of one connection does with its bytes.

Theory of operation
-------------------
A *link* is one direction of one client connection: ``upstream`` (client to server) or
``downstream`` (server to client). It reads *chunks* (one read each, time-stamped when
read) and hands each to its ``LinkChain``: the listener's toxics of that stream, in
order, each *rolled* on or off for this link when the link starts (``roll``: on with
probability ``toxicity``, so 0 never and 1 always) and when that toxic is changed
(rolled again), and kept only if the client's address is in its ``source`` (none: every
client). A toxic rolled off is a pass-through, as Toxiproxy's stub is.

``LinkChain.on_chunk(data, stamp, now)`` returns the *plan* for one chunk: ``Write``
steps (bytes, and the time ``at`` before which they must not go out) and at most one
``Close`` (end the connection at ``at``, by RST if ``reset``), in order. The caller
carries the plan out: it sleeps until each ``at`` and writes, so order is kept. Each
stage maps the pieces the stage before it produced (Toxiproxy's semantics, see
``/work/shared/toxiproxy-contract.md`` section 8):

- ``latency``: a piece goes no earlier than ``stamp + latency + U[-jitter, +jitter)``
  ms (``latency_delay``; a negative total is no delay). Relative to the read time, so
  streamed data does not pile up delay.
- ``bandwidth``: ``rate`` KB/s, 1 KB = 1000 B, i.e. bytes per ms. A piece larger than
  ``rate * 100`` B goes in ``rate * 100`` B pieces, 100 ms apart; each reserves its
  time on a ``Pacer`` (a virtual clock, ``next_free``): the link's own, or with
  ``shared`` one for every link of the listener in that stream.
- ``slicer``: each piece is cut in halves recursively until a piece is at most
  ``average_size + size_variation`` B (each midpoint moved by ``U[-var, +var)``,
  ``slice_sizes``), written ``delay`` µs apart. All bytes are kept.
- ``limit_data``: at most ``bytes`` B pass (the chunk that crosses the limit is cut),
  then ``Close``. The count survives a change of the toxic (Toxiproxy keeps it).
- ``timeout``: drops every byte; with ``timeout > 0`` the link closes when that many ms
  pass with no chunk arriving (``close_deadline``: an idle timer re-armed by each chunk
  and started when the stage starts). Removing an active ``timeout`` closes the
  connection (``LinkChain.rebuilt(...).closes``), as Toxiproxy's does.
- ``reset_peer``: drops the first chunk and ends the connection by RST ``timeout`` ms
  later.
- ``slow_close``: bytes pass; the end of the stream (``on_eof``) is passed on ``delay``
  ms late (the delays of several add up).
- ``noop``, and ``slow_open`` (a delay before the upstream connection, decided once per
  connection by ``slow_open_delay``): pass-through here.

A change of the listener's toxics builds a new chain with ``LinkChain.rebuilt``: stages
whose toxic is unchanged keep their roll and state; a changed toxic is rolled again.

Pure and synchronous: ``now`` and ``stamp`` are seconds on the caller's clock, the
randomness is the injected ``rng``.
"""

from __future__ import annotations

import ipaddress
import math
import random
from collections.abc import Iterable, Sequence
from typing import Final, Literal, TypeAlias

import attrs

__all__ = [
    "CHUNK_TYPES",
    "Close",
    "LinkChain",
    "Network",
    "Pacer",
    "ToxicSpec",
    "Write",
    "latency_delay",
    "parse_source",
    "roll",
    "slice_sizes",
    "slow_open_delay",
    "source_matches",
]

Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
Stream = Literal["upstream", "downstream"]

#: the toxic types that act on a link's chunks (``slow_open`` acts before the connect;
#: ``packet_loss`` is for datagrams)
CHUNK_TYPES: Final = frozenset(
    {"latency", "bandwidth", "slow_close", "timeout", "reset_peer", "slicer", "limit_data", "noop"}
)
#: a bandwidth toxic's pieces go one per this many seconds (Toxiproxy's 100 ms)
BANDWIDTH_PERIOD: Final = 0.1


@attrs.frozen
class ToxicAttributes:
    """A toxic's settings; each type reads its own (Toxiproxy's names and units). The
    config's ``Toxic.attributes`` is this value."""

    #: latency: ms added to each chunk (datagram), and its jitter (+/- ms)
    latency: int = 0
    #: latency: +/- ms drawn per chunk (datagram)
    jitter: int = 0
    #: bandwidth: KB/s (1 KB = 1000 bytes, so bytes per ms), per connection and
    #: direction unless ``shared``
    rate: int = 0
    #: bandwidth: one rate for all of the listener's connections (in that direction)
    shared: bool = False
    #: slow_close, slow_open: ms; slicer: µs between the pieces
    delay: int = 0
    #: timeout, reset_peer: ms
    timeout: int = 0
    #: slicer: bytes per piece on average, and how far a piece may stray from it
    average_size: int = 0
    #: slicer: bytes a piece may stray from ``average_size``
    size_variation: int = 0
    #: limit_data: bytes forwarded before the connection is closed
    bytes: int = 0
    #: packet_loss (udp): percent of datagrams dropped
    percent: float = 0.0


@attrs.frozen
class ToxicSpec:
    """One toxic, as the decisions read it (the config's ``Toxic``, ``source`` parsed);
    the chunk decisions here and the datagram ones (``policies.datagram_toxics``) alike."""

    name: str
    type: str
    stream: Stream = "downstream"
    toxicity: float = 1.0
    attributes: ToxicAttributes = attrs.field(factory=ToxicAttributes)
    source: tuple[Network, ...] = ()


def parse_source(text: str) -> Network:
    """A ``source`` entry: an address (``10.0.0.7``) or a network (``10.0.0.0/8``);
    ``ValueError`` if it is neither."""
    return ipaddress.ip_network(text.strip(), strict=False)


def source_matches(source: Sequence[Network], client_ip: str) -> bool:
    """Whether a toxic restricted to ``source`` (empty: every client) acts on ``client_ip``.

    An IPv4 client seen as IPv4-mapped IPv6 (``::ffff:10.0.0.7``) matches IPv4 networks.
    A client address that does not parse matches only an unrestricted toxic.
    """
    if not source:
        return True
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in source)


def roll(toxicity: float, rng: random.Random) -> bool:
    """Whether a link gets a toxic of this ``toxicity`` (Toxiproxy's ``rand < toxicity``)."""
    return rng.random() < toxicity


def latency_delay(latency_ms: int, jitter_ms: int, rng: random.Random) -> float:
    """Seconds one chunk is held: ``latency + U[-jitter, +jitter)`` ms, never negative."""
    delay = latency_ms
    if jitter_ms > 0:
        delay += rng.randrange(2 * jitter_ms) - jitter_ms
    return max(delay, 0) / 1000.0


def slice_sizes(size: int, average: int, variation: int, rng: random.Random) -> list[int]:
    """The sizes a slicer cuts ``size`` bytes into, in order (they sum to ``size``).

    Toxiproxy's recursion: a piece more than ``variation`` above ``average`` is cut near
    its middle (moved by ``U[-variation, +variation)``). Unlike Toxiproxy, the cut is
    kept inside the piece (no empty piece, no out-of-range panic); validation refuses
    ``average <= 0`` and ``variation >= average``, which make it loop or stray.
    """
    if size <= 0:
        return []
    average = max(average, 1)
    sizes: list[int] = []
    stack = [(0, size)]
    while stack:
        start, end = stack.pop()
        if (end - start) - average <= variation:
            sizes.append(end - start)
            continue
        mid = start + (end - start) // 2
        if variation > 0:
            mid += rng.randrange(2 * variation) - variation
        mid = min(max(mid, start + 1), end - 1)
        stack.append((mid, end))  # the right half after the left one
        stack.append((start, mid))
    return sizes


def slow_open_delay(specs: Iterable[ToxicSpec], client_ip: str, rng: random.Random) -> float:
    """Seconds before a new connection's upstream connect: the ``slow_open`` toxics that
    act on this client (``source``) and are rolled on, added up."""
    total = 0
    for spec in specs:
        if (
            spec.type == "slow_open"
            and source_matches(spec.source, client_ip)
            and roll(spec.toxicity, rng)
        ):
            total += max(spec.attributes.delay, 0)
    return total / 1000.0


class Pacer:
    """A bandwidth toxic's clock: when its stream is free to send again.

    ``reserve(size, earliest)`` books ``size`` bytes at ``rate`` bytes per ms from
    ``max(earliest, next_free)`` on; time left unused is not saved up (no burst after a
    quiet spell). One pacer per link, or one per listener and stream with ``shared``.
    """

    __slots__ = ("next_free", "rate")

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.next_free = -math.inf

    def reserve(self, size: int, earliest: float) -> float:
        """The time ``size`` bytes may go out, no earlier than ``earliest``."""
        at = max(earliest, self.next_free)
        self.next_free = at + size / (self.rate * 1000.0)
        return at


@attrs.frozen
class Write:
    """Step: write ``data``, not before ``at``."""

    data: bytes
    at: float


@attrs.frozen
class Close:
    """Step: end the connection at ``at``; by RST if ``reset``, else a plain close."""

    at: float
    reset: bool = False


Step: TypeAlias = Write | Close
_Pieces: TypeAlias = list[tuple[bytes, float]]


@attrs.define
class _Stage:
    """One toxic of one link: its roll and its state."""

    spec: ToxicSpec
    active: bool
    pacer: Pacer | None = None
    #: limit_data: bytes passed so far
    passed: int = 0
    #: timeout: when the idle timer was last armed
    armed_at: float = 0.0
    #: reset_peer: the time the reset was planned for, once a chunk came
    reset_at: float | None = None


@attrs.define
class LinkChain:
    """One link's toxics in chain order, each rolled on or off, with their state.

    ``closes``: building this chain ended an active ``timeout`` toxic, which closes the
    connection (Toxiproxy's behaviour on removing it).
    """

    stages: list[_Stage]
    rng: random.Random
    closes: bool = False

    @classmethod
    def build(
        cls,
        specs: Iterable[ToxicSpec],
        client_ip: str,
        rng: random.Random,
        now: float,
        shared: dict[str, Pacer] | None = None,
    ) -> LinkChain:
        """A new link's chain: every toxic of its stream rolled for ``client_ip``."""
        return cls([], rng).rebuilt(specs, client_ip, now, shared)

    def rebuilt(
        self,
        specs: Iterable[ToxicSpec],
        client_ip: str,
        now: float,
        shared: dict[str, Pacer] | None = None,
    ) -> LinkChain:
        """The chain after the listener's toxics changed to ``specs``: a toxic unchanged
        keeps its stage; a new or changed one is rolled (limit_data keeps its count)."""
        old = {stage.spec.name: stage for stage in self.stages}
        stages: list[_Stage] = []
        for spec in specs:
            if spec.type not in CHUNK_TYPES:
                continue
            before = old.pop(spec.name, None)
            if before is not None and before.spec == spec:
                stages.append(before)
                continue
            active = source_matches(spec.source, client_ip) and roll(spec.toxicity, self.rng)
            stage = _Stage(spec, active, armed_at=now)
            if spec.type == "bandwidth":
                pacer = (shared or {}).get(spec.name) if spec.attributes.shared else None
                stage.pacer = pacer if pacer is not None else Pacer(spec.attributes.rate)
            if before is not None and before.spec.type == spec.type == "limit_data":
                stage.passed = before.passed
            stages.append(stage)
        closes = any(s.active and s.spec.type == "timeout" for s in old.values())
        return LinkChain(stages, self.rng, closes)

    @property
    def empty(self) -> bool:
        """Whether every byte passes untouched (no stage rolled on)."""
        return not any(stage.active for stage in self.stages)

    def close_deadline(self) -> float | None:
        """When the link closes if no chunk arrives before (an active ``timeout``)."""
        deadline: float | None = None
        for stage in self.stages:
            if stage.active and stage.spec.type == "timeout" and stage.spec.attributes.timeout > 0:
                at = stage.armed_at + stage.spec.attributes.timeout / 1000.0
                deadline = at if deadline is None else min(deadline, at)
        return deadline

    def on_eof(self, now: float) -> float:
        """When the end of the stream is passed on (``slow_close`` delays add up)."""
        delay = sum(
            max(stage.spec.attributes.delay, 0)
            for stage in self.stages
            if stage.active and stage.spec.type == "slow_close"
        )
        return now + delay / 1000.0

    def on_chunk(self, data: bytes, stamp: float, now: float) -> list[Step]:
        """The plan for one chunk read at ``stamp`` and taken at ``now``."""
        pieces: _Pieces = [(data, now)]
        for stage in self.stages:
            if not stage.active:
                continue
            spec = stage.spec
            kind = spec.type
            if kind == "latency":
                delay = latency_delay(spec.attributes.latency, spec.attributes.jitter, self.rng)
                pieces = [(piece, max(at, stamp + delay)) for piece, at in pieces]
            elif kind == "bandwidth":
                pieces = _paced(pieces, stage.pacer or Pacer(spec.attributes.rate))
            elif kind == "slicer":
                pieces = self._sliced(pieces, spec)
            elif kind == "limit_data":
                pieces, closed = _limited(pieces, stage, spec.attributes.bytes)
                if closed is not None:
                    return [*_writes(pieces), Close(closed)]
            elif kind == "timeout":
                stage.armed_at = now
                return []
            elif kind == "reset_peer":
                if stage.reset_at is None:
                    first_at = pieces[0][1] if pieces else now
                    stage.reset_at = first_at + max(spec.attributes.timeout, 0) / 1000.0
                return [Close(stage.reset_at, reset=True)]
        return _writes(pieces)

    def _sliced(self, pieces: _Pieces, spec: ToxicSpec) -> _Pieces:
        out: _Pieces = []
        gap = max(spec.attributes.delay, 0) / 1_000_000.0
        for piece, at in pieces:
            offset = 0
            for k, size in enumerate(
                slice_sizes(
                    len(piece),
                    spec.attributes.average_size,
                    spec.attributes.size_variation,
                    self.rng,
                )
            ):
                out.append((piece[offset : offset + size], at + k * gap))
                offset += size
        return out


def _paced(pieces: _Pieces, pacer: Pacer) -> _Pieces:
    out: _Pieces = []
    most = max(pacer.rate, 1) * int(BANDWIDTH_PERIOD * 1000)
    for piece, at in pieces:
        for offset in range(0, len(piece), most):
            part = piece[offset : offset + most]
            out.append((part, pacer.reserve(len(part), at)))
    return out


def _limited(pieces: _Pieces, stage: _Stage, limit: int) -> tuple[_Pieces, float | None]:
    """The pieces within the limit, and when to close if the limit is reached."""
    out: _Pieces = []
    for piece, at in pieces:
        room = limit - stage.passed
        if room <= 0:
            return out, at
        part = piece[:room]
        stage.passed += len(part)
        out.append((part, at))
        if stage.passed >= limit:
            return out, at
    return out, None


def _writes(pieces: _Pieces) -> list[Step]:
    steps: list[Step] = []
    latest = -math.inf
    for piece, at in pieces:
        latest = max(latest, at)  # order is kept: a piece never goes before the one ahead
        if piece:
            steps.append(Write(piece, latest))
    return steps
