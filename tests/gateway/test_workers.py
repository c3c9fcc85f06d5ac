"""``triogate run --workers N``: worker processes under one control plane, end to end.

Each test runs the real command with two workers on loopback and drives it with real
clients. New connections are spread over the workers by the kernel (``SO_REUSEPORT``),
so the tests send each request on a connection of its own and read from
``/stats/workers`` which worker served what.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import Address
from tests.conftest import (
    FRESH,
    GatewayProcess,
    StartHeldUpstream,
    StartUpstream,
    admin_json,
    fresh_requests,
    gateway_process,
    refuses_connections,
    simple_config,
    wait_until,
    worker_rows,
)

RUN = (sys.executable, "-m", "triogate.cli", "run", "--no-state")


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "gw.json"
    path.write_text(json.dumps(data))
    return path


@asynccontextmanager
async def _two_workers(
    start_upstream: StartUpstream, tmp_path: Path
) -> AsyncIterator[GatewayProcess]:
    """A gateway with two workers in front of one upstream, ``u1``, in cluster ``api``."""
    upstream = await start_upstream("u1")
    config = _write(tmp_path, simple_config({"api": [upstream]}))
    async with gateway_process(config, workers=2) as gateway:
        yield gateway


async def _counter(admin: Address, name: str) -> int:
    stats = await admin_json(admin, f"/stats?filter={quote(f'^{name}$')}")
    value: int = stats["counters"][name]
    return value


async def test_counters_are_exact_over_the_workers(
    start_upstream: StartUpstream, tmp_path: Path
) -> None:
    upstream = await start_upstream("u1")
    config = _write(tmp_path, simple_config({"api": [upstream]}))
    async with gateway_process(config, workers=2) as gateway:
        web, admin = gateway.listeners["web"], gateway.admin
        answers = await fresh_requests(web, 300)
        assert [r.status_code for r in answers] == [200] * 300
        workers = await worker_rows(admin)
        assert [w["index"] for w in workers] == [0, 1]
        assert len({w["pid"] for w in workers}) == 2
        assert gateway.process.pid not in {w["pid"] for w in workers}
        # both served (the kernel spread 300 connections), and their shares add up
        shares = [w["downstream_rq_total"] for w in workers]
        assert all(share > 0 for share in shares), shares
        assert sum(shares) == 300
        async with httpx.AsyncClient() as client:
            stats = (await client.get(f"http://{admin}/stats")).json()
            prometheus = (await client.get(f"http://{admin}/stats/prometheus")).text
            clusters = (await client.get(f"http://{admin}/stats/clusters")).json()
            dashboard = (await client.get(f"http://{admin}/dashboard/data")).json()
        assert stats["counters"]["listener.web.downstream_rq_total"] == 300
        assert stats["counters"]["listener.web.downstream_rq_2xx"] == 300
        assert stats["counters"]["listener.web.downstream_cx_total"] == 300
        assert stats["counters"]["cluster.api.upstream_rq_total"] == 300
        assert stats["counters"][f"cluster.api.endpoint.{upstream}.rq_total"] == 300
        assert stats["histograms"]["listener.web.downstream_rq_time"]["count"] == 300
        assert stats["histograms"]["cluster.api.upstream_rq_time"]["count"] == 300
        assert 'triogate_listener_downstream_rq_total{listener="web"} 300\n' in prometheus
        assert (
            'triogate_listener_downstream_rq_xx{listener="web",response_code_class="2xx"}'
            " 300\n" in prometheus
        )
        per_worker = [
            f'triogate_worker_downstream_rq_total{{worker="{w["index"]}"}} '
            f"{w['downstream_rq_total']}\n"
            for w in workers
        ]
        assert all(line in prometheus for line in per_worker)
        assert 'triogate_worker_restarts_total{worker="1"} 0\n' in prometheus
        families = {f.name: f for f in text_string_to_metric_families(prometheus)}
        assert families["triogate_worker_downstream_rq"].type == "counter"
        assert clusters["api"]["upstream_rq_total"] == 300
        assert dashboard["listeners"][0]["requests"]["total"] == 300
        assert [w["downstream_rq_total"] for w in dashboard["workers"]] == shares
        assert clusters["api"]["endpoints"][0]["rq_total"] == 300
        # a reset reaches every worker
        async with httpx.AsyncClient() as client:
            r = await client.post(f"http://{admin}/stats/reset", json={})
            assert r.status_code == 200
        assert await _counter(admin, "listener.web.downstream_rq_total") == 0
        assert [w["downstream_rq_total"] for w in await worker_rows(admin)] == [0, 0]


async def test_an_acknowledged_write_holds_on_every_worker(
    start_upstream: StartUpstream, tmp_path: Path
) -> None:
    u1, u2 = await start_upstream("u1"), await start_upstream("u2")
    config = _write(tmp_path, simple_config({"one": [u1], "two": [u2]}))
    async with gateway_process(config, workers=2) as gateway:
        web, admin = gateway.listeners["web"], gateway.admin
        async with httpx.AsyncClient() as client:
            for target, version in (("two", 2), ("one", 3), ("two", 4)):
                route = {"match": {"prefix": "/"}, "cluster": target}
                r = await client.put(f"http://{admin}/listeners/web/routes/0", json=route)
                assert r.status_code == 200, r.text
                # acknowledged: every worker has it, so every new request sees it
                answers = await fresh_requests(web, 40)
                upstream = "u2" if target == "two" else "u1"
                assert {r.headers["x-upstream"] for r in answers} == {upstream}
                assert [w["version"] for w in await worker_rows(admin)] == [version, version]


async def test_a_refused_write_leaves_every_worker_as_it_was(
    start_upstream: StartUpstream, tmp_path: Path
) -> None:
    upstream = await start_upstream("u1")
    config = _write(tmp_path, simple_config({"api": [upstream]}))
    taken = socket.socket()  # a port held without SO_REUSEPORT: no one else may bind it
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        async with gateway_process(config, workers=2) as gateway:
            admin = gateway.admin
            async with httpx.AsyncClient() as client:
                second = {
                    "name": "second",
                    "address": f"127.0.0.1:{taken.getsockname()[1]}",
                    "routes": [{"match": {"prefix": "/"}, "cluster": "api"}],
                }
                r = await client.post(f"http://{admin}/listeners", json=second)
                assert r.status_code == 422
                assert "listeners[1].address" in r.text
                assert (await client.get(f"http://{admin}/config")).json()["version"] == 1
            assert [w["version"] for w in await worker_rows(admin)] == [1, 1]
            answers = await fresh_requests(gateway.listeners["web"], 20)
            assert [r.status_code for r in answers] == [200] * 20
    finally:
        taken.close()


async def test_registered_instances_reach_the_workers(
    start_upstream: StartUpstream, tmp_path: Path
) -> None:
    upstream = await start_upstream("registered")
    data = simple_config({"api": []})
    data["clusters"] = [{"name": "api", "discovery": {"type": "registry"}}]
    config = _write(tmp_path, data)
    async with gateway_process(config, workers=2) as gateway:
        web, admin = gateway.listeners["web"], gateway.admin
        answers = await fresh_requests(web, 10)
        assert {r.status_code for r in answers} == {503}  # no instance yet
        async with httpx.AsyncClient() as client:
            r = await client.post(
                f"http://{admin}/clusters/api/endpoints", json={"address": str(upstream)}
            )
            assert r.status_code == 201, r.text

        async def every_worker_has_it() -> bool:
            answers = await fresh_requests(web, 20)
            return {r.status_code for r in answers} == {200}

        # members reach the workers right after the registration (not with a write)
        await wait_until(every_worker_has_it)
        answers = await fresh_requests(web, 40)
        assert {r.headers["x-upstream"] for r in answers} == {"registered"}


async def test_a_killed_worker_costs_only_its_requests_in_flight(
    start_held_upstream: StartHeldUpstream, start_upstream: StartUpstream, tmp_path: Path
) -> None:
    upstream = await start_held_upstream("held")
    routes = [
        {"match": {"prefix": "/held"}, "cluster": "held"},
        {"match": {"prefix": "/"}, "cluster": "api"},
    ]
    data = simple_config({"api": [await start_upstream("u1")], "held": [upstream.address]}, routes)
    async with gateway_process(_write(tmp_path, data), workers=2) as gateway:
        web, admin = gateway.listeners["web"], gateway.admin
        before = await fresh_requests(web, 40)  # both workers have served some
        assert [r.status_code for r in before] == [200] * 40
        statuses: list[int | None] = []

        async def held_request() -> None:
            async with httpx.AsyncClient(limits=FRESH, timeout=10) as client:
                try:
                    statuses.append((await client.get(f"http://{web}/held")).status_code)
                except httpx.TransportError:
                    statuses.append(None)  # the connection died with its worker

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(held_request)
            await upstream.wait_received(20)
            workers = await worker_rows(admin)
            in_flight = [w["downstream_cx_active"] for w in workers]
            assert sum(in_flight) == 20
            async with httpx.AsyncClient() as client:
                status = (await client.get(f"http://{admin}/status")).json()
            assert status["listeners"]["web"]["connections"] == 20
            [endpoint] = status["clusters"]["held"]["endpoints"]
            assert endpoint["active_requests"] == endpoint["open_connections"] == 20
            victim = workers[0]
            os.kill(victim["pid"], signal.SIGKILL)

            async def restarted() -> bool:
                now = await worker_rows(admin)
                return now[0]["restarts"] == 1 and now[0]["pid"] not in (None, victim["pid"])

            await wait_until(restarted, within=15)
            upstream.release()
        # exactly the dead worker's requests failed; the other worker's all finished
        assert statuses.count(None) == in_flight[0]
        assert statuses.count(200) == 20 - in_flight[0]
        # and the restarted worker serves again, with the config in force
        answers = await fresh_requests(web, 40)
        assert [r.status_code for r in answers] == [200] * 40
        shares = [w["downstream_rq_total"] for w in await worker_rows(admin)]
        assert all(share > 0 for share in shares), shares
        # the dead worker's figures, as last read (just before the kill), stay in the
        # sums: the whole gateway's counters never go down
        total = await _counter(admin, "listener.web.downstream_rq_total")
        assert total == 40 + (20 - in_flight[0]) + 40
        assert total > sum(shares)


async def test_sigterm_drains_every_worker(
    start_held_upstream: StartHeldUpstream, tmp_path: Path
) -> None:
    upstream = await start_held_upstream("held")
    config = _write(tmp_path, simple_config({"held": [upstream.address]}))
    async with gateway_process(config, workers=2) as gateway:
        web = gateway.listeners["web"]
        pids = [w["pid"] for w in await worker_rows(gateway.admin)]
        statuses: list[int] = []

        async def held_request() -> None:
            async with httpx.AsyncClient(limits=FRESH, timeout=10) as client:
                statuses.append((await client.get(f"http://{web}/")).status_code)

        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(held_request)
            await upstream.wait_received(10)
            gateway.process.send_signal(signal.SIGTERM)
            await gateway.wait_for("draining for up to")
            await wait_until(lambda: refuses_connections(web))  # no worker accepts any more
            assert statuses == []
            upstream.release()
        assert statuses == [200] * 10
        with trio.fail_after(10):
            assert await gateway.process.wait() == 0
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)


def test_a_listener_that_cannot_be_bound_stops_the_start_in_one_line(tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        data = simple_config({"api": [Address("127.0.0.1", 1)]})
        data["listeners"][0]["address"] = f"127.0.0.1:{taken.getsockname()[1]}"
        config = _write(tmp_path, data)
        run = subprocess.run(
            [*RUN, "--workers", "2", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        taken.close()
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert "cannot bind" in lines[0] and "'web'" in lines[0]


@pytest.mark.parametrize("value", ["0", "-2", "many"])
def test_a_bad_worker_count_is_refused(tmp_path: Path, value: str) -> None:
    config = _write(tmp_path, simple_config({"api": [Address("127.0.0.1", 1)]}))
    run = subprocess.run(
        [*RUN, "--workers", value, str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "--workers" in run.stderr


async def test_listeners_added_and_moved_at_runtime_are_served_by_every_worker(
    start_upstream: StartUpstream, tmp_path: Path
) -> None:
    async with _two_workers(start_upstream, tmp_path) as gateway:
        admin = gateway.admin
        second = {
            "name": "second",
            "address": "127.0.0.1:0",
            "routes": [{"match": {"prefix": "/"}, "cluster": "api"}],
        }
        async with httpx.AsyncClient() as client:
            r = await client.post(f"http://{admin}/listeners", json=second)
            assert r.status_code == 201, r.text
            status = (await client.get(f"http://{admin}/status")).json()
        added = Address.parse(status["listeners"]["second"]["address"])
        assert added.port != 0  # port 0 resolved once, by the primary, for every worker
        answers = await fresh_requests(added, 60)
        assert [r.status_code for r in answers] == [200] * 60
        shares = [w["downstream_rq_total"] for w in await worker_rows(admin)]
        assert all(share > 0 for share in shares), shares
        # the first listener moves to another address (127.0.0.2 is loopback too): the
        # old one is let go by every worker
        old = gateway.listeners["web"]
        async with httpx.AsyncClient() as client:
            r = await client.patch(f"http://{admin}/listeners/web", json={"address": "127.0.0.2:0"})
            assert r.status_code == 200, r.text
            status = (await client.get(f"http://{admin}/status")).json()
        moved = Address.parse(status["listeners"]["web"]["address"])
        assert moved.host == "127.0.0.2" and moved.port != 0
        answers = await fresh_requests(moved, 20)
        assert [r.status_code for r in answers] == [200] * 20
        with pytest.raises(OSError):
            await trio.open_tcp_stream(old.host, old.port)


async def test_workers_stop_when_the_primary_is_killed(
    start_upstream: StartUpstream, tmp_path: Path
) -> None:
    async with _two_workers(start_upstream, tmp_path) as gateway:
        pids = [w["pid"] for w in await worker_rows(gateway.admin)]
        gateway.process.kill()
        await gateway.process.wait()

        def all_gone() -> bool:
            for pid in pids:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    continue
                # a zombie has exited: only its parent (gone) would reap it
                state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
                if state != "Z":
                    return False
            return True

        await wait_until(all_gone, within=10)


async def test_a_worker_that_stops_answering_is_replaced(
    start_upstream: StartUpstream, tmp_path: Path
) -> None:
    async with _two_workers(start_upstream, tmp_path) as gateway:
        admin = gateway.admin
        answers = await fresh_requests(gateway.listeners["web"], 40)
        assert [r.status_code for r in answers] == [200] * 40
        before = await worker_rows(admin)
        frozen = before[1]["pid"]
        os.kill(frozen, signal.SIGSTOP)  # alive, but it answers nothing
        try:
            # the read still answers, without the silent worker's figures...
            with trio.fail_after(15):
                left = await _counter(admin, "listener.web.downstream_rq_total")
            assert left == before[0]["downstream_rq_total"]

            # ...and the silent worker is killed and started again
            async def replaced() -> bool:
                now = await worker_rows(admin)
                return now[1]["restarts"] == 1 and now[1]["pid"] not in (None, frozen)

            await wait_until(replaced, within=15)
        finally:
            try:
                os.kill(frozen, signal.SIGCONT)
            except ProcessLookupError:
                pass
        answers = await fresh_requests(gateway.listeners["web"], 40)
        assert [r.status_code for r in answers] == [200] * 40


async def test_every_worker_logs_to_the_one_access_log(
    start_upstream: StartUpstream, tmp_path: Path
) -> None:
    upstream = await start_upstream("u1")
    log = tmp_path / "access.jsonl"
    data = simple_config({"api": [upstream]}, access_log={"enabled": True, "path": str(log)})
    async with gateway_process(_write(tmp_path, data), workers=2) as gateway:
        answers = await fresh_requests(gateway.listeners["web"], 200)
        assert [r.status_code for r in answers] == [200] * 200

        def lines() -> list[str]:
            return log.read_text().splitlines() if log.exists() else []

        await wait_until(lambda: len(lines()) >= 200)
        # whole lines from both processes (O_APPEND writes), one per request
        entries = [json.loads(line) for line in lines()]
        assert len(entries) == 200
        assert {e["response_code"] for e in entries} == {200}
        assert len({e["request_id"] for e in entries}) == 200
        shares = [w["downstream_rq_total"] for w in await worker_rows(gateway.admin)]
        assert all(share > 0 for share in shares), shares


async def test_workers_route_by_the_richer_match_and_keep_users_sticky(
    start_upstream: StartUpstream, tmp_path: Path
) -> None:
    ups = {name: [await start_upstream(name)] for name in ("v1", "v2", "regex", "fresh")}
    routes = [
        {
            "match": {"prefix": "/", "headers": [{"name": "x-canary", "exact": "1"}]},
            "cluster": "v2",
        },
        {"match": {"regex": "/v[0-9]+/users/[^/]+"}, "cluster": "regex"},
        {
            "name": "main",
            "match": {"prefix": "/"},
            "split": [{"cluster": "v1", "weight": 50}, {"cluster": "v2", "weight": 50}],
            "split_key": {"header": "x-user"},
        },
    ]
    config = _write(tmp_path, simple_config(ups, routes=routes))
    async with gateway_process(config, workers=2) as gateway:
        web, admin = gateway.listeners["web"], gateway.admin
        # a route added at runtime, first: it reaches every worker with the new version
        fresh = {"match": {"path": "/new", "methods": ["GET"]}, "cluster": "fresh"}
        async with httpx.AsyncClient() as client:
            r = await client.post(f"http://{admin}/listeners/web/routes?before=0", json=fresh)
            assert r.status_code == 201, r.text
        assert [w["version"] for w in await worker_rows(admin)] == [2, 2]

        async def upstreams(path: str, headers: dict[str, str], count: int = 20) -> set[str]:
            async with httpx.AsyncClient(limits=FRESH) as client:  # a connection each
                answers = [
                    await client.get(f"http://{web}{path}", headers=headers) for _ in range(count)
                ]
            return {r.headers["x-upstream"] for r in answers}

        assert await upstreams("/v3/users/bob", {}) == {"regex"}
        assert await upstreams("/v3/users/bob", {"x-canary": "1"}) == {"v2"}
        assert await upstreams("/new", {}) == {"fresh"}
        for user in ("ann", "bea", "cid", "dan", "eve", "fay"):
            # the key's hash is the same in every process: one cluster per user
            assert len(await upstreams("/page", {"x-user": user}, 8)) == 1
        rows = await worker_rows(admin)
        assert all(row["downstream_rq_total"] > 0 for row in rows), rows  # both served
