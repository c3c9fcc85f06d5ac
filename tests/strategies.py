"""Shared Hypothesis strategies, and the test doubles and bounds that go with them.

Host keys are unique ``10.x.y.z:port`` addresses. Statistical tests draw a seed per
example and run a fixed number of picks, so every example is deterministic; the bound
each test checks comes from ``share_tolerance`` and is chosen so that a correct
balancer fails it with probability below 1e-9 per host per example.

For HTTP/1: header names and values as a peer may send them, body pieces, and the
ways one byte stream can arrive (``splits``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from itertools import pairwise
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st

from policies.balancing import POLICY_NAMES, BalancerOptions
from policies.hosts import Host, HostSet

__all__ = [
    "ScriptedRandom",
    "at_most",
    "balancer_options",
    "body_pieces",
    "header_names",
    "header_values",
    "host_keys",
    "host_lists",
    "host_sets",
    "localities",
    "policies",
    "seeds",
    "share_tolerance",
    "splits",
    "weights",
]

seeds = st.integers(min_value=0, max_value=2**32 - 1)
policies = st.sampled_from(POLICY_NAMES)
weights = st.integers(min_value=1, max_value=10)
localities = st.sampled_from(["", "us-east-1a", "us-east-1b", "us-east-1c"])


def at_most(examples: int, **overrides: Any) -> settings:
    """The active profile's settings, with at most ``examples`` examples.

    For the expensive tests (many picks, or table builds per example): ``dev`` and
    ``ci`` still differ, and the ``ci`` total stays within its time budget.
    """
    current = settings()
    return settings(current, max_examples=min(current.max_examples, examples), **overrides)


_PREFERRED = st.just(0)
_NOWHERE = st.just("")
_HEALTHY = st.just(True)
_LONG_AGO = st.just(0.0)


def _address(n: int) -> str:
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}:{8000 + (n >> 24)}"


def host_keys(*, min_size: int = 1, max_size: int = 12) -> st.SearchStrategy[list[str]]:
    """Distinct ``host:port`` keys."""
    return st.lists(
        st.integers(0, 2**26 - 1), min_size=min_size, max_size=max_size, unique=True
    ).map(lambda ns: [_address(n) for n in ns])


@st.composite
def host_lists(
    draw: st.DrawFn,
    *,
    min_size: int = 1,
    max_size: int = 12,
    weight: st.SearchStrategy[int] = weights,
    priority: st.SearchStrategy[int] = _PREFERRED,
    locality: st.SearchStrategy[str] = _NOWHERE,
    healthy: st.SearchStrategy[bool] = _HEALTHY,
    ready_at: st.SearchStrategy[float] = _LONG_AGO,
) -> list[Host]:
    """Hosts with distinct keys; each field drawn from its strategy."""
    keys = draw(host_keys(min_size=min_size, max_size=max_size))
    return [
        Host(
            key,
            weight=draw(weight),
            priority=draw(priority),
            locality=draw(locality),
            healthy=draw(healthy),
            ready_at=draw(ready_at),
        )
        for key in keys
    ]


def host_sets(**kwargs: Any) -> st.SearchStrategy[HostSet]:
    """``HostSet``s of ``host_lists(**kwargs)``."""
    return host_lists(**kwargs).map(HostSet)


def balancer_options(
    *, slow_start: bool = False, small_tables: bool = True
) -> st.SearchStrategy[BalancerOptions]:
    """Options within their valid ranges; small tables keep the examples quick."""
    return st.builds(
        BalancerOptions,
        choice_count=st.integers(2, 4),
        active_request_bias=st.sampled_from([0.0, 0.5, 1.0, 2.0]),
        min_ring_size=st.sampled_from([64, 256] if small_tables else [1024]),
        maglev_table_size=st.sampled_from([251, 1009] if small_tables else [65537]),
        slow_start_window=st.sampled_from([0.0, 10.0, 60.0] if slow_start else [0.0]),
        panic_threshold=st.sampled_from([0.0, 50.0, 80.0]),
        overprovisioning_percent=st.sampled_from([100, 140, 200]),
    )


def share_tolerance(picks: int, share: float, delta: float = 1e-9) -> float:
    """How far a host's observed share may stray from ``share`` over ``picks`` draws.

    Bernstein's inequality for a sum of ``picks`` independent Bernoulli(share) draws:
    P(|observed - share| >= eps) <= 2 exp(-picks eps^2 / (2 share (1 - share) + 2 eps / 3)).
    Solving for the eps that makes the right side ``delta`` gives the bound returned.
    Tighter than Hoeffding for small shares, and exact (no normal approximation).
    """
    log_term = math.log(2 / delta)
    variance = share * (1 - share)
    a = 2 * log_term / 3
    return (a + math.sqrt(a * a + 8 * picks * log_term * variance)) / (2 * picks)


class ScriptedRandom(random.Random):
    """A ``random.Random`` whose ``random()`` replays scripted values, then falls back.

    ``choose(indices, n)`` scripts draws that make ``int(random() * n)`` land on each
    index in turn, which is how the pickers sample uniformly.
    """

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        self._script: list[float] = []

    def script(self, values: Iterable[float]) -> None:
        self._script.extend(values)

    def choose(self, indices: Sequence[int], n: int) -> None:
        self.script((i + 0.5) / n for i in indices)

    def random(self) -> float:
        if self._script:
            return self._script.pop(0)
        return super().random()


# -- HTTP/1 -----------------------------------------------------------------------------

#: RFC 9110's tchar: what a header name is made of
_TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
#: visible ASCII and the space: a header value, without obs-text
_VCHAR = "".join(map(chr, range(0x21, 0x7F))) + " "

header_names = st.text(_TCHAR, min_size=1, max_size=16).map(str.encode)
#: no space at either end: the parser drops it (optional whitespace around a value)
header_values = st.text(_VCHAR, max_size=24).map(lambda v: v.strip(" ").encode())
#: a body as the pieces its sender wrote (each one chunk when chunked)
body_pieces = st.lists(st.binary(min_size=1, max_size=40), max_size=6)


@st.composite
def splits(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut into pieces at any points: how it may arrive from a socket.

    No piece is empty: a read of nothing is the end of the stream (``feed_eof``).
    """
    cuts = draw(st.lists(st.integers(0, len(data)), max_size=12).map(sorted))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in pairwise(bounds) if b > a]
