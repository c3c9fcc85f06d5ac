"""Toxics and ``enabled`` on a tcp listener served by two worker processes, changed
through the admin API of ``triogate run --workers 2``: every worker takes the change
(connections spread over both by the kernel all see it)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import trio

from tests.conftest import gateway_process, refuses_connections, wait_until, worker_rows
from tests.gateway.l4_support import StreamEcho, l4_config, receive_exactly, timed, toxic

CONNECTIONS = 12


async def round_trips(host: str, port: int) -> list[float]:
    """Seconds for one echo on each of ``CONNECTIONS`` new connections, made at once."""
    times: list[float] = []

    async def one() -> None:
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            elapsed = timed()
            await stream.send_all(b"ping")
            assert await receive_exactly(stream, 4) == b"ping"
            times.append(elapsed())

    async with trio.open_nursery() as nursery:
        for _ in range(CONNECTIONS):
            nursery.start_soon(one)
    return times


async def test_every_worker_takes_a_toxic_and_a_disable(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    echo = await StreamEcho().start(nursery)
    config = tmp_path / "gw.json"
    config.write_text(json.dumps(l4_config({"api": [echo.address]})))
    async with gateway_process(config, workers=2) as gateway:
        web = gateway.listeners["tcp"]
        admin = f"http://{gateway.admin}"
        assert max(await round_trips(web.host, web.port)) < 0.2
        async with httpx.AsyncClient(base_url=admin, timeout=20) as client:
            r = await client.post(
                "/listeners/tcp/toxics", json=toxic("lag", "latency", latency=250)
            )
            assert r.status_code == 201, r.text
            times = await round_trips(web.host, web.port)
            assert all(0.25 <= t < 0.25 + 1.0 for t in times), times
            rows = await worker_rows(gateway.admin)
            assert all(row["version"] == rows[0]["version"] for row in rows), rows
            r = await client.patch("/listeners/tcp", json={"enabled": False})
            assert r.status_code == 200, r.text
            assert await refuses_connections(web)
            r = await client.patch("/listeners/tcp", json={"enabled": True, "toxics": []})
            assert r.status_code == 200, r.text
            await wait_until(lambda: _accepts(web.host, web.port), within=10)
            assert max(await round_trips(web.host, web.port)) < 0.2


async def _accepts(host: str, port: int) -> bool:
    try:
        stream = await trio.open_tcp_stream(host, port)
    except OSError:
        return False
    await stream.aclose()
    return True
