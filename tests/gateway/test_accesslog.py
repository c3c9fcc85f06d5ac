"""Access logs: one JSON line per request, checked field by field; a slow sink drops lines."""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio
from hypothesis import given
from hypothesis import strategies as st

from gateway.app import Gateway
from gateway.config import AccessLogConfig, Config
from gateway.http1.events import NO_BODY, RequestReceived
from gateway.observe.accesslog import ENTRY_OVERHEAD, AccessLog, format_entries
from gateway.observe.record import RequestRecord
from gateway.observe.stats import ListenerStats
from tests.conftest import (
    ClosedAddress,
    StartGateway,
    StartHeldUpstream,
    StartUpstream,
    simple_config,
    wait_until,
)

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
START_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
FIELDS = [
    "start_time",
    "method",
    "path",
    "protocol",
    "response_code",
    "response_flags",
    "bytes_received",
    "bytes_sent",
    "duration",
    "upstream_service_time",
    "upstream_host",
    "upstream_cluster",
    "request_id",
    "authority",
    "traceparent",
]


async def read_lines(gateway: Gateway, path: Path, count: int) -> list[dict[str, Any]]:
    """The lines of the log, once the writer has written at least ``count``.

    The writer counts a batch once its write returned: by then the lines are in the file.
    """
    stats = gateway.stats.listeners["web"]
    await wait_until(lambda: stats.access_log_written >= count)
    return [json.loads(line) for line in (await trio.Path(path).read_bytes()).splitlines()]


async def raw_request(gateway: Gateway, request: bytes) -> bytes:
    address = gateway.listener_address("web")
    stream = await trio.open_tcp_stream(address.host, address.port)
    async with stream:
        await stream.send_all(request)
        reply = b""
        with trio.fail_after(5):
            while piece := await stream.receive_some(65536):
                reply += piece
    return reply


async def test_one_line_per_request_field_by_field(
    start_upstream: StartUpstream,
    start_gateway: StartGateway,
    closed_address: ClosedAddress,
    tmp_path: Path,
) -> None:
    live, dead = await start_upstream("live"), closed_address()
    log_path = tmp_path / "access.log"
    data = simple_config(
        {"live": [live], "dead": [dead]},
        routes=[
            {"match": {"prefix": "/slow"}, "cluster": "live", "timeout": 0.2},
            {"match": {"prefix": "/dead"}, "cluster": "dead"},
            {"match": {"path": "/only-this"}, "cluster": "live"},
            {"match": {"prefix": "/"}, "cluster": "live"},
        ],
        access_log={"enabled": True, "path": str(log_path)},
        tracing={"start_traceparent": True},
    )
    data["listeners"][0]["virtual_hosts"] = [
        {"name": "main", "domains": ["*"], "routes": data["listeners"][0].pop("routes")},
        {"name": "none", "domains": ["nothing.example"], "routes": []},
    ]
    gw = await start_gateway(data)
    authority = str(gw.listener_address("web"))
    base = f"http://{authority}"
    body = b"x" * 1000
    async with httpx.AsyncClient(base_url=base) as client:
        ok = await client.get(
            "/hello?q=1", headers={"x-request-id": "req-1", "traceparent": TRACEPARENT}
        )
        posted = await client.post("/echo", content=body)
        no_route = await client.get("/", headers={"host": "nothing.example"})
        failed = await client.get("/dead")
        timed_out = await client.get("/slow/delay/2000")
    assert [r.status_code for r in (ok, posted, no_route, failed, timed_out)] == [
        200,
        200,
        404,
        502,
        504,
    ]
    escaped = await raw_request(
        gw, b'GET /q"uo\\te HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n'
    )
    assert escaped.startswith(b"HTTP/1.1 200")
    lines = await read_lines(gw, log_path, 6)
    assert len(lines) == 6
    for line in lines:
        assert list(line) == FIELDS
        assert START_TIME.fullmatch(line["start_time"])
        assert line["protocol"] == "HTTP/1.1"
        assert line["duration"] >= 0
    first, second, third, fourth, fifth, sixth = lines

    assert first["method"] == "GET" and first["path"] == "/hello?q=1"
    assert (first["response_code"], first["response_flags"]) == (200, "-")
    assert first["bytes_received"] == 0 and first["bytes_sent"] == int(ok.headers["content-length"])
    assert 0 <= first["upstream_service_time"] <= first["duration"]
    assert first["upstream_host"] == str(live) and first["upstream_cluster"] == "live"
    assert first["request_id"] == "req-1"
    assert first["authority"] == authority
    assert first["traceparent"] == TRACEPARENT  # passed on untouched

    assert second["method"] == "POST" and second["path"] == "/echo"
    assert second["bytes_received"] == 1000 and second["bytes_sent"] == 1000
    assert UUID.fullmatch(second["request_id"])
    assert second["traceparent"] and second["traceparent"] != TRACEPARENT  # started here

    assert (third["response_code"], third["response_flags"]) == (404, "NR")
    assert third["authority"] == "nothing.example"
    assert third["upstream_host"] is None and third["upstream_cluster"] is None
    assert third["upstream_service_time"] is None
    assert third["bytes_sent"] == len(no_route.content)
    assert UUID.fullmatch(third["request_id"])

    assert (fourth["response_code"], fourth["response_flags"]) == (502, "UF")
    assert fourth["upstream_host"] == str(dead) and fourth["upstream_cluster"] == "dead"
    assert fourth["upstream_service_time"] is None

    assert (fifth["response_code"], fifth["response_flags"]) == (504, "UT")
    assert fifth["upstream_cluster"] == "live" and fifth["upstream_service_time"] is None
    assert 200 <= fifth["duration"] < 2000

    assert sixth["path"] == '/q"uo\\te'
    assert sixth["authority"] == "h"
    assert gw.stats.listeners["web"].access_log_written == 6


