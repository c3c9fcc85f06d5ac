"""The attempts' results on their way from the data path to the outlier detector.

Theory of operation: a cluster with ``outlier_detection`` has one ``OutcomeBuffer``,
made by its cluster actor and hung on the cluster's stats (``ClusterStats.outcomes``),
the object every attempt is charged to (``gateway.proxy.outcome.charge_attempt``). The
data path appends ``(endpoint address, status or Failure)`` with ``add``: a list append,
no message, no waiting (STYLE.md, hot path rule). Whoever owns the detector takes the
results in batches with ``take`` on its own schedule: the cluster actor every
``FLUSH_INTERVAL`` in one process; with worker processes each worker's buffer is taken
by its stats report to the primary, whose cluster actor feeds its detector.

The buffer is bounded: past ``capacity`` results an ``add`` is dropped and counted
(``dropped``, exported as ``outlier_detection.outcomes_dropped``), never blocks. A
cluster without outlier detection has no buffer (``ClusterStats.outcomes`` is None),
so the data path pays one attribute test for the feature being off.
"""

from __future__ import annotations

from typing import Final

from policies.retry import Failure

__all__ = ["CAPACITY", "FLUSH_INTERVAL", "Outcome", "OutcomeBuffer"]

#: seconds between a cluster actor's takes from its buffer
FLUSH_INTERVAL: Final = 0.05
#: results a buffer holds between takes before it drops
CAPACITY: Final = 8192

#: one attempt's result on one endpoint: its address, and a status or how it failed
Outcome = tuple[str, int | Failure]


class OutcomeBuffer:
    """A bounded list of attempts' results; see the module docstring."""

    __slots__ = ("capacity", "dropped", "results")

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self.results: list[Outcome] = []
        #: results dropped because the buffer was full
        self.dropped = 0

    def add(self, key: str, result: int | Failure) -> None:
        """One attempt's result (the data path's call: never waits)."""
        results = self.results
        if len(results) < self.capacity:
            results.append((key, result))
        else:
            self.dropped += 1

    def take(self) -> list[Outcome]:
        """Every result added since the last take, oldest first."""
        results, self.results = self.results, []
        return results

    def take_dropped(self) -> int:
        """The results dropped since the last call (to count them in a stat)."""
        dropped, self.dropped = self.dropped, 0
        return dropped

    def __len__(self) -> int:
        return len(self.results)
