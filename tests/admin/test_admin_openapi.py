"""The API keeps the promises of its own ``/openapi.json``, checked by schemathesis.

A real gateway serves in a thread of its own (schemathesis calls the API with blocking
requests); schemathesis generates valid and invalid requests for every operation and
checks that none gets a 5xx, an undeclared status, or an answer unlike its schema.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from functools import partial
from typing import Any

import httpx
import pytest
import schemathesis
import trio
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from admin import admin_service
from gateway.app import run_gateway
from gateway.config import config_from_data
from tests.admin.admin_support import UPSTREAMS, admin_config
from triogate.demo import serve_demo_upstream

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
#: per operation and generation mode; raise it for a deeper run (the suite keeps it small)
EXAMPLES_PER_OPERATION = int(os.environ.get("ADMIN_SCHEMATHESIS_EXAMPLES", "4"))


@pytest.fixture
def admin_url() -> Iterator[str]:
    """A gateway with the admin API, running in its own thread and trio loop."""
    started: queue.Queue[str | BaseException] = queue.Queue()
    handles: dict[str, Any] = {}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            handles["token"] = trio.lowlevel.current_trio_token()
            handles["scope"] = nursery.cancel_scope
            ups = {name: await nursery.start(serve_demo_upstream, name) for name in UPSTREAMS}
            config = config_from_data(admin_config(ups))
            gateway = await nursery.start(
                partial(run_gateway, config, services=[admin_service(None)])
            )
            started.put(f"http://{gateway.admin_address}")

    def run() -> None:
        try:
            trio.run(main)
        except BaseException as e:
            started.put(e)

    thread = threading.Thread(target=run, name="gateway", daemon=True)
    thread.start()
    url = started.get(timeout=30)
    if isinstance(url, BaseException):
        raise url
    yield url
    trio.from_thread.run_sync(handles["scope"].cancel, trio_token=handles["token"])
    thread.join(10)


def _local_discovery(cluster: Any) -> None:
    """A generated dns cluster asks a DNS server on loopback (nothing answers there)."""
    discovery = cluster.get("discovery") if isinstance(cluster, dict) else None
    if isinstance(discovery, dict) and discovery.get("type") == "dns":
        discovery["resolver"] = "127.0.0.1:9"


def loopback_listeners(case: schemathesis.Case) -> schemathesis.Case:
    """Generated listeners bind 127.0.0.1 port 0 only, generated DNS clusters resolve on
    loopback: tests never open other sockets."""
    body = case.body
    if not isinstance(body, dict):
        return case
    if case.path == "/config" and isinstance(body.get("listeners"), list):
        for listener in body["listeners"]:
            if isinstance(listener, dict) and "address" in listener:
                listener["address"] = "127.0.0.1:0"
    elif case.path in ("/listeners", "/listeners/{listener}") and "address" in body:
        body["address"] = "127.0.0.1:0"
    if case.path == "/config" and isinstance(body.get("clusters"), list):
        for cluster in body["clusters"]:
            _local_discovery(cluster)
    elif case.path in ("/clusters", "/clusters/{cluster}"):
        _local_discovery(body)
    return case


def test_api_conforms_to_its_openapi(admin_url: str) -> None:
    document = httpx.get(f"{admin_url}/openapi.json").json()
    schema = schemathesis.openapi.from_dict(document)
    schema.config.update(base_url=admin_url)
    ran: list[str] = []
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        strategy = operation.as_strategy(
            generation_mode=GenerationMode.POSITIVE
        ) | operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)

        @given(case=strategy.map(loopback_listeners))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION * 2,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            ran.append(case.operation.label)
            response = case.call(base_url=admin_url, timeout=10)
            case.validate_response(response, checks=CHECKS)

        try:
            check()
        except Exception as e:  # one report per operation, then go on with the next
            failures.append(f"{operation.label}: {e}")
    print(
        f"\nschemathesis: {len(ran)} cases over {len(set(ran))} operations, {len(failures)} failures"
    )
    assert len(set(ran)) >= 35
    assert failures == []
