"""The channel between the primary process and one worker: framed messages on a Unix socket.

Theory of operation: the primary makes a ``socketpair`` per worker and hands one end to
the worker process (its file descriptor on the command line). Each message is one
frame: a 4-byte big-endian length, then the message pickled. Both ends are the same
program started by the same user from the same files, so pickle's trust model holds
(nothing from outside ever reaches this socket); it carries the frozen config values
as they are, with no second schema to keep in step.

The conversation is strictly request/reply and the primary always speaks first: it
sends one request and reads one reply before the next (``WorkerLink.call``, under a
lock). The worker never speaks unasked, so no reader task or sequence numbers are
needed, and an end of stream on either side means the other process is gone:
``LinkClosed``.

    primary -> worker        worker -> primary
    Install(config)          Installed(version) | Refused(message, issues, bind)
    Report()                 Reported(dump, outcomes)    (stats, see observe.stats.merge;
                                                          attempts' results since the last)
    ResetStats()             Done()
    HealthPublished(c, s, e) Done()   cluster c serves with the health verdicts s and
                                      the ejected addresses e
    DrainWorker(grace)       Done()   once its listeners have stopped; then it exits

Health checks run only in the primary; ``HealthPublished`` carries one cluster's
verdicts (address -> ``HealthState``, all of them, replacing the ones the worker had)
whenever one changes, and to a worker that (re)starts right after its first Install.
Outlier detection runs only in the primary too: ``Reported.outcomes`` carries the
results of the worker's attempts since its last report (its clusters' outcome
buffers, by cluster), and the primary's ejections go back in ``HealthPublished``.
"""

from __future__ import annotations

import pickle
import struct
from typing import Any

import attrs
import trio

from gateway.cluster.outcomes import Outcome
from gateway.config import Config
from gateway.errors import ConfigError, ConfigIssue, GatewayError
from policies.health import HealthState

__all__ = [
    "Done",
    "DrainWorker",
    "HealthPublished",
    "Install",
    "Installed",
    "LinkClosed",
    "Refused",
    "Report",
    "Reported",
    "ResetStats",
    "WorkerLink",
]

_LENGTH = struct.Struct(">I")
#: the largest frame either side accepts: a config or a stats dump is far smaller
MAX_FRAME = 64 * 1024 * 1024


class LinkClosed(GatewayError):
    """The process at the other end of a link has gone (end of stream, or a reset)."""

    status_hint = 503


@attrs.frozen
class Install:
    """Request: serve ``config`` (a worker's config: addresses resolved, members static).

    ``ticket_keys``: the primary's TLS session ticket keys (``gateway.tls.tickets``), in
    a worker's first ``Install``, so that a session resumes on any worker."""

    config: Config
    ticket_keys: bytes | None = None


@attrs.frozen
class Installed:
    version: int


@attrs.frozen
class Refused:
    """The worker could not install the config; it still serves the one it had."""

    message: str
    #: the config's issues when it was a ``ConfigError`` (a listener that cannot bind)
    issues: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, error: Exception) -> Refused:
        if isinstance(error, ConfigError):
            return cls(str(error), tuple((i.path, i.message) for i in error.issues))
        return cls(f"{type(error).__name__}: {error}" if not str(error) else str(error))

    def error(self, who: str) -> GatewayError:
        """The refusal as the primary raises it."""
        if self.issues:
            return ConfigError([ConfigIssue(p, f"{m} ({who})") for p, m in self.issues])
        return GatewayError(f"{who}: {self.message}")


@attrs.frozen
class Report:
    """Request: the worker's stats, dumped (``gateway.observe.stats.merge.dump``)."""


@attrs.frozen
class Reported:
    dump: dict[str, Any]
    #: per cluster with outlier detection: the attempts' results since the last report
    outcomes: dict[str, list[Outcome]] = attrs.field(factory=dict)


@attrs.frozen
class ResetStats:
    """Request: counters and histograms to zero."""


@attrs.frozen
class HealthPublished:
    """Request: cluster ``cluster`` serves with these health verdicts by address."""

    cluster: str
    states: dict[str, HealthState]
    #: the addresses the primary's outlier detection has ejected
    ejected: frozenset[str] = frozenset()


@attrs.frozen
class DrainWorker:
    """Request: stop accepting; connections finish within ``grace`` s; then exit."""

    grace: float


@attrs.frozen
class Done:
    pass


class WorkerLink:
    """One end of a primary/worker socket: whole messages in and out."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._buffer = bytearray()
        self._lock = trio.Lock()

    async def send(self, message: object) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            await self.stream.send_all(_LENGTH.pack(len(data)) + data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
            raise LinkClosed(f"link closed: {e}") from None

    async def receive(self) -> Any:
        """The next message; ``LinkClosed`` when the other side has gone."""
        header = await self._exactly(_LENGTH.size)
        (length,) = _LENGTH.unpack(header)
        if length > MAX_FRAME:
            raise LinkClosed(f"a frame of {length} bytes is over the limit of {MAX_FRAME}")
        return pickle.loads(await self._exactly(length))

    async def call(self, message: object) -> Any:
        """Send a request and return its reply (one conversation at a time)."""
        async with self._lock:
            await self.send(message)
            return await self.receive()

    async def _exactly(self, size: int) -> bytes:
        buffer = self._buffer
        while len(buffer) < size:
            try:
                data = await self.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
                raise LinkClosed(f"link closed: {e}") from None
            if not data:
                raise LinkClosed("the other process closed the link")
            buffer += data
        piece = bytes(buffer[:size])
        del buffer[:size]
        return piece

    async def aclose(self) -> None:
        await self.stream.aclose()
