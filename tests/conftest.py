"""Shared fixtures: real upstreams and gateways on loopback, port 0 everywhere."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, settings

from gateway.app import Gateway, run_gateway
from gateway.config import Address, config_from_data
from gateway.demo import serve_demo_upstream

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

    async def start(data: dict[str, Any], *, admin: bool = False, **kwargs: Any) -> Gateway:
        config = config_from_data(data)
        gateway: Gateway = await nursery.start(
            lambda task_status: run_gateway(config, admin=admin, task_status=task_status, **kwargs)
        )
        return gateway

    return start