async def test_request_id_in_the_log_is_the_one_sent_upstream(
    start_upstream: StartUpstream, start_gateway: StartGateway, tmp_path: Path
) -> None:
    log_path = tmp_path / "access.log"
    data = simple_config(
        {"c": [await start_upstream("u")]},
        access_log={"enabled": True, "path": str(log_path)},
        tracing={"start_traceparent": True},
    )
    gw = await start_gateway(data)
    async with httpx.AsyncClient() as client:
        seen = (await client.get(f"http://{gw.listener_address('web')}/")).json()["headers"]
    [line] = await read_lines(gw, log_path, 1)
    assert line["request_id"] == seen["x-request-id"]
    assert line["traceparent"] == seen["traceparent"]
    # a trace the gateway starts takes its own request id as trace id
    assert seen["traceparent"].split("-")[1] == seen["x-request-id"].replace("-", "")


async def test_retries_exhausted_and_overflow_flags(
    start_held_upstream: StartHeldUpstream,
    start_gateway: StartGateway,
    closed_address: ClosedAddress,
    tmp_path: Path,
) -> None:
    log_path = tmp_path / "access.log"
    held = await start_held_upstream("u")
    data = simple_config(
        {"dead": [closed_address()], "tight": [held.address]},
        routes=[
            {
                "match": {"prefix": "/dead"},
                "cluster": "dead",
                "retry": {"attempts": 1, "retry_on": ["connect-failure"]},
            },
            {"match": {"prefix": "/"}, "cluster": "tight"},
        ],
        access_log={"enabled": True, "path": str(log_path)},
    )
    data["clusters"][1]["pool"] = {"max_connections": 1}
    gw = await start_gateway(data)
    base = f"http://{gw.listener_address('web')}"
    async with httpx.AsyncClient(base_url=base) as one, httpx.AsyncClient(base_url=base) as two:
        assert (await one.get("/dead")).status_code == 502
        statuses: list[int] = []

        async def get(client: httpx.AsyncClient, path: str) -> None:
            statuses.append((await client.get(path)).status_code)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(get, one, "/held")
            await held.wait_received()
            await get(two, "/")  # the one connection allowed is busy
            held.release()
    assert statuses == [503, 200]
    lines = await read_lines(gw, log_path, 3)
    assert lines[0]["response_flags"] == "UF,URX"
    assert [(x["response_code"], x["response_flags"]) for x in lines[1:]] == [
        (503, "UO"),
        (200, "-"),
    ]
    assert gw.stats.clusters["tight"].upstream_cx_overflow == 1


async def test_switched_on_and_off_at_runtime(
    start_upstream: StartUpstream, start_gateway: StartGateway, tmp_path: Path
) -> None:
    log_path = tmp_path / "access.log"
    gw = await start_gateway(simple_config({"c": [await start_upstream("u")]}))
    handle = gw.control.listeners["web"]
    url = f"http://{gw.listener_address('web')}"

    def logging_to(enabled: bool) -> Any:
        def change(config: Config) -> Config:
            [lst] = config.listeners
            log = AccessLogConfig(enabled=enabled, path=str(log_path))
            return attrs.evolve(config, listeners=(attrs.evolve(lst, access_log=log),))

        return change

    async with httpx.AsyncClient() as client:
        await client.get(f"{url}/before")
        await gw.control.apply(logging_to(True))
        await client.get(f"{url}/during")
        await read_lines(gw, log_path, 1)
        await gw.control.apply(logging_to(False))
        await client.get(f"{url}/after")
        await gw.control.apply(logging_to(True))
        await client.get(f"{url}/again")
    assert gw.control.listeners["web"] is handle  # not rebound for a log switch
    # lines keep the requests' order: a line for /after would come before /again's
    assert [x["path"] for x in await read_lines(gw, log_path, 2)] == ["/during", "/again"]
    assert gw.stats.listeners["web"].access_log_written == 2


