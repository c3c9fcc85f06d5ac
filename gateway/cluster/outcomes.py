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

Waiting for the next take would let an endpoint that just died fail every request sent
to it in the meantime, past the consecutive-failure threshold meant to stop them. So
the buffer also keeps each endpoint's current run of failures (5xx or no response; a
success ends it), and when a run reaches ``wake_at`` (the smallest consecutive
threshold of the detector), and at each failure of it after a take, it sends
``OUTCOMES_WAITING`` to the cluster actor's ``inbox`` with ``send_nowait``: the actor
takes the results at once. A full inbox
refuses the wake-up, counted in ``wakes_dropped``; nothing is lost, the results wait
for the timer. Only a buffer whose owner runs the detector has an ``inbox`` (with
worker processes the results ride on each worker's report).

Until the actor has taken the results, such an endpoint is a *suspect* (``suspects``,
by address): the proxy picks another endpoint for a new attempt when the balancer
offers one, so the requests that would go to it while the actor is on its way do not
fail too. Each take clears the suspects: by then the detector has ejected them, or
judged that they stay (its ejection cap).
"""

from __future__ import annotations

from typing import Any, Final

import attrs
import trio

from policies.retry import Failure

__all__ = ["CAPACITY", "FLUSH_INTERVAL", "OUTCOMES_WAITING", "Outcome", "OutcomeBuffer"]

#: seconds between a cluster actor's takes from its buffer
FLUSH_INTERVAL: Final = 0.05
#: results a buffer holds between takes before it drops
CAPACITY: Final = 8192

#: one attempt's result on one endpoint: its address, and a status or how it failed
Outcome = tuple[str, int | Failure]


@attrs.frozen
class OutcomesWaiting:
    """Report: an endpoint's run of failures reached the detector's threshold; take the
    buffer now."""


OUTCOMES_WAITING: Final = OutcomesWaiting()


class OutcomeBuffer:
    """A bounded list of attempts' results; see the module docstring."""

    __slots__ = (
        "capacity",
        "dropped",
        "inbox",
        "results",
        "runs",
        "suspects",
        "wake_at",
        "wakes_dropped",
    )

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self.results: list[Outcome] = []
        #: results dropped because the buffer was full
        self.dropped = 0
        #: each endpoint's current run of failures (only endpoints with one)
        self.runs: dict[str, int] = {}
        #: the run that wakes the detector's owner (0: none does), and its inbox
        self.wake_at = 0
        self.inbox: trio.MemorySendChannel[Any] | None = None
        #: wake-ups the inbox had no room for
        self.wakes_dropped = 0
        #: endpoints whose run reached ``wake_at`` since the last take, by address
        self.suspects: set[str] = set()

    def add(self, key: str, result: int | Failure) -> None:
        """One attempt's result (the data path's call: never waits)."""
        results = self.results
        if len(results) < self.capacity:
            results.append((key, result))
        else:
            self.dropped += 1
        runs = self.runs
        if type(result) is int and result < 500:
            if runs:  # a success ends the endpoint's run of failures
                runs.pop(key, None)
            return
        run = runs[key] = runs.get(key, 0) + 1
        if run >= self.wake_at > 0 and key not in self.suspects and self.inbox is not None:
            # (again after each take while the run goes on: an endpoint back from an
            # ejection and failing still is judged again as soon as its failures come)
            self.suspects.add(key)
            try:
                self.inbox.send_nowait(OUTCOMES_WAITING)
            except trio.WouldBlock:
                self.wakes_dropped += 1

    def take(self) -> list[Outcome]:
        """Every result added since the last take, oldest first (the suspects go: the
        detector is about to judge them)."""
        results, self.results = self.results, []
        self.suspects.clear()
        return results

    def take_dropped(self) -> int:
        """The results dropped since the last call (to count them in a stat)."""
        dropped, self.dropped = self.dropped, 0
        return dropped

    def __len__(self) -> int:
        return len(self.results)
