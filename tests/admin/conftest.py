"""Fixtures for the admin API tests: a real gateway, real upstreams, clients on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import trio

from gateway.app import Gateway
from gateway.config import Address
from tests.admin.admin_support import UPSTREAMS, AdminSetup, admin_config


@pytest.fixture
async def setup(
    start_upstream: Callable[[str], Awaitable[Address]],
    start_gateway: Callable[..., Awaitable[Gateway]],
) -> AsyncIterator[AdminSetup]:
    upstreams = {name: await start_upstream(name) for name in UPSTREAMS}
    gateway = await start_gateway(admin_config(upstreams), admin=True)
    assert gateway.admin_address is not None
    async with (
        httpx.AsyncClient(base_url=f"http://{gateway.admin_address}") as admin,
        httpx.AsyncClient(base_url=f"http://{gateway.listener_address('web')}") as web,
    ):
        yield AdminSetup(gateway, upstreams, admin, web)


@pytest.fixture
def start_admin(
    start_upstream: Callable[[str], Awaitable[Address]],
    start_gateway: Callable[..., Awaitable[Gateway]],
    nursery: trio.Nursery,
) -> Callable[..., Awaitable[Gateway]]:
    """Start a gateway with the admin API and extra ``run_gateway`` arguments (``api_key``)."""

    async def start(**kwargs: Any) -> Gateway:
        upstreams = {"a": await start_upstream("a")}
        return await start_gateway(admin_config(upstreams), admin=True, **kwargs)

    return start
