"""Serving the admin app with hypercorn on Trio, as a child of the gateway's supervisor.

With ``admin.toxiproxy`` set, Toxiproxy's API (``admin.toxiproxy``) is served beside it,
in the same task tree. The FastAPI app is imported only when served, so a command that
serves the Toxiproxy API alone (``triogate toxiproxy``) starts without it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from gateway import ChildSpec, Gateway, bind_failed
from gateway.config import Address

log = logging.getLogger("triogate.admin")


def hypercorn_config(address: Address) -> HypercornConfig:
    config = HypercornConfig()
    config.bind = [str(address)]
    config.accesslog = None  # request lines would be fine, but headers must never be logged
    config.errorlog = logging.getLogger("triogate.admin.server")
    config.graceful_timeout = 1.0
    config.include_server_header = False
    return config


def bound_address(bind: str) -> Address:
    """hypercorn's ``http://host:port`` back to an ``Address``."""
    return Address.parse(bind.partition("://")[2])


def _first(group: BaseExceptionGroup[OSError]) -> OSError:
    """The first error of a (nested) exception group."""
    first: BaseException = group
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    assert isinstance(first, OSError)
    return first


def admin_service(api_key: str | None) -> Callable[[Gateway], ChildSpec]:
    """The admin API as a service of the gateway's root supervisor (``run_gateway``)."""

    def child(gateway: Gateway) -> ChildSpec:
        async def start(*, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
            await serve_admin(gateway, api_key=api_key, task_status=task_status)

        return ChildSpec(name="admin", start=start)

    return child


async def serve_admin(
    gateway: Gateway,
    *,
    api_key: str | None,
    task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the admin API on ``admin.address`` (and Toxiproxy's on ``admin.toxiproxy``,
    if set) until cancelled; reports the admin API's bound address."""
    from admin.app import create_app
    from admin.toxiproxy.server import serve_toxiproxy

    admin = gateway.control.config.admin
    address = admin.address
    app = create_app(gateway, api_key)
    async with trio.open_nursery() as nursery:
        if admin.toxiproxy is not None:
            toxiproxy = admin.toxiproxy
            await nursery.start(
                partial(serve_toxiproxy, metrics=toxiproxy.proxy_metrics),
                gateway,
                toxiproxy.address,
            )
        try:
            binds: list[str] = await nursery.start(
                partial(serve, app, hypercorn_config(address))  # type: ignore[arg-type]
            )
        except* OSError as failed:  # hypercorn binds inside nurseries of its own
            raise bind_failed("admin API (admin.address)", address, _first(failed)) from None
        gateway.admin_address = bound_address(binds[0])
        log.info("admin API on http://%s/", gateway.admin_address)
        task_status.started(gateway.admin_address)
