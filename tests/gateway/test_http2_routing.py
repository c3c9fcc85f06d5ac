"""HTTP/2 requests take the same data path as HTTP/1.1 ones: retries, faults, splits,
the access log's figures, and a drain (GOAWAY, in-flight streams complete)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import h2.events
import httpx
import trio
from hyperframe.frame import DataFrame, Frame, HeadersFrame

from gateway.config import Address
from tests.conftest import StartGateway, StartUpstream, simple_config
from tests.gateway.test_http2_defence import GET, exchange, raw_client


def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(http1=False, http2=True, timeout=10)


async def test_a_retry_after_a_connect_failure(
    start_upstream: StartUpstream,
    start_gateway: StartGateway,
    closed_address: Callable[[], Address],
) -> None:
    good = await start_upstream("good")
    data = simple_config(
        {"api": [closed_address(), good]},
        routes=[
            {
                "match": {"prefix": "/"},
                "cluster": "api",
                "retry": {"attempts": 2, "retry_on": ["connect-failure"]},
            }
        ],
    )
    gateway = await start_gateway(data)
    web = gateway.listener_address("web")
    async with client() as http:
        for _ in range(20):
            got = await http.get(f"http://{web}/r")
            assert got.status_code == 200
            assert got.http_version == "HTTP/2"
    assert gateway.stats.cluster("api").upstream_rq_retry > 0


async def test_a_fault_abort_and_a_split(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    a, b = await start_upstream("a"), await start_upstream("b")
    data: dict[str, Any] = simple_config(
        {"a": [a], "b": [b]},
        routes=[
            {
                "name": "main",
                "match": {"prefix": "/"},
                "split": [{"cluster": "a", "weight": 50}, {"cluster": "b", "weight": 50}],
            }
        ],
    )
    data["faults"] = [
        {
            "name": "testers",
            "listener": "web",
            "route": "main",
            "match": {"headers": [{"name": "x-user", "exact": "test"}]},
            "abort": {"status": 418},
        }
    ]
    gateway = await start_gateway(data)
    web = gateway.listener_address("web")
    seen = set()
    async with client() as http:
        aborted = await http.get(f"http://{web}/f", headers={"x-user": "test"})
        assert aborted.status_code == 418
        assert aborted.text == "fault filter abort\n"
        for _ in range(40):
            got = await http.get(f"http://{web}/s")
            seen.add(got.headers["x-upstream"])
    assert seen == {"a", "b"}
    stats = gateway.stats.listener("web")
    assert stats.fault_aborts_injected == 1
    assert stats.downstream_rq_xx[2] == 40


async def test_drain_sends_goaway_and_lets_streams_finish(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    up = await start_upstream("up")
    gateway = await start_gateway(simple_config({"api": [up]}))
    web = gateway.listener_address("web")
    async with await trio.open_tcp_stream(web.host, web.port) as stream:
        conn = raw_client()
        slow = [*GET[:2], (b":path", b"/delay/300"), GET[3]]
        conn.send_headers(1, slow, end_stream=True)
        conn.send_headers(3, slow, end_stream=True)
        await stream.send_all(conn.data_to_send())
        await trio.sleep(0.1)  # both streams are with the upstream
        await gateway.control.listeners["web"].drain(5.0)
        events = await exchange(stream, conn, h2.events.ConnectionTerminated)
        goaway = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
        assert goaway and goaway[0].error_code == 0 and goaway[0].last_stream_id == 3
        # the streams in flight complete (h2's client state machine stops at a GOAWAY:
        # the frames after it are read raw, to the connection's end)
        raw = b""
        with trio.fail_after(10):
            while piece := await stream.receive_some(65536):
                raw += piece
    ended = set()
    while raw:
        frame, length = Frame.parse_frame_header(memoryview(raw[:9]))
        frame.parse_body(memoryview(raw[9 : 9 + length]))
        raw = raw[9 + length :]
        if isinstance(frame, HeadersFrame | DataFrame) and "END_STREAM" in frame.flags:
            ended.add(frame.stream_id)
    assert ended == {1, 3}
    assert gateway.stats.listener("web").http2_goaway_sent >= 1
