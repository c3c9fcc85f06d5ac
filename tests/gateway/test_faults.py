"""HTTP faults end to end, one process: each kind as a real client sees it.

Delays are measured as at least the delay (never an upper bound); a reset is a
connection reset (ECONNRESET) on a raw socket; an empty abort a close without a byte;
garbage is something an HTTP client cannot parse; a truncated body is one the client
sees cut. Envoy's fault headers work only with ``headers_enabled`` and never reach the
upstream then; without it they pass through untouched.
"""

from __future__ import annotations

import errno
import json
import subprocess
from pathlib import Path
from typing import Any

import h11
import httpx
import pytest
import trio

from gateway.app import Gateway
from gateway.config import Address
from tests.conftest import StartGateway, StartUpstream, simple_config, wait_until
from tests.gateway.test_accesslog import read_lines


def with_faults(upstream: Address, *faults: dict[str, Any], **extra: Any) -> dict[str, Any]:
    data = simple_config(
        {"a": [upstream]}, routes=[{"name": "main", "match": {"prefix": "/"}, "cluster": "a"}]
    )
    data["faults"] = list(faults)
    data.update(extra)
    return data


async def started(
    start_upstream: StartUpstream, start_gateway: StartGateway, *faults: dict[str, Any]
) -> tuple[Gateway, str]:
    upstream = await start_upstream("a")
    gw = await start_gateway(with_faults(upstream, *faults), admin=True)
    return gw, f"http://{gw.listener_address('web')}"


async def raw_exchange(gw: Gateway, path: str = "/") -> bytes:
    """Send one request on a raw socket; everything received until the gateway closes."""
    stream = await trio.open_tcp_stream(*_host_port(gw))
    async with stream:
        await stream.send_all(b"GET %s HTTP/1.1\r\nhost: x\r\n\r\n" % path.encode())
        received = b""
        with trio.fail_after(10):
            while piece := await stream.receive_some(65536):
                received += piece
        return received


def _host_port(gw: Gateway) -> tuple[str, int]:
    address = gw.listener_address("web")
    return address.host, address.port


async def test_delay_then_abort_as_in_envoy(
    start_upstream: StartUpstream, start_gateway: StartGateway, tmp_path: Path
) -> None:
    upstream = await start_upstream("a")
    log = tmp_path / "access.log"
    data = with_faults(
        upstream, {"name": "slow-fail", "delay": {"fixed": 0.3}, "abort": {"status": 503}}
    )
    data["listeners"][0]["access_log"] = {"enabled": True, "path": str(log)}
    gw = await start_gateway(data, admin=True)
    async with httpx.AsyncClient(base_url=f"http://{gw.listener_address('web')}") as client:
        began = trio.current_time()
        r = await client.get("/x")
        elapsed = trio.current_time() - began
    assert elapsed >= 0.3
    assert (r.status_code, r.text) == (503, "fault filter abort\n")
    assert "x-upstream" not in r.headers  # answered by the gateway, not the upstream
    stats = gw.stats.listeners["web"]
    assert (stats.fault_delays_injected, stats.fault_aborts_injected) == (1, 1)
    assert stats.fault_active_faults == 0
    [line] = await read_lines(gw, log, 1)
    assert (line["response_code"], line["response_flags"]) == (503, "DI,FI")


