"""Network toxics on datagrams: which a UDP session gets, and what each does to a datagram.

Theory of operation (Toxiproxy's semantics, ``shared/toxiproxy-contract.md`` section 8,
carried over from chunks to datagrams):

- A listener's toxics are compiled once per config into ``policies.toxics.ToxicSpec``
  values (``source`` parsed), the same the chunk toxics take.
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
from typing import Final

import attrs

from policies.toxics import ToxicSpec, latency_delay

__all__ = [
    "DATAGRAM_TOXIC_TYPES",
    "SessionToxics",
    "decide",
    "roll_session",
    "source_holds",
]

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: the toxic types a datagram listener takes
DATAGRAM_TOXIC_TYPES: Final = frozenset({"latency", "packet_loss"})


@attrs.frozen
class SessionToxics:
    """The toxics one session got, per direction, in chain order; and every roll made
    (by toxic name: the toxic as rolled and whether it applies), for the next re-roll."""

    upstream: tuple[ToxicSpec, ...] = ()
    downstream: tuple[ToxicSpec, ...] = ()
    rolls: Mapping[str, tuple[ToxicSpec, bool]] = attrs.field(factory=dict)


#: a session with no toxic
NO_TOXICS: Final = SessionToxics()


def source_holds(toxic: ToxicSpec, client: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether ``toxic``'s ``source`` restriction lets it act on ``client``'s sessions."""
    if not toxic.source:
        return True
    if isinstance(client, ipaddress.IPv6Address) and client.ipv4_mapped is not None:
        client = client.ipv4_mapped
    return any(client in network for network in toxic.source)


def roll_session(
    toxics: Iterable[ToxicSpec],
    client: IpAddress,
    rng: random.Random,
    previous: SessionToxics = NO_TOXICS,
) -> SessionToxics:
    """The toxics a session from ``client`` gets (see the module docstring)."""
    upstream: list[ToxicSpec] = []
    downstream: list[ToxicSpec] = []
    rolls: dict[str, tuple[ToxicSpec, bool]] = {}
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


def decide(chain: tuple[ToxicSpec, ...], rng: random.Random) -> float | None:
    """One datagram through ``chain``: None when dropped, else its delay in seconds."""
    delay = 0.0
    for toxic in chain:
        if toxic.type == "packet_loss":
            if rng.random() * 100.0 < toxic.attributes.percent:
                return None
        else:
            attributes = toxic.attributes
            delay += latency_delay(attributes.latency, attributes.jitter, rng)
    return delay
