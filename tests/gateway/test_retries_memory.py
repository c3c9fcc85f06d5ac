"""Retries over memory streams (the rig of ``test_proxy_memory``): bodies held for a
retry, Envoy's attempt count, per-try timeouts, back-off, and the cluster's retry
threshold. End to end with real upstreams: ``test_retries_e2e``."""

from __future__ import annotations

import re
from typing import Any

import attrs
import trio
import trio.testing

from tests.gateway.test_proxy_memory import MemoryStream, Reader, Rig, start_rig

#: a status that never comes: the upstream holds the request unanswered
HANG = 0


@attrs.define
class Recorder:
    """An upstream that reads whole requests (bodies too) and answers the n-th one it
    gets, over all connections, with ``statuses[n]`` (``HANG``: never)."""

    statuses: list[int]
    #: (head, body as it came on the wire) of every request, in arrival order
    requests: list[tuple[bytes, bytes]] = attrs.Factory(list)

    async def __call__(self, number: int, stream: MemoryStream) -> None:
        reader = Reader(stream)
        while (head := await reader.next_head()) is not None:
            body = b""
            length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            if length:
                body = await reader.exactly(int(length.group(1)))
            elif re.search(rb"(?i)\r\ntransfer-encoding: *chunked", head):
                # to the last chunk, then its trailer lines up to the empty one
                body = await reader.until(b"\r\n0\r\n")
                while (line := await reader.until(b"\r\n")) != b"\r\n":
                    body += line
                body += line
            status = self.statuses[len(self.requests)]
            self.requests.append((head, body))
            if status == HANG:
                await trio.sleep_forever()
            await stream.send_all(b"HTTP/1.1 %d X\r\nContent-Length: 2\r\n\r\nok" % status)

    def attempt_counts(self) -> list[bytes]:
        return [
            m.group(1)
            for head, _ in self.requests
            if (m := re.search(rb"\r\nx-envoy-attempt-count: (\d+)\r\n", head))
        ]


def retry(**fields: Any) -> dict[str, Any]:
    """A route's retry policy: two retries on 5xx and resets, back-off of 1-2 ms."""
    return {
        "attempts": 2,
        "retry_on": ["5xx", "reset"],
        "backoff": {"base": 0.001, "max": 0.002},
        **fields,
    }


async def status_and_flags(rig: Rig) -> tuple[int, str]:
    [record] = await rig.records()
    return record["response_code"], record["response_flags"]


async def test_a_put_body_is_held_and_sent_again_with_each_try(nursery: trio.Nursery) -> None:
    upstream = Recorder([503, 502, 200])
    rig = await start_rig(nursery, upstream, retry=retry())
    await rig.client.send_all(b"PUT /doc HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello")
    head, body = await rig.response(2)
    assert head.startswith(b"HTTP/1.1 200 X\r\n") and body == b"ok"
    assert [body for _, body in upstream.requests] == [b"hello"] * 3
    assert upstream.attempt_counts() == [b"1", b"2", b"3"]
    stats = rig.ctx.cluster_stats["c"]
    assert (stats.upstream_rq_retry, stats.upstream_rq_retry_success) == (2, 1)
    assert stats.rq_retry_active == 0  # the request's retry slot is back
    [record] = await rig.records()
    assert (record["response_code"], record["bytes_received"]) == (200, 5)


async def test_a_chunked_body_is_held_with_its_trailers(nursery: trio.Nursery) -> None:
    upstream = Recorder([503, 200])
    rig = await start_rig(nursery, upstream, retry=retry())
    await rig.client.send_all(
        b"PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2\r\nde\r\n0\r\nx-sum: 9\r\n\r\n"
    )
    head, _ = await rig.response(2)
    assert head.startswith(b"HTTP/1.1 200 X\r\n")
    # both tries carry the same chunks, and the trailers after the last one
    want = b"3\r\nabc\r\n2\r\nde\r\n0\r\nx-sum: 9\r\n\r\n"
    assert [body for _, body in upstream.requests] == [want, want]