async def test_a_delay_alone_then_the_upstream_answers(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    gw, base = await started(
        start_upstream, start_gateway, {"name": "d", "delay": {"uniform": [0.2, 0.3]}}
    )
    async with httpx.AsyncClient(base_url=base) as client:
        began = trio.current_time()
        r = await client.get("/")
        assert trio.current_time() - began >= 0.2
    assert (r.status_code, r.headers["x-upstream"]) == (200, "a")
    assert gw.stats.listeners["web"].fault_delays_injected == 1


async def test_reset_is_seen_as_a_connection_reset(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    gw, _ = await started(start_upstream, start_gateway, {"name": "r", "abort": {"reset": True}})
    with pytest.raises(trio.BrokenResourceError) as caught:
        await raw_exchange(gw)
    cause = caught.value.__cause__
    assert isinstance(cause, OSError) and cause.errno == errno.ECONNRESET
    assert gw.stats.listeners["web"].fault_aborts_injected == 1


async def test_empty_is_a_close_without_a_byte(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    gw, base = await started(start_upstream, start_gateway, {"name": "e", "abort": {"empty": True}})
    assert await raw_exchange(gw) == b""
    async with httpx.AsyncClient(base_url=base) as client:
        with pytest.raises(httpx.RemoteProtocolError, match="without sending"):
            await client.get("/")


async def test_garbage_cannot_be_parsed(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    gw, base = await started(
        start_upstream, start_gateway, {"name": "g", "abort": {"garbage": True}}
    )
    received = await raw_exchange(gw)
    assert received  # bytes came, but no HTTP response among them
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(received)
    with pytest.raises(h11.RemoteProtocolError):
        client.next_event()
    async with httpx.AsyncClient(base_url=base) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get("/")


async def test_truncate_sends_the_head_and_half_the_body(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    gw, base = await started(
        start_upstream, start_gateway, {"name": "t", "abort": {"truncate": 0.5}}
    )
    received = await raw_exchange(gw, "/some/path")
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    length = int(
        next(line for line in head.split(b"\r\n") if line.startswith(b"content-length"))[16:]
    )
    assert length > 100 and len(body) == length // 2
    async with httpx.AsyncClient(base_url=base) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get("/")
        with pytest.raises(httpx.RemoteProtocolError):  # a chunked body: cut before its end
            await client.get("/bytes/100000")
    assert gw.stats.listeners["web"].fault_aborts_injected == 3


async def test_response_rate_trickles_the_body(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    gw, base = await started(
        start_upstream, start_gateway, {"name": "slow-body", "response_rate_kbps": 8}
    )
    async with httpx.AsyncClient(base_url=base) as client:
        began = trio.current_time()
        r = await client.get("/bytes/4096")
        elapsed = trio.current_time() - began
        assert (r.status_code, len(r.content)) == (200, 4096)
        assert elapsed >= 4096 / (8 * 1024)
        # the connection's next request is decided anew (and slowed again)
        assert (await client.get("/bytes/10")).status_code == 200
    stats = gw.stats.listeners["web"]
    assert stats.fault_response_rl_injected == 2
    await wait_until(lambda: stats.fault_active_faults == 0)  # once each request ended


async def test_first_n_exact_then_reset_when_the_fault_is_replaced(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    fault = {"name": "three", "first_n": 3, "abort": {"status": 502}}
    gw, base = await started(start_upstream, start_gateway, fault)
    admin = f"http://{gw.admin_address}"
    async with httpx.AsyncClient(base_url=base) as client, httpx.AsyncClient(base_url=admin) as api:
        assert [(await client.get("/")).status_code for _ in range(6)] == [502] * 3 + [200] * 3
        # another change to the config keeps the count
        r = await api.put(
            "/listeners/web/routes/main",
            json={"name": "main", "match": {"prefix": "/"}, "cluster": "a", "timeout": 30},
        )
        assert r.status_code == 200, r.text
        assert (await client.get("/")).status_code == 200
        # the fault replaced (even by an equal one with another status) counts again
        r = await api.put("/faults/three", json={**fault, "abort": {"status": 503}})
        assert r.status_code == 200, r.text
        assert [(await client.get("/")).status_code for _ in range(4)] == [503] * 3 + [200]


async def test_percent_is_a_share_of_requests(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    _, base = await started(
        start_upstream,
        start_gateway,
        {"name": "half", "percent": 50, "abort": {"status": 503}},
        {"name": "never", "percent": 0, "abort": {"status": 500}},
    )
    async with httpx.AsyncClient(base_url=base) as client:
        statuses = [(await client.get("/")).status_code for _ in range(400)]
    # binomial(400, 0.5): sd 10; 100 and 300 are ten sd away
    assert 100 <= statuses.count(503) <= 300
    assert statuses.count(503) + statuses.count(200) == 400  # the 0% fault never fired


async def test_match_and_scope_choose_the_requests(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    a, b = await start_upstream("a"), await start_upstream("b")
    data = simple_config(
        {"a": [a], "b": [b]},
        routes=[
            {"name": "to-b", "match": {"prefix": "/b"}, "cluster": "b"},
            {"name": "main", "match": {"prefix": "/"}, "cluster": "a"},
        ],
    )
    data["faults"] = [
        {
            "name": "testers",
            "listener": "web",
            "route": "main",
            "match": {"headers": [{"name": "x-user", "exact": "test"}]},
            "abort": {"status": 418},
        },
        {"name": "on-b", "cluster": "b", "abort": {"status": 503}},
        {
            "name": "not-debug",
            "route": None,
            "listener": "web",
            "match": {"headers": [{"name": "x-debug", "regex": "on|yes", "invert": True}]},
            "cluster": "a",
            "abort": {"status": 429},
        },
    ]
    gw = await start_gateway(data, admin=True)
    async with httpx.AsyncClient(base_url=f"http://{gw.listener_address('web')}") as client:
        assert (await client.get("/", headers={"x-user": "test"})).status_code == 418
        assert (await client.get("/", headers={"x-user": "other"})).status_code == 429
        assert (await client.get("/", headers={"x-debug": "yes"})).status_code == 200
        assert (await client.get("/", headers={"x-debug": "yess"})).status_code == 429
        assert (await client.get("/b", headers={"x-user": "test"})).status_code == 503


async def test_fault_headers_honoured_when_enabled_and_stripped(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    gw, base = await started(
        start_upstream, start_gateway, {"name": "by-headers", "headers_enabled": True}
    )
    async with httpx.AsyncClient(base_url=base) as client:
        assert (await client.get("/")).status_code == 200  # no header: nothing
        r = await client.get("/", headers={"x-envoy-fault-abort-request": "418"})
        assert r.status_code == 418
        r = await client.get(
            "/",
            headers={
                "x-envoy-fault-abort-request": "418",
                "x-envoy-fault-abort-request-percentage": "0",
            },
        )
        assert r.status_code == 200
        began = trio.current_time()
        r = await client.get(
            "/",
            headers={
                "x-envoy-fault-delay-request": "200",
                "x-envoy-fault-delay-request-percentage": "100",
                "x-envoy-fault-throughput-response": "64",
                "x-other": "kept",
            },
        )
        assert trio.current_time() - began >= 0.2
        seen = json.loads(r.content)["headers"]
        assert not [name for name in seen if name.startswith("x-envoy-fault")]
        assert seen["x-other"] == "kept"
    stats = gw.stats.listeners["web"]
    assert (stats.fault_aborts_injected, stats.fault_delays_injected) == (1, 1)
    assert stats.fault_response_rl_injected == 1


async def test_fault_headers_pass_untouched_when_not_enabled(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    _, base = await started(
        start_upstream, start_gateway, {"name": "off", "percent": 0, "abort": {"status": 503}}
    )
    headers = {"x-envoy-fault-abort-request": "418", "x-envoy-fault-delay-request": "5000"}
    async with httpx.AsyncClient(base_url=base) as client:
        r = await client.get("/", headers=headers)
    assert r.status_code == 200
    seen = json.loads(r.content)["headers"]
    assert {name: seen[name] for name in headers} == headers


async def test_over_max_active_faults_the_fault_is_skipped_and_counted(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    upstream = await start_upstream("a")
    data = with_faults(upstream, {"name": "slow", "delay": {"fixed": 30}}, max_active_faults=1)
    gw = await start_gateway(data, admin=True)
    stats = gw.stats.listeners["web"]
    base = f"http://{gw.listener_address('web')}"
    async with (
        httpx.AsyncClient(base_url=base) as held,
        httpx.AsyncClient(base_url=base) as other,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(held.get, "/")
        await wait_until(lambda: stats.fault_active_faults == 1)
        r = await other.get("/")  # over the limit: not delayed
        assert (r.status_code, stats.fault_faults_overflow) == (200, 1)
        nursery.cancel_scope.cancel()
    assert stats.fault_delays_injected == 1


async def test_fault_stats_are_exported_with_envoy_names(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    gw, base = await started(start_upstream, start_gateway, {"name": "f", "abort": {"status": 500}})
    async with httpx.AsyncClient(base_url=base) as client:
        await client.get("/")
    async with httpx.AsyncClient(base_url=f"http://{gw.admin_address}") as api:
        stats = (await api.get("/stats")).json()
        prometheus = (await api.get("/stats/prometheus")).text
    assert stats["counters"]["listener.web.fault.aborts_injected"] == 1
    assert stats["gauges"]["listener.web.fault.active_faults"] == 0
    assert 'triogate_listener_fault_aborts_injected_total{listener="web"} 1' in prometheus


async def test_curl_sees_the_reset_and_the_cut_body(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    def kind(value: str) -> dict[str, Any]:
        return {"headers": [{"name": "x-kind", "exact": value}]}

    _, base = await started(
        start_upstream,
        start_gateway,
        {"name": "reset", "match": kind("reset"), "abort": {"reset": True}},
        {"name": "cut", "match": kind("cut"), "abort": {"truncate": 0.5}},
    )

    async def curl(value: str) -> subprocess.CompletedProcess[bytes]:
        return await trio.run_process(
            ["curl", "-sS", "-o", "/dev/null", "-H", f"x-kind: {value}", f"{base}/"],
            check=False,
            capture_stdout=True,
            capture_stderr=True,
        )

    reset = await curl("reset")
    assert reset.returncode == 56 and b"reset" in reset.stderr.lower()  # CURLE_RECV_ERROR
    cut = await curl("cut")
    assert cut.returncode == 18  # CURLE_PARTIAL_FILE: fewer bytes than Content-Length
    assert (await curl("none")).returncode == 0