async def test_off_by_default_costs_nothing(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    gw = await start_gateway(simple_config({"c": [await start_upstream("u")]}))
    async with httpx.AsyncClient() as client:
        await client.get(f"http://{gw.listener_address('web')}/")
    log = gw.control.listeners["web"].ctx.access_log
    assert not log.enabled and log.take() == []
    assert gw.stats.listeners["web"].access_log_written == 0


# -- the buffer and the writer (no proxy) -------------------------------------------------


def head(path: bytes = b"/p", authority: bytes = b"h") -> RequestReceived:
    return RequestReceived(
        method=b"GET",
        target=path,
        version=b"1.1",
        headers=[],
        keep_alive=True,
        framing=NO_BODY,
        content_length=0,
        host=authority,
        head_size=40,
    )


def request(
    request_id: bytes, rq_head: RequestReceived | None = None, **figures: Any
) -> RequestRecord:
    """A finished request's record, as the proxy hands it to ``AccessLog.record``."""
    values = {
        "start": 1000.0,
        "request_id": request_id,
        "status": 200,
        "duration_ms": 0.25,
        "upstream_ms": 0.125,
        "bytes_out": 13,
        "host": b'"127.0.0.1:1"',
        "cluster": b'"c"',
        **figures,
    }
    record = RequestRecord(rq_head or head(), float(values.pop("start")))
    for name, value in values.items():
        setattr(record, name, value)
    return record


def record(log: AccessLog, i: int) -> None:
    log.record(request(b"id-%d" % i, start=1000.0 + i))


def test_a_full_buffer_drops_and_counts() -> None:
    stats = ListenerStats("l")
    log = AccessLog(AccessLogConfig(enabled=True, buffer_kb=1), stats)
    for i in range(10):
        record(log, i)  # charged head size (40) + ENTRY_OVERHEAD each: 4 fit in 1 KiB
    assert 4 * (40 + ENTRY_OVERHEAD) <= 1024 < 5 * (40 + ENTRY_OVERHEAD)
    assert len(log.take()) == 4
    assert stats.access_log_dropped == 6
    record(log, 10)  # room again once the writer took the batch
    assert len(log.take()) == 1


async def test_a_stalled_sink_never_blocks_and_loses_only_what_it_counts(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # nobody reads it for now
    filler = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    filled = 0
    with contextlib.suppress(BlockingIOError):  # the pipe is full: the writer's first write stalls
        while True:
            filled += os.write(filler, bytes(4096))
    os.close(filler)
    stats = ListenerStats("l")
    log = AccessLog(AccessLogConfig(enabled=True, path=str(fifo), buffer_kb=64), stats)
    holds = log.limit // (40 + ENTRY_OVERHEAD)  # entries the buffer has room for: 273
    nursery.start_soon(log.run_writer)
    total = 0
    for n in range(5):
        for _ in range(400):
            record(log, total)
            total += 1
        if n == 0:
            assert stats.access_log_dropped == 400 - holds
            # the writer takes the buffer, then stalls writing it to the full pipe
            await wait_until(lambda: not log.pending)
    # the buffer filled once more behind the stalled writer; everything else was dropped
    assert stats.access_log_dropped == total - 2 * holds
    assert stats.access_log_written == 0
    received = b""

    def everything_read() -> bool:
        nonlocal received
        with contextlib.suppress(BlockingIOError):
            while piece := os.read(reader, 1 << 20):
                received += piece
        return stats.access_log_written == received[filled:].count(b"\n") == 2 * holds

    try:
        await wait_until(everything_read, within=10)
    finally:
        os.close(reader)
    lines = received[filled:].splitlines()
    assert len(lines) == stats.access_log_written == total - stats.access_log_dropped
    ids = [json.loads(line)["request_id"] for line in lines]
    # in order, no duplicates: the first buffer of the first batch, then of the second
    assert ids == [f"id-{i}" for i in [*range(holds), *range(400, 400 + holds)]]


async def test_the_writer_flushes_what_is_pending_when_it_stops(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(AccessLogConfig(enabled=True, path=str(path)), ListenerStats("l"))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(log.run_writer)
        await trio.lowlevel.checkpoint()
        for i in range(3):
            record(log, i)
        nursery.cancel_scope.cancel()  # before the writer's delay is over
    assert len(path.read_bytes().splitlines()) == 3


@given(
    path=st.binary(max_size=40),
    request_id=st.binary(max_size=40),
    authority=st.binary(max_size=20),
    flags=st.sampled_from(["", "UF", "UF,URX", "NR"]),
    upstream_ms=st.sampled_from([-1.0, 0.0, 12.3456]),
)
def test_every_line_is_json_whatever_the_bytes(
    path: bytes, request_id: bytes, authority: bytes, flags: str, upstream_ms: float
) -> None:
    log = AccessLog(AccessLogConfig(enabled=True), ListenerStats("l"))
    log.record(
        request(
            request_id, head(path, authority), flags=flags, upstream_ms=upstream_ms, host=b"null"
        )
    )
    line = format_entries(log.take())
    assert line.endswith(b"}\n") and line.count(b"\n") == 1
    parsed = json.loads(line)
    assert parsed["path"] == path.decode("utf-8", "backslashreplace")
    assert parsed["request_id"] == request_id.decode("utf-8", "backslashreplace")
    assert parsed["authority"] == authority.decode("utf-8", "backslashreplace")
    assert parsed["response_flags"] == (flags or "-")
    assert parsed["upstream_service_time"] == (None if upstream_ms < 0 else round(upstream_ms, 3))
    assert parsed["upstream_host"] is None and parsed["upstream_cluster"] == "c"
    assert parsed["traceparent"] is None
