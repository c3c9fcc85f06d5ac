"""Request/reply with an actor: the one helper every handle uses.

An actor's handle holds the send side of the actor's bounded inbox. A request carries a
reply channel of size 1; the actor answers with ``send_nowait`` inside ``with reply:``,
so an actor that crashes (or stops) before answering closes the reply channel and the
caller gets ``ActorStopped`` at once, never a hang. An answer that is an ``Exception``
is the actor's refusal and is raised in the caller's task.

    answer = await ask(self.inbox, lambda reply: Reconfigure(config, reply), who="cluster 'api'")
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import trio

from gateway.errors import ActorStopped

__all__ = ["ask", "command"]

M = TypeVar("M")
R = TypeVar("R")


async def ask(
    inbox: trio.MemorySendChannel[M],
    make: Callable[[trio.MemorySendChannel[R | Exception]], M],
    *,
    who: str,
) -> R:
    """Send the request ``make(reply)`` to ``inbox`` and wait for its answer.

    Raises the answer if it is an exception, and ``ActorStopped`` (naming ``who``) if the
    actor's inbox is closed or the actor ends without answering.
    """
    # the receive side is left open when the caller is cancelled: the actor's
    # ``send_nowait`` still finds room (the caller may be a task the command stops)
    reply_tx, reply_rx = trio.open_memory_channel[R | Exception](1)
    try:
        await inbox.send(make(reply_tx))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        reply_tx.close()
        raise ActorStopped(f"{who} has stopped") from None
    try:
        answer = await reply_rx.receive()
    except trio.EndOfChannel:
        raise ActorStopped(f"{who} stopped before answering") from None
    if isinstance(answer, Exception):
        raise answer
    return answer


async def command(
    inbox: trio.MemorySendChannel[M],
    make: Callable[[trio.MemorySendChannel[Exception | None]], M],
    *,
    who: str,
) -> None:
    """``ask`` for a command whose answer is only that it was carried out (``None``)."""
    await ask(inbox, make, who=who)
