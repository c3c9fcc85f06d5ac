"""SIGTERM drains: the request in flight finishes, new connections are refused, the process exits."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import trio

from tests.conftest import StartHeldUpstream, gateway_process, refuses_connections, wait_until


async def test_sigterm_lets_the_request_in_flight_finish(
    start_held_upstream: StartHeldUpstream, tmp_path: Path
) -> None:
    upstream = await start_held_upstream("slow")
    config = tmp_path / "gw.yaml"
    config.write_text(
        f"""
admin: {{address: "127.0.0.1:0"}}
listeners:
  - {{name: web, address: "127.0.0.1:0", routes: [{{match: {{prefix: /}}, cluster: slow}}]}}
clusters:
  - {{name: slow, endpoints: [{{address: "{upstream.address}"}}]}}
"""
    )
    async with gateway_process(config) as gateway:
        web = gateway.listeners["web"]
        async with httpx.AsyncClient() as client:
            ready = await client.get(f"http://{gateway.admin}/ready")
            assert ready.status_code == 200  # serving once it printed its addresses
        result: dict[str, int] = {}

        async def slow_request() -> None:
            async with httpx.AsyncClient() as client:
                r = await client.get(f"http://{web}/")
                result["status"] = r.status_code

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_request)
            await upstream.wait_received()  # the request is in flight, held there
            gateway.process.send_signal(signal.SIGTERM)
            await gateway.wait_for("draining for up to")
            # no new connections once draining, while the request in flight is still open
            await wait_until(lambda: refuses_connections(web))
            assert "status" not in result
            upstream.release()
        assert result["status"] == 200
        with trio.fail_after(5):
            assert await gateway.process.wait() == 0
