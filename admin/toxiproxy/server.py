"""Serving the Toxiproxy API with hypercorn on Trio, beside (or instead of) the native one."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import trio
from hypercorn.trio import serve

from admin.server import bound_address, hypercorn_config
from admin.toxiproxy.app import ToxiproxyApp
from gateway import ChildSpec, Gateway
from gateway.config import Address

log = logging.getLogger("triogate.toxiproxy")


async def serve_toxiproxy(
    gateway: Gateway,
    address: Address,
    *,
    metrics: bool = False,
    task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the Toxiproxy API on ``address`` until cancelled; reports the bound address."""
    app = ToxiproxyApp(gateway, metrics=metrics)
    config = hypercorn_config(address)
    config.errorlog = logging.getLogger("triogate.toxiproxy.server")
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(partial(serve, app, config))  # type: ignore[arg-type]
        bound = bound_address(binds[0])
        log.info("Toxiproxy API on http://%s/", bound)
        task_status.started(bound)


def toxiproxy_service(address: Address, *, metrics: bool = False) -> Callable[[Gateway], ChildSpec]:
    """The Toxiproxy API as a service of the gateway's root supervisor (it reports the
    bound address)."""

    def child(gateway: Gateway) -> ChildSpec:
        async def start(*, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
            await serve_toxiproxy(gateway, address, metrics=metrics, task_status=task_status)

        return ChildSpec(name="toxiproxy", start=start)

    return child
