"""SIGTERM drains: the request in flight finishes, new connections are refused, the process exits."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import trio

from gateway.config import Address

from ..conftest import StartUpstream, free_port, gateway_process


async def test_sigterm_lets_the_request_in_flight_finish(
    start_upstream: StartUpstream, tmp_path: Path
) -> None:
    upstream = await start_upstream("slow")
    port = free_port()
    config = tmp_path / "gw.yaml"
    config.write_text(
        f"""
admin: {{address: "127.0.0.1:{free_port()}"}}
listeners:
  - {{name: web, address: "127.0.0.1:{port}", routes: [{{match: {{prefix: /}}, cluster: slow}}]}}
clusters:
  - {{name: slow, endpoints: [{{address: "{upstream}"}}]}}
"""
    )
    url = f"http://127.0.0.1:{port}"
    async with gateway_process(config, Address("127.0.0.1", port)) as gateway:
        result: dict[str, int] = {}

        async def slow_request() -> None:
            async with httpx.AsyncClient() as client:
                r = await client.get(f"{url}/delay/800")
                result["status"] = r.status_code

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_request)
            await trio.sleep(0.3)  # the request is now in flight
            gateway.send_signal(signal.SIGTERM)
            await trio.sleep(0.2)
            # no new connections once draining
            refused = False
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                await stream.aclose()
            except OSError:
                refused = True
            assert refused
        assert result["status"] == 200
        with trio.fail_after(5):
            assert await gateway.wait() == 0