async def test_a_body_over_the_buffer_limit_is_streamed_with_one_try(
    nursery: trio.Nursery,
) -> None:
    upstream = Recorder([503, 200])
    rig = await start_rig(nursery, upstream, retry=retry(per_request_buffer_limit_bytes=4))
    await rig.client.send_all(b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello")
    head, _ = await rig.response(2)
    assert head.startswith(b"HTTP/1.1 503 X\r\n")
    assert [body for _, body in upstream.requests] == [b"hello"]
    # a route that retries counts every try, even a request's only one
    assert upstream.attempt_counts() == [b"1"]


async def test_a_client_waiting_for_100_continue_is_not_held(nursery: trio.Nursery) -> None:
    upstream = Recorder([503, 200])
    rig = await start_rig(nursery, upstream, retry=retry())
    await rig.client.send_all(
        b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nhi"
    )
    head, _ = await rig.response(2)
    assert head.startswith(b"HTTP/1.1 503 X\r\n")  # one try: the body was streamed
    assert len(upstream.requests) == 1


async def test_the_attempt_count_replaces_the_clients(nursery: trio.Nursery) -> None:
    upstream = Recorder([503, 200])
    rig = await start_rig(nursery, upstream, retry=retry())
    await rig.client.send_all(
        b"GET / HTTP/1.1\r\nHost: h\r\nX-Envoy-Attempt-Count: 7\r\nX-After: 1\r\n\r\n"
    )
    await rig.response(2)
    assert upstream.attempt_counts() == [b"1", b"2"]
    for head, _ in upstream.requests:
        assert head.lower().count(b"x-envoy-attempt-count") == 1
        assert b"\r\nX-After: 1\r\n" in head  # the other fields as they were


async def test_a_route_without_retries_sends_no_attempt_count(nursery: trio.Nursery) -> None:
    upstream = Recorder([200])
    rig = await start_rig(nursery, upstream)
    await rig.client.send_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    await rig.response(2)
    assert upstream.attempt_counts() == []


async def test_a_try_past_its_per_try_timeout_is_retried(nursery: trio.Nursery) -> None:
    upstream = Recorder([HANG, 200])
    rig = await start_rig(nursery, upstream, retry=retry(per_try_timeout=0.05))
    await rig.client.send_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    head, _ = await rig.response(2)
    assert head.startswith(b"HTTP/1.1 200 X\r\n")
    stats = rig.ctx.cluster_stats["c"]
    assert (stats.upstream_rq_per_try_timeout, stats.upstream_rq_timeout) == (1, 0)
    assert (stats.upstream_rq_xx[5], stats.upstream_rq_xx[2]) == (1, 1)  # the 504, the 200
    assert await status_and_flags(rig) == (200, "-")


async def test_every_try_past_its_timeout_is_a_504(nursery: trio.Nursery) -> None:
    upstream = Recorder([HANG, HANG])
    rig = await start_rig(nursery, upstream, retry=retry(attempts=1, per_try_timeout=0.02))
    await rig.client.send_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    head = await rig.reader.until(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 504 Gateway Timeout\r\n")
    stats = rig.ctx.cluster_stats["c"]
    assert stats.upstream_rq_per_try_timeout == 2
    assert stats.upstream_rq_retry_limit_exceeded == 1
    assert await status_and_flags(rig) == (504, "UT,URX")


async def test_a_per_try_timeout_is_not_retried_when_the_route_does_not_say_so(
    nursery: trio.Nursery,
) -> None:
    upstream = Recorder([HANG, 200])
    rig = await start_rig(
        nursery, upstream, retry=retry(retry_on=["connect-failure"], per_try_timeout=0.02)
    )
    await rig.client.send_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    head = await rig.reader.until(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 504 Gateway Timeout\r\n")
    assert len(upstream.requests) == 1


async def test_max_retries_zero_lets_the_first_answer_stand(nursery: trio.Nursery) -> None:
    upstream = Recorder([503, 200])
    rig = await start_rig(
        nursery, upstream, cluster={"circuit_breakers": {"max_retries": 0}}, retry=retry()
    )
    await rig.client.send_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    head, _ = await rig.response(2)
    assert head.startswith(b"HTTP/1.1 503 X\r\n")  # relayed: no retry could be made
    stats = rig.ctx.cluster_stats["c"]
    assert (stats.upstream_rq_retry, stats.upstream_rq_retry_overflow) == (0, 1)
    assert len(upstream.requests) == 1


async def test_a_failure_over_the_retry_threshold_is_not_retried(nursery: trio.Nursery) -> None:
    async def resetting(number: int, stream: MemoryStream) -> None:
        await Reader(stream).until(b"\r\n\r\n")
        await stream.aclose()  # reset before any response

    rig = await start_rig(
        nursery, resetting, cluster={"circuit_breakers": {"max_retries": 0}}, retry=retry()
    )
    await rig.client.send_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    head = await rig.reader.until(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert rig.opened == 1
    assert rig.ctx.cluster_stats["c"].upstream_rq_retry_overflow == 1


async def test_a_retry_budget_admits_its_floor(nursery: trio.Nursery) -> None:
    upstream = Recorder([503, 200])
    budget = {"budget_percent": 0, "min_retry_concurrency": 1}
    rig = await start_rig(
        nursery,
        upstream,
        cluster={"circuit_breakers": {"max_retries": 0, "retry_budget": budget}},
        retry=retry(),
    )
    await rig.client.send_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    head, _ = await rig.response(2)
    # the budget replaces max_retries: its floor of one retry in flight admits this one
    assert head.startswith(b"HTTP/1.1 200 X\r\n")
    assert rig.ctx.cluster_stats["c"].upstream_rq_retry == 1


async def test_retries_wait_a_back_off(nursery: trio.Nursery, autojump_clock: Any) -> None:
    upstream = Recorder([503, 503, 200])
    backoff = {"base": 1.0, "max": 4.0}
    rig = await start_rig(nursery, upstream, retry=retry(backoff=backoff), timeout=0)
    start = trio.current_time()
    await rig.client.send_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    head, _ = await rig.response(2)
    assert head.startswith(b"HTTP/1.1 200 X\r\n")
    waited = trio.current_time() - start
    # full jitter: the first wait in [0, 1), the second in [0, 2)
    assert 0 < waited < 3
