"""SIGTERM drains: the request in flight finishes, new connections are refused, the process exits."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import trio

from tests.conftest import StartUpstream, gateway_process


async def test_sigterm_lets_the_request_in_flight_finish(
    start_upstream: StartUpstream, tmp_path: Path
) -> None:
    upstream = await start_upstream("slow")
    config = tmp_path / "gw.yaml"
    config.write_text(
        f"""
admin: {{address: "127.0.0.1:0"}}
listeners:
  - {{name: web, address: "127.0.0.1:0", routes: [{{match: {{prefix: /}}, cluster: slow}}]}}
clusters:
  - {{name: slow, endpoints: [{{address: "{upstream}"}}]}}
"""
    )
    async with gateway_process(config) as gateway:
        web, admin_port = gateway.listeners["web"], gateway.admin.port
        url = f"http://{web}"
        async with httpx.AsyncClient() as client:
            with trio.fail_after(15):  # serving once the whole tree has started
                while True:  # another process: polling is the only way to know
                    ready = await client.get(f"http://127.0.0.1:{admin_port}/ready")
                    if ready.status_code == 200:
                        break
                    await trio.sleep(0.05)
        result: dict[str, int] = {}

        async def slow_request() -> None:
            async with httpx.AsyncClient() as client:
                r = await client.get(f"{url}/delay/800")
                result["status"] = r.status_code

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_request)
            await trio.sleep(0.3)  # the request is now in flight
            gateway.process.send_signal(signal.SIGTERM)
            # no new connections once draining (while the slow request is still open)
            with trio.fail_after(0.4):
                while True:
                    try:
                        stream = await trio.open_tcp_stream(web.host, web.port)
                    except OSError:
                        break
                    await stream.aclose()
                    await trio.sleep(0.02)
            assert "status" not in result
        assert result["status"] == 200
        with trio.fail_after(5):
            assert await gateway.process.wait() == 0
