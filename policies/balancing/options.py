"""The knobs of every balancer, as one frozen value, and the policy names.

Theory of operation: a ``BalancerOptions`` is checked once, on construction, so the
balancers built from it never re-validate on the data path. Defaults are Envoy's,
except ``max_ring_size``: Envoy allows 8M ring entries, which in Python would cost
hundreds of megabytes, so the cap here is 2**17.
"""

from __future__ import annotations

import math
from typing import Final, Literal, get_args

import attrs

from policies.errors import PolicyError

__all__ = ["POLICY_NAMES", "BalancerConfigError", "BalancerOptions", "PolicyName"]

PolicyName = Literal["round_robin", "least_request", "random", "ring_hash", "maglev"]
POLICY_NAMES: Final[tuple[PolicyName, ...]] = get_args(PolicyName)


class BalancerConfigError(PolicyError, ValueError):
    """An unknown policy name or an option out of range."""


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    return all(n % d for d in range(3, math.isqrt(n) + 1, 2))


@attrs.frozen
class BalancerOptions:
    """Options for ``make_balancer``; each policy reads the ones it needs."""

    #: least_request: hosts sampled per pick when all weights are equal (Envoy: >= 2)
    choice_count: int = 2
    #: least_request with unequal weights: weight / (active + 1) ** bias; 0 ignores load
    active_request_bias: float = 1.0
    #: ring_hash: fewest entries on the ring
    min_ring_size: int = 1024
    #: ring_hash: most entries on the ring (bounds memory when weights are very uneven)
    max_ring_size: int = 1 << 17
    #: maglev: lookup table size, a prime (Envoy's default)
    maglev_table_size: int = 65537
    #: seconds over which a newly ready host's weight ramps up; 0 disables slow start
    slow_start_window: float = 0.0
    #: slow start: the share of its weight a host gets at first, in percent
    slow_start_min_percent: int = 10
    #: a priority whose healthy share (percent) is below this balances over all its hosts
    panic_threshold: float = 50.0
    #: Envoy's overprovisioning factor, in percent: 140 means a level at 1/1.4 = 71.4%
    #: healthy still takes all of its load
    overprovisioning_percent: int = 140

    def __attrs_post_init__(self) -> None:
        problems = []
        if self.choice_count < 2:
            problems.append(f"choice_count must be >= 2, got {self.choice_count}")
        if not (math.isfinite(self.active_request_bias) and self.active_request_bias >= 0):
            problems.append(f"active_request_bias must be >= 0, got {self.active_request_bias}")
        if self.min_ring_size < 1:
            problems.append(f"min_ring_size must be >= 1, got {self.min_ring_size}")
        if self.max_ring_size < self.min_ring_size:
            problems.append(
                f"max_ring_size ({self.max_ring_size}) must be >= min_ring_size "
                f"({self.min_ring_size})"
            )
        if not _is_prime(self.maglev_table_size):
            problems.append(f"maglev_table_size must be a prime, got {self.maglev_table_size}")
        if not (math.isfinite(self.slow_start_window) and self.slow_start_window >= 0):
            problems.append(f"slow_start_window must be >= 0 seconds, got {self.slow_start_window}")
        if not 1 <= self.slow_start_min_percent <= 100:
            problems.append(
                f"slow_start_min_percent must be 1-100, got {self.slow_start_min_percent}"
            )
        if not 0 <= self.panic_threshold <= 100:
            problems.append(f"panic_threshold must be 0-100, got {self.panic_threshold}")
        if self.overprovisioning_percent < 1:
            problems.append(
                f"overprovisioning_percent must be >= 1, got {self.overprovisioning_percent}"
            )
        if problems:
            raise BalancerConfigError("; ".join(problems))
