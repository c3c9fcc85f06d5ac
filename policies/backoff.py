"""Retry back-off: exponential, with full jitter.

Theory of operation
-------------------
Before retry number ``attempt`` (0 for the first retry) the proxy waits a delay drawn
uniformly from ``[0, ceiling)`` with ``ceiling = min(max, base * 2 ** attempt)``: AWS's
"full jitter", which Envoy's retry back-off also uses (``base_interval`` 25 ms,
``max_interval`` ten times that). Full jitter spreads the retries of many clients that
failed together, so they do not come back in step.

The ceiling is computed without overflow for any ``attempt``: past 2**64 times the base
it is ``max`` anyway. The only randomness is one ``rng.random()`` per delay.
``per_try_timeout`` is not here: it is a plain number of seconds the proxy applies as a
cancel scope around each try.
"""

from __future__ import annotations

import math
import random

import attrs

from policies import settings
from policies.errors import InvalidSetting

__all__ = ["DEFAULT_BACKOFF", "BackoffConfig", "backoff_ceiling", "backoff_delay"]

#: beyond this exponent the ceiling is ``max`` for any base >= 2**-64 s
_MAX_EXPONENT = 64


def backoff_ceiling(attempt: int, *, base: float = 0.025, max: float = 0.25) -> float:
    """The upper bound of the delay before retry ``attempt``: ``min(max, base * 2**attempt)``."""
    if attempt < 0:
        raise InvalidSetting("attempt", f"must be >= 0, not {attempt}")
    if attempt >= _MAX_EXPONENT:
        return max
    return min(max, math.ldexp(base, attempt))


def backoff_delay(
    attempt: int, *, base: float = 0.025, max: float = 0.25, rng: random.Random
) -> float:
    """Seconds to wait before retry ``attempt`` (0 first): uniform in ``[0, ceiling)``."""
    return rng.random() * backoff_ceiling(attempt, base=base, max=max)


@attrs.frozen
class BackoffConfig:
    """A route's retry back-off (Envoy's defaults: 25 ms base, 250 ms cap)."""

    #: the ceiling of the first retry's delay, in seconds
    base: float = attrs.field(default=0.025, validator=settings.positive)
    #: the largest ceiling, in seconds
    max: float = attrs.field(default=0.25, validator=settings.positive)

    def __attrs_post_init__(self) -> None:
        if self.max < self.base:
            raise InvalidSetting("max", f"must be >= base ({self.base}), not {self.max}")

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before retry ``attempt``; see ``backoff_delay``."""
        return backoff_delay(attempt, base=self.base, max=self.max, rng=rng)


#: Envoy's default back-off: 25 ms base, 250 ms cap
DEFAULT_BACKOFF = BackoffConfig()
