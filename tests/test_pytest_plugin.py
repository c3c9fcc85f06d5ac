"""The ``triogate`` pytest fixture as a user's project gets it: a separate pytest run of
test files written here, with only the installed package (its ``pytest11`` entry point).

The inner tests use the fixture the way the README shows, from a plain test, a trio
test and an asyncio one, against a real upstream (an ``http.server`` thread): a fault on
the first N requests seen by the client, a clean gateway in the next test, and a failing
test whose report names what was injected.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CONFTEST = """
import http.server
import threading

import pytest


class Hello(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = b"hello\\n"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def upstream():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
"""

TESTS = """
import asyncio

import httpx
import pytest
import trio


def test_plain(triogate, upstream):
    api = triogate.http_route("api", upstream=upstream)
    api.add_fault(abort={"status": 503}, first_n=2)
    with httpx.Client() as client:
        codes = [client.get(api.url + "/x").status_code for _ in range(4)]
    assert codes == [503, 503, 200, 200]


def test_the_next_test_starts_clean(triogate, upstream):
    assert triogate.client.get("/faults").json() == []
    api = triogate.http_route("api", upstream=upstream)  # the same name again
    assert httpx.get(api.url).text == "hello\\n"


@pytest.mark.trio
async def test_trio(triogate, upstream):
    api = triogate.http_route("slow", upstream=upstream)
    api.add_fault(delay={"fixed": 0.2})
    async with httpx.AsyncClient() as client:
        start = trio.current_time()
        r = await client.get(api.url)
        assert r.status_code == 200 and trio.current_time() - start >= 0.2


def test_asyncio(triogate, upstream):
    proxy = triogate.tcp_proxy("raw", upstream=upstream)
    proxy.add_toxic("latency", latency=300)

    async def main():
        loop = asyncio.get_running_loop()
        start = loop.time()
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        writer.write(b"GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
        data = await reader.read()
        writer.close()
        return data, loop.time() - start

    data, took = asyncio.run(main())
    assert data.endswith(b"hello\\n") and took >= 0.3
    proxy.remove_toxic("latency_downstream")
    proxy.disable()
    with pytest.raises(ConnectionRefusedError):
        asyncio.run(asyncio.open_connection(proxy.host, proxy.port))
    proxy.enable()
    assert asyncio.run(main())[0].endswith(b"hello\\n")


def test_reports_what_was_injected(triogate, upstream):
    db = triogate.tcp_proxy("db", upstream=upstream)
    db.add_toxic("bandwidth", stream="upstream", rate=50)
    api = triogate.http_route("checkout", upstream=upstream)
    api.add_fault(abort={"status": 502}, percent=100)
    httpx.get(api.url)
    assert False, "the code under test gave up"
"""


def test_the_fixture_in_a_users_test_run(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_user.py").write_text(TESTS)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    out = run.stdout + run.stderr
    assert "1 failed, 4 passed" in out, out
    assert "test_reports_what_was_injected" in out
    # the failure report says what the gateway injected and counted
    section = out.split("- triogate -", 1)[-1]
    assert "tcp proxy raw" not in section, out  # the earlier test's proxy was reset
    assert "tcp proxy db" in section, out
    assert 'toxic bandwidth_upstream: bandwidth upstream toxicity 1.0 {"rate": 50}' in section, out
    assert "http route checkout" in section, out
    assert '"abort": {"status": 502}' in section, out
    assert "fault.aborts_injected: 1" in section, out
