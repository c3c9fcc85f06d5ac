"""Network toxics on datagrams: which a UDP session gets, and what each does to a datagram.

Theory of operation (Toxiproxy's semantics, ``shared/toxiproxy-contract.md`` section 8,
carried over from chunks to datagrams):

- A listener's toxics are compiled once per config into ``DatagramToxic`` values.
- When a session starts, ``roll_session`` decides which toxics it gets: a toxic whose
  ``source`` networks do not hold the client's address never applies; any other applies
  with probability ``toxicity`` (rolled once per session, as Toxiproxy rolls per link).
  When the listener's toxics change, the session rolls again with its previous rolls
  passed in: a toxic that is still there unchanged keeps its roll, a new or changed one
  is rolled anew (Toxiproxy re-rolls a toxic on update).
- ``decide(chain, rng)`` is one datagram's fate in one direction: ``None`` when a
  ``packet_loss`` toxic drops it (each drops ``percent`` % of the datagrams, independently),
  else the delay in seconds, the sum of the chain's ``latency`` toxics, each
  ``latency + U[-jitter, +jitter)`` ms (jitter <= 0: none; a negative delay: none).
  The delay counts from the moment the datagram was read; the caller keeps the order of
  a direction (a datagram is never sent before the one read before it).

Pure: the randomness is an injected ``random.Random``; there is no clock here.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable, Mapping
from typing import Final, Literal

import attrs

__all__ = [
    "DatagramToxic",
    "SessionToxics",
    "decide",
    "latency_delay",
    "roll_session",
    "source_holds",
]

DatagramToxicType = Literal["latency", "packet_loss"]
Stream = Literal["upstream", "downstream"]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: the toxic types a datagram listener takes
DATAGRAM_TOXIC_TYPES: Final = frozenset({"latency", "packet_loss"})


def _networks(source: Iterable[str | Network]) -> tuple[Network, ...]:
    return tuple(
        s if not isinstance(s, str) else ipaddress.ip_network(s, strict=False) for s in source
    )


@attrs.frozen
class DatagramToxic:
    """One toxic of a datagram listener, in the units of its config (ms, percent)."""

    name: str
    type: DatagramToxicType
    stream: Stream = "downstream"
    #: the probability that a session gets it
    toxicity: float = 1.0
    #: latency: ms added to each datagram, and its jitter (+/- ms)
    latency: int = 0
    jitter: int = 0
    #: packet_loss: percent of the datagrams dropped
    percent: float = 0.0
    #: only sessions from these networks; () every session
    source: tuple[Network, ...] = attrs.field(default=(), converter=_networks)


@attrs.frozen
class SessionToxics:
    """The toxics one session got, per direction, in chain order; and every roll made
    (by toxic name: the toxic as rolled and whether it applies), for the next re-roll."""

    upstream: tuple[DatagramToxic, ...] = ()
    downstream: tuple[DatagramToxic, ...] = ()
    rolls: Mapping[str, tuple[DatagramToxic, bool]] = attrs.field(factory=dict)


#: a session with no toxic
NO_TOXICS: Final = SessionToxics()


def source_holds(
    toxic: DatagramToxic, client: ipaddress.IPv4Address | ipaddress.IPv6Address
) -> bool:
    """Whether ``toxic``'s ``source`` restriction lets it act on ``client``'s sessions."""
    if not toxic.source:
        return True
    if isinstance(client, ipaddress.IPv6Address) and client.ipv4_mapped is not None:
        client = client.ipv4_mapped
    return any(client in network for network in toxic.source)


def roll_session(
    toxics: Iterable[DatagramToxic],
    client: IpAddress,
    rng: random.Random,
    previous: SessionToxics = NO_TOXICS,
) -> SessionToxics:
    """The toxics a session from ``client`` gets (see the module docstring)."""
    upstream: list[DatagramToxic] = []
    downstream: list[DatagramToxic] = []
    rolls: dict[str, tuple[DatagramToxic, bool]] = {}
    for toxic in toxics:
        before = previous.rolls.get(toxic.name)
        if before is not None and before[0] == toxic:
            applies = before[1]
        elif not source_holds(toxic, client):
            applies = False
        else:
            applies = toxic.toxicity >= 1.0 or rng.random() < toxic.toxicity
        rolls[toxic.name] = (toxic, applies)
        if applies:
            (upstream if toxic.stream == "upstream" else downstream).append(toxic)
    if not rolls:
        return NO_TOXICS
    return SessionToxics(tuple(upstream), tuple(downstream), rolls)


def latency_delay(toxic: DatagramToxic, rng: random.Random) -> float:
    """One datagram's delay by a ``latency`` toxic, in seconds (never negative)."""
    ms = toxic.latency
    if toxic.jitter > 0:
        ms += rng.randrange(2 * toxic.jitter) - toxic.jitter  # Toxiproxy's Int63n(2j) - j
    return ms / 1000.0 if ms > 0 else 0.0


def decide(chain: tuple[DatagramToxic, ...], rng: random.Random) -> float | None:
    """One datagram through ``chain``: None when dropped, else its delay in seconds."""
    delay = 0.0
    for toxic in chain:
        if toxic.type == "packet_loss":
            if rng.random() * 100.0 < toxic.percent:
                return None
        else:
            delay += latency_delay(toxic, rng)
    return delay
