"""Real etcd for the fleet tests: Debian's ``etcd`` on loopback, a temporary data dir.

etcd cannot take port 0 for its client URL: its JSON gateway dials its own gRPC server
at the address it was given (port 0: refused). So the port is one the kernel picked
for a socket bound to port 0 and closed just before etcd starts, and kept across
restarts.

A test that needs etcd is skipped when the binary is missing, except under CI (the
``CI`` variable set), where ``.ci/run`` installs it and a missing one fails.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import httpx
import pytest
import trio

from tests.conftest import wait_until

ETCD = shutil.which("etcd")
_SERVING = re.compile(rb"serving (?:insecure )?client requests on 127\.0\.0\.1:(\d+)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@attrs.define(eq=False)
class EtcdServer:
    """One etcd member on loopback: started on port 0, restarted on the port it got."""

    data_dir: Path
    port: int = 0
    process: trio.Process | None = None
    #: (CA, certificate, key) files: HTTPS only, and a client certificate from the CA
    #: required (``--client-cert-auth``); None: plain HTTP
    tls: tuple[str, str, str] | None = None
    #: the client certificate and key its own readiness checks present
    client_cert: tuple[str, str] | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def _verify(self) -> ssl.SSLContext | bool:
        if self.tls is None:
            return True
        context = ssl.create_default_context(cafile=self.tls[0])
        if self.client_cert is not None:
            context.load_cert_chain(*self.client_cert)
        return context

    async def start(self) -> None:
        """Start it; return once it answers a read."""
        assert ETCD is not None
        if self.port == 0:
            self.port = _free_port()
        argv = [
            ETCD,
            "--name=test",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.url}",
            f"--advertise-client-urls={self.url}",
            "--listen-peer-urls=http://127.0.0.1:0",
            "--initial-advertise-peer-urls=http://127.0.0.1:2380",
            "--initial-cluster=test=http://127.0.0.1:2380",
            "--log-outputs=stderr",
        ]
        if self.tls is not None:
            ca, cert, key = self.tls
            argv += [f"--trusted-ca-file={ca}", f"--cert-file={cert}", f"--key-file={key}"]
            argv.append("--client-cert-auth")
        self.process = process = await trio.lowlevel.open_process(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        assert process.stderr is not None
        printed = b""
        with trio.fail_after(30):
            while not (found := _SERVING.search(printed)):
                piece = await process.stderr.receive_some()
                assert piece, f"etcd exited: {printed.decode(errors='replace')}"
                printed += piece
        assert int(found[1]) == self.port
        # the rest of its log is drained so that it never blocks on a full pipe
        trio.lowlevel.spawn_system_task(_drain, process.stderr)
        await wait_until(self.answers, within=20)

    async def answers(self) -> bool:
        try:
            async with httpx.AsyncClient(timeout=2, verify=self._verify()) as client:
                r = await client.post(f"{self.url}/v3/kv/range", json={"key": "eA=="})
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    async def stop(self) -> None:
        """SIGKILL it (as a crash, or a network cut, looks to its clients) and reap it."""
        process = self.process
        if process is not None and process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                await process.wait()

    async def call(self, path: str, body: object) -> dict[str, object]:
        async with httpx.AsyncClient(timeout=10, verify=self._verify()) as client:
            r = await client.post(f"{self.url}{path}", json=body)
        assert r.status_code == 200, r.text
        answer: dict[str, object] = r.json()
        return answer


async def _drain(stream: trio.abc.ReceiveStream) -> None:
    try:
        while await stream.receive_some():
            pass
    except (trio.ClosedResourceError, trio.BrokenResourceError):
        pass


def need_etcd() -> None:
    """Skip (fail under CI) when Debian's etcd is not installed."""
    if ETCD is None:
        if os.environ.get("CI"):
            pytest.fail("etcd is not installed: .ci/run installs Debian's etcd-server")
        pytest.skip("etcd is not installed (apt-get install etcd-server)")


@pytest.fixture
async def etcd(tmp_path: Path) -> AsyncIterator[EtcdServer]:
    """A running etcd, killed after the test."""
    need_etcd()
    server = EtcdServer(tmp_path / "etcd")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def freeze(process: trio.Process) -> None:
    """SIGSTOP: the process reads nothing, its connections stay open."""
    os.kill(process.pid, signal.SIGSTOP)


def thaw(process: trio.Process) -> None:
    os.kill(process.pid, signal.SIGCONT)
