"""Runtime changes survive a restart, even one by ``kill -9`` in the middle of a write storm."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import trio

from gateway.control.state import load_state

CONFIG = """\
admin: {address: "127.0.0.1:0"}
listeners:
  - name: web
    address: "127.0.0.1:0"
    routes: [{name: main, match: {prefix: /}, cluster: a}]
clusters:
  - name: a
    endpoints: [{address: "127.0.0.1:9"}]
"""


class Gateway:
    """``triogate run`` as a child process, with the lines it printed so far."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._buffer = b""

    async def wait_for(self, pattern: str) -> re.Match[str]:
        assert self.process.stdout is not None
        with trio.fail_after(20):
            while True:
                for line in self.lines:
                    if found := re.search(pattern, line):
                        return found
                piece = await self.process.stdout.receive_some()
                assert piece, f"gateway exited; it printed {self.lines}"
                self._buffer += piece
                *done, rest = self._buffer.split(b"\n")
                self.lines += [line.decode() for line in done]
                self._buffer = rest


async def start(config: Path, state: Path) -> tuple[Gateway, str]:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "triogate.cli", "run", str(config), "--state-file", str(state)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    gateway = Gateway(process)
    admin = (await gateway.wait_for(r"admin API: (http://\S+?)/?$"))[1]
    return gateway, admin


async def test_state_survives_kill_9_during_a_write_storm(tmp_path: Path) -> None:
    config, state = tmp_path / "gw.yaml", tmp_path / "gw.yaml.state.json"
    config.write_text(CONFIG)
    gateway, admin = await start(config, state)
    assert "no runtime state" in gateway.lines[0]
    acked: dict[int, int] = {}  # acknowledged version -> the weight it set
    endpoint = "/clusters/a/endpoints/127.0.0.1:9"

    async def writer(client: httpx.AsyncClient, start_weight: int) -> None:
        weight = start_weight
        while True:
            weight = weight % 9000 + 1
            try:
                r = await client.patch(endpoint, json={"weight": weight})
            except httpx.HTTPError:
                return  # killed mid-request: this write was never acknowledged
            assert r.status_code == 200, r.text
            acked[int(r.headers["etag"].strip('"'))] = weight

    try:
        async with httpx.AsyncClient(base_url=admin) as client, trio.open_nursery() as nursery:
            for i in range(4):
                nursery.start_soon(writer, client, 1000 * i)
            await trio.sleep(1.0)
            gateway.process.send_signal(signal.SIGKILL)
            await gateway.process.wait()
    finally:
        gateway.process.kill()
    assert len(acked) > 20, "the storm was too weak to show anything"
    last_acked = max(acked)
    print(f"\n{len(acked)} writes acknowledged before kill -9, last version {last_acked}")

    saved = load_state(state)  # raises if the file is torn or invalid
    assert saved is not None and saved.version >= last_acked
    json.loads(state.read_text())

    gateway, admin = await start(config, state)
    try:
        loaded = int((await gateway.wait_for(r"loaded runtime state version (\d+) from"))[1])
        assert loaded == saved.version
        async with httpx.AsyncClient(base_url=admin) as client:
            r = await client.get("/config")
            assert r.json()["version"] == loaded and r.headers["etag"] == f'"{loaded}"'
            weight = (await client.get(endpoint)).json()["weight"]
        if loaded in acked:
            assert weight == acked[loaded]
    finally:
        gateway.process.kill()
        await gateway.process.wait()
