"""A worker process: the data side of one gateway, driven by the primary over its link.

Started by the primary's ``WorkerPool`` as ``python -m gateway.runtime.worker FD INDEX
VERBOSITY``, with FD its end of a Unix socket pair. It runs the same supervision tree
as a single-process gateway (``run_gateway``: a local control plane applying each
config in undoable steps, cluster actors, listener actors), for a worker config: the
primary's config with its listener addresses as bound there and every cluster static
(see ``gateway.runtime.workers``). The local control plane here is only the
applier of versions the primary decided: it binds, swaps the ``DataPlane`` in one
assignment and reconfigures listeners, exactly as one process does.

It answers the primary's requests (``gateway.runtime.link``) and nothing else: no admin
API, no state file, no discovery. When the primary's end of the link closes (the
primary exited, or was killed) the worker stops at once: a worker never outlives its
control plane.
"""

from __future__ import annotations

import gc
import logging
import socket
import sys
from functools import partial
from typing import Any

import trio

from gateway.app import Gateway, run_gateway
from gateway.cluster.actor import HealthVerdicts
from gateway.cluster.outcomes import Outcome
from gateway.errors import root_cause
from gateway.observe.stats.merge import dump
from gateway.runtime.link import (
    Done,
    DrainWorker,
    HealthPublished,
    Install,
    Installed,
    LinkClosed,
    Refused,
    Report,
    Reported,
    ResetStats,
    WorkerLink,
)
from gateway.tls.tickets import use_ticket_keys

log = logging.getLogger("triogate.worker")


async def serve_worker(link: WorkerLink, index: int) -> None:
    """Serve the configs the primary installs until it drains this worker or goes away."""
    first = await link.receive()
    assert isinstance(first, Install), f"a worker's first message is Install, not {first!r}"
    if first.ticket_keys is not None:
        use_ticket_keys(first.ticket_keys)  # before any TLS listener's contexts
    async with trio.open_nursery() as nursery:
        try:
            gateway: Gateway = await nursery.start(
                partial(run_gateway, first.config, detect_outliers=False, rollouts=False)
            )
        except Exception as e:  # cannot serve (a port it cannot bind): say why, then exit
            await link.send(Refused.of(_plain(root_cause(e))))
            raise SystemExit(1) from None
        gc.freeze()  # as the primary does once started (triogate.cli._serve)
        gc.set_threshold(7000, 10, 10)
        await link.send(Installed(first.config.version))
        try:
            while await _answer(gateway, link, index, await link.receive()):
                pass
        except LinkClosed:
            log.info("the primary has gone: stopping")
        nursery.cancel_scope.cancel()


async def _answer(gateway: Gateway, link: WorkerLink, index: int, message: Any) -> bool:
    """Answer one request; False once the worker should stop."""
    match message:
        case Install(config=config):
            try:
                await gateway.control.replace(config)
            except Exception as e:  # refused, or rolled back: it serves the config it had
                await link.send(Refused.of(e))
            else:
                await link.send(Installed(config.version))
        case Report():
            outcomes = _take_outcomes(gateway)
            await link.send(Reported({**dump(gateway.stats), "worker": index}, outcomes))
        case ResetStats():
            gateway.stats.reset()
            await link.send(Done())
        case HealthPublished(cluster=name, states=states, ejected=ejected):
            handle = gateway.control.clusters.get(name)
            if handle is not None:  # else a cluster this worker has not been given yet
                await handle.inbox.send(HealthVerdicts(states, ejected))
            await link.send(Done())
        case DrainWorker(grace=grace):
            await gateway.control.drain(grace)
            with trio.move_on_after(grace):
                await gateway.control.wait_listeners_stopped()
            await link.send(Done())
            return False
        case _:
            raise TypeError(f"a worker cannot answer {message!r}")
    return True


def _take_outcomes(gateway: Gateway) -> dict[str, list[Outcome]]:
    """The attempts' results in each cluster's outcome buffer since the last report (for
    the primary's outlier detection); the results dropped are counted here."""
    outcomes: dict[str, list[Outcome]] = {}
    for name, handle in gateway.control.clusters.items():
        buffer = handle.outcomes
        if buffer is None:
            continue
        if handle.stats is not None:
            handle.stats.outlier_detection_outcomes_dropped += buffer.take_dropped()
        if len(buffer):
            outcomes[name] = buffer.take()
    return outcomes


def _plain(error: BaseException) -> Exception:
    return error if isinstance(error, Exception) else RuntimeError(str(error))


def main(argv: list[str]) -> None:
    fd, index, verbosity = int(argv[0]), int(argv[1]), int(argv[2])
    level = logging.WARNING - 10 * min(verbosity, 2)
    logging.basicConfig(
        level=level, format=f"%(asctime)s %(levelname)s worker-{index} %(name)s: %(message)s"
    )

    async def run() -> None:
        sock = socket.socket(fileno=fd)
        link = WorkerLink(trio.SocketStream(trio.socket.from_stdlib_socket(sock)))
        async with link.stream:
            await serve_worker(link, index)

    try:
        trio.run(run)
    except KeyboardInterrupt:  # pragma: no cover - the primary drains us; never the terminal
        pass


if __name__ == "__main__":
    main(sys.argv[1:])
