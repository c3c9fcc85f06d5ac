"""Shared fixtures: real upstreams and gateways on loopback, port 0 everywhere."""

from __future__ import annotations

import inspect
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio
from hypothesis import HealthCheck, settings

from admin import admin_service
from gateway.app import Gateway, run_gateway
from gateway.config import Address, config_from_data
from triogate.demo import serve_demo_upstream

settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

StartUpstream = Callable[[str], Awaitable[Address]]


def free_port() -> int:
    """A loopback port nothing listens on (bound once, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def closed_address() -> Address:
    """An address that refuses connections: an upstream that is down."""
    return Address("127.0.0.1", free_port())


#: seconds between two looks of ``wait_until``
POLL_INTERVAL = 0.01

T = TypeVar("T")


async def wait_until(predicate: Callable[[], T | Awaitable[T]], *, within: float = 5.0) -> T:
    """Poll ``predicate`` until it returns something true; return that.

    For state that tells no one when it changes: another process, a file, a counter the
    data path bumps. Where there is an event to wait on, wait on the event instead.
    ``predicate`` may be a coroutine function (one that makes a request, say). The test
    fails once ``within`` seconds pass without it coming true: the bound is the helper's
    own (not a cancel scope left to each caller) so that no poll can go on unbounded.
    """
    with trio.move_on_after(within):
        while True:
            result = predicate()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result  # type: ignore[return-value]
            await trio.sleep(POLL_INTERVAL)
    name = getattr(predicate, "__qualname__", repr(predicate))
    raise AssertionError(f"{name} did not come true within {within} s")


async def wait_listening(address: Address) -> None:
    async def accepts() -> bool:
        try:
            stream = await trio.open_tcp_stream(address.host, address.port)
        except OSError:
            return False
        await stream.aclose()
        return True

    await wait_until(accepts, within=15.0)


@asynccontextmanager
async def gateway_process(config: Path, listen: Address) -> AsyncIterator[trio.Process]:
    """``triogate run CONFIG`` as a real process, once ``listen`` accepts; stopped after."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "triogate.cli", "run", "--no-state", str(config)],
        stdout=subprocess.DEVNULL,
    )
    try:
        await wait_listening(listen)
        yield process
    finally:
        if process.returncode is None:
            process.terminate()
            with trio.move_on_after(15):
                await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


StartGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture
def start_upstream(nursery: trio.Nursery) -> StartUpstream:
    """Start a demo upstream named ``name``; returns its address."""

    async def start(name: str) -> Address:
        address: Address = await nursery.start(serve_demo_upstream, name)
        return address

    return start


def simple_config(
    clusters: dict[str, list[Address]], routes: list[dict[str, Any]] | None = None, **listener: Any
) -> dict[str, Any]:
    """A one-listener config on port 0 with the given clusters (plain data, for editing)."""
    first = next(iter(clusters))
    return {
        "admin": {"address": "127.0.0.1:0"},
        "listeners": [
            {
                "name": "web",
                "address": "127.0.0.1:0",
                "routes": routes or [{"match": {"prefix": "/"}, "cluster": first}],
                **listener,
            }
        ],
        "clusters": [
            {"name": name, "endpoints": [{"address": str(a)} for a in addrs]}
            for name, addrs in clusters.items()
        ],
    }


@pytest.fixture
def start_gateway(nursery: trio.Nursery) -> StartGateway:
    """Start a gateway for a config given as plain data; returns its handle."""

    async def start(
        data: dict[str, Any], *, admin: bool = False, api_key: str | None = None, **kwargs: Any
    ) -> Gateway:
        config = config_from_data(data)
        services = [admin_service(api_key)] if admin else []
        gateway: Gateway = await nursery.start(
            lambda task_status: run_gateway(
                config, services=services, task_status=task_status, **kwargs
            )
        )
        return gateway

    return start
