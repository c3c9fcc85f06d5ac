"""Request mirroring: a share of a route's requests copied to a shadow cluster.

A route with ``mirror: {cluster: shadow, percent: 10}`` has that share of its requests
copied, fire and forget: the copy goes to an endpoint of the shadow cluster with its
``Host`` suffixed ``-shadow`` (Envoy's ``request_mirror_policies``), its answer is read and
thrown away, and nothing of it ever reaches the client or the real request.

How it never delays or fails the real request: the data path only decides (one draw of
the listener's ``rng``), builds the copy's bytes from the head it already rewrote for the
upstream, and hands them over with ``send_nowait`` to the listener's ``Mirror``, whose
task (``run``, in the listener's nursery) sends each copy from a task of its own. At
most ``MAX_IN_FLIGHT`` copies per listener (per process) are queued or being sent; one
over that is dropped and counted (``mirror_rq_dropped``), never waited for. A copy has
``COPY_TIMEOUT`` seconds to connect, be sent and be answered; a failure of any kind is
counted (``mirror_rq_failed``) and forgotten.

Bodies: a copy carries the request's body only when the proxy holds that body anyway
(an idempotent request on a retrying route, ``per_request_buffer_limit_bytes``) and it is
at most ``MAX_BODY`` bytes; a streamed body is not held back for a copy (that would delay
the real request), so such a request is not mirrored and counts in
``mirror_rq_body_skipped``. Each copy opens its own connection and closes it after the
answer (``Connection: close``): the shadow never shares a pool with real traffic.
"""

from __future__ import annotations

import logging
import random
import re
from typing import Final

import attrs
import trio

from gateway.dataplane import DataPlaneRef
from gateway.http1.events import NO_BODY, RequestReceived
from gateway.observe.stats import ListenerStats

log = logging.getLogger("triogate.mirror")

#: copies queued or being sent per listener and process; one more is dropped
MAX_IN_FLIGHT: Final = 64
#: the largest request body copied
MAX_BODY: Final = 64 * 1024
#: seconds a copy may take from connect to the end of its answer
COPY_TIMEOUT: Final = 5.0

_HOST = re.compile(rb"(?im)^(host:[ \t]*)([^\r\n]*)\r\n")


@attrs.frozen
class Copy:
    """A request copy ready to go: the shadow cluster and the bytes to send."""

    cluster: str
    data: bytes


def shadow_copy(
    up_head: bytes, held_body: bytes, head: RequestReceived, cluster: str
) -> Copy | None:
    """The copy of a request whose upstream head is ``up_head``; None if its body is
    streamed (not held) or larger than ``MAX_BODY``."""
    if head.framing != NO_BODY and (not held_body or len(held_body) > MAX_BODY):
        return None
    shadowed = _HOST.sub(rb"\g<1>\g<2>-shadow\r\n", up_head, count=1)
    # the head ends with an empty line: close after the answer, so its end is the EOF
    return Copy(cluster, shadowed[:-2] + b"connection: close\r\n\r\n" + held_body)


@attrs.define(eq=False)
class Mirror:
    """A listener's copies on their way: a bounded inbox, and the task that sends them."""

    stats: ListenerStats
    dataplane: DataPlaneRef
    _inbox_tx: trio.MemorySendChannel[Copy] = attrs.field(init=False)
    _inbox_rx: trio.MemoryReceiveChannel[Copy] = attrs.field(init=False)
    #: copies queued or being sent
    in_flight: int = 0

    def __attrs_post_init__(self) -> None:
        self._inbox_tx, self._inbox_rx = trio.open_memory_channel[Copy](MAX_IN_FLIGHT)

    def offer(
        self,
        percent: float,
        rng: random.Random,
        up_head: bytes,
        held_body: bytes,
        head: RequestReceived,
        cluster: str,
    ) -> None:
        """Copy this request to ``cluster`` with probability ``percent`` / 100; never waits."""
        if rng.random() * 100.0 >= percent:
            return
        copy = shadow_copy(up_head, held_body, head, cluster)
        if copy is None:
            self.stats.mirror_rq_body_skipped += 1
            return
        if self.in_flight >= MAX_IN_FLIGHT:
            self.stats.mirror_rq_dropped += 1
            return
        self.in_flight += 1
        self._inbox_tx.send_nowait(copy)  # room: the channel holds MAX_IN_FLIGHT

    async def run(self) -> None:
        """Send every copy offered, each from a task of its own, until cancelled."""
        async with trio.open_nursery() as nursery:
            async for copy in self._inbox_rx:
                nursery.start_soon(self._send, copy)

    async def _send(self, copy: Copy) -> None:
        try:
            with trio.move_on_after(COPY_TIMEOUT) as scope:
                await _exchange(self.dataplane, copy)
            if scope.cancelled_caught:
                raise TimeoutError("no answer in time")
            self.stats.mirror_rq_sent += 1
        except Exception as e:  # a shadow's trouble is its own: counted, never raised
            self.stats.mirror_rq_failed += 1
            log.debug("mirror to %r failed: %r", copy.cluster, e)
        finally:
            self.in_flight -= 1


async def _exchange(dataplane: DataPlaneRef, copy: Copy) -> None:
    """Send ``copy`` to an endpoint of its cluster and read its answer to the end."""
    handle = dataplane.current.clusters.get(copy.cluster)
    if handle is None:
        raise LookupError(f"no cluster {copy.cluster!r}")
    endpoint = handle.snapshot.pick(trio.current_time())
    if endpoint is None:
        raise LookupError(f"no healthy endpoint in cluster {copy.cluster!r}")
    address = endpoint.pool.address
    async with await trio.open_tcp_stream(address.host, address.port) as stream:
        await stream.send_all(copy.data)
        while await stream.receive_some():
            pass
