"""A 1 GiB upload and a 1 GiB download pass through a real gateway process in bounded memory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from tests.conftest import StartUpstream, gateway_process

GIB = 1 << 30


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


@pytest.mark.slow
async def test_one_gib_each_way_in_bounded_memory(
    start_upstream: StartUpstream, tmp_path: Path
) -> None:
    upstream = await start_upstream("sink")
    config = tmp_path / "gw.yaml"
    config.write_text(
        f"""
admin: {{address: "127.0.0.1:0"}}
listeners:
  - name: web
    address: 127.0.0.1:0
    routes: [{{match: {{prefix: /}}, cluster: sink, timeout: 0}}]
clusters:
  - name: sink
    endpoints: [{{address: "{upstream}"}}]
"""
    )
    async with gateway_process(config) as gateway:
        baseline = peak_rss_mib(gateway.process.pid)
        url = f"http://{gateway.listeners['web']}"
        # curl streams stdin as a chunked upload; the demo upstream counts the bytes
        upload = await trio.run_process(
            f"head -c {GIB} /dev/zero | curl -sS --fail -T - -H 'Expect:' {url}/count",
            shell=True,
            capture_stdout=True,
        )
        seen = json.loads(upload.stdout)
        assert seen["body_bytes"] == GIB
        assert seen["headers"]["transfer-encoding"] == "chunked"
        download = await trio.run_process(
            [
                "curl",
                "-sS",
                "--fail",
                "-o",
                "/dev/null",
                "-w",
                "%{size_download}",
                f"{url}/bytes/{GIB}",
            ],
            capture_stdout=True,
        )
        assert int(download.stdout) == GIB
        peak = peak_rss_mib(gateway.process.pid)
        # bounded: a few read buffers per connection, never the body
        assert peak - baseline < 64, f"peak RSS grew {peak - baseline:.0f} MiB moving 2 GiB"
