"""``wasm:`` filters end to end: proxy-wasm modules (our WAT filters, the AssemblyScript
SDK's published example) in a real gateway's chains, real clients (httpx, raw sockets
for TCP), a recording upstream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import trio

from gateway.app import Gateway
from gateway.config import Address
from gateway.filters import wasm_adapter
from tests.conftest import StartGateway, simple_config, wait_until
from tests.gateway.l4_support import StreamEcho, connect, l4_config, read_to_end
from tests.gateway.test_filters_e2e import Recorder
from tests.wasm.conftest import filter_path


def wasm(name: str, module: str | Path, **options: Any) -> dict[str, Any]:
    path = module if isinstance(module, Path) else filter_path(module)
    return {"name": name, "wasm": {"path": str(path), **options}}


async def gateway_with(
    nursery: trio.Nursery,
    start_gateway: StartGateway,
    filters: list[dict[str, Any]],
    routes: list[dict[str, Any]] | None = None,
) -> tuple[Gateway, str, Recorder]:
    a = await Recorder("a").start(nursery)
    data = simple_config({"a": [a.address]}, routes=routes, http_filters=filters)
    gw = await start_gateway(data, admin=True)
    return gw, f"http://{gw.listener_address('web')}", a


async def stats_of(gw: Gateway) -> dict[str, Any]:
    async with httpx.AsyncClient() as admin:
        return (await admin.get(f"http://{gw.admin_address}/stats")).json()  # type: ignore[no-any-return]


async def test_the_assemblyscript_example_adds_its_header_for_the_client(
    nursery: trio.Nursery, start_gateway: StartGateway, assemblyscript_build: Path
) -> None:
    example = assemblyscript_build / "add_header.wasm"
    flt = wasm("hello", example, root_id="add_header", config="from config")
    _gw, url, a = await gateway_with(nursery, start_gateway, [flt])
    async with httpx.AsyncClient() as client:
        r = await client.get(f"{url}/x")
        again = await client.get(f"{url}/y")
    assert (r.status_code, r.text) == (200, "hello from upstream")
    assert r.headers["hello"] == "from config"
    assert again.headers["hello"] == "from config"
    assert [q["target"] for q in a.requests] == ["/x", "/y"]


async def test_a_header_added_by_a_module_reaches_the_upstream(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    _gw, url, a = await gateway_with(nursery, start_gateway, [wasm("tag", "add_header")])
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{url}/x")).status_code == 200
    assert a.requests[0]["headers"]["x-wasm"] == "1"


async def test_a_trap_fails_that_request_only_with_500_and_is_counted(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    gw, url, a = await gateway_with(nursery, start_gateway, [wasm("bad", "faults")])
    (host,) = [live.host for live in wasm_adapter._hosts.values() if "faults" in live.host.name]
    async with httpx.AsyncClient() as client:
        before = await client.get(f"{url}/before")
        trapped = await client.get(f"{url}/trap", headers={"x-trap": "1"})
        # the fresh instance was made at the end of the request that trapped
        await wait_until(lambda: host.reinstantiations == 1)
        after = await client.get(f"{url}/after")
    assert host.reinstantiations == 1
    assert (before.status_code, trapped.status_code, after.status_code) == (200, 500, 200)
    assert [q["target"] for q in a.requests] == ["/before", "/after"]
    counters = (await stats_of(gw))["counters"]
    assert counters["listener.web.http_filter.bad.wasm.trap"] == 1
    assert counters["listener.web.http_filter.bad.error"] == 1
    assert counters["listener.web.http_filter.bad.wasm.timeout"] == 0


async def test_fail_open_skips_a_trapping_module(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    flt = wasm("bad", "faults", fail_open=True)
    gw, url, a = await gateway_with(nursery, start_gateway, [flt])
    async with httpx.AsyncClient() as client:
        r = await client.get(f"{url}/trap", headers={"x-trap": "1"})
    assert r.status_code == 200
    assert [q["target"] for q in a.requests] == ["/trap"]
    assert (await stats_of(gw))["counters"]["listener.web.http_filter.bad.wasm.trap"] == 1


async def test_a_callback_past_max_ms_per_call_is_a_counted_timeout(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    flt = wasm("slow", "faults", max_ms_per_call=20)
    gw, url, a = await gateway_with(nursery, start_gateway, [flt])
    async with httpx.AsyncClient() as client:
        looped = await client.get(f"{url}/loop", headers={"x-loop": "1"})
        after = await client.get(f"{url}/after")
    assert (looped.status_code, after.status_code) == (500, 200)
    counters = (await stats_of(gw))["counters"]
    assert counters["listener.web.http_filter.slow.wasm.timeout"] == 1
    assert [q["target"] for q in a.requests] == ["/after"]


async def test_a_modules_local_response_never_reaches_the_upstream(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    _gw, url, a = await gateway_with(nursery, start_gateway, [wasm("deny", "local_reply")])
    async with httpx.AsyncClient() as client:
        r = await client.get(f"{url}/x")
        again = await client.post(f"{url}/y", content=b"a body")
    assert (r.status_code, r.text, r.headers["x-why"]) == (403, "no entry", "wasm")
    assert again.status_code == 403
    assert a.requests == []


async def test_a_paused_request_goes_on_when_the_modules_tick_resumes_it(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    _gw, url, a = await gateway_with(nursery, start_gateway, [wasm("hold", "pause")])
    async with httpx.AsyncClient() as client:
        with trio.fail_after(5):
            r = await client.get(f"{url}/held")
    assert r.status_code == 200
    assert a.requests[0]["headers"]["x-resumed"] == "tick"


async def test_a_module_reads_the_requests_properties(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    routes = [{"name": "main", "match": {"prefix": "/"}, "cluster": "a"}]
    flt = wasm("props", "properties", root_id="props_root")
    _gw, url, a = await gateway_with(nursery, start_gateway, [flt], routes)
    async with httpx.AsyncClient() as client:
        assert (await client.post(f"{url}/p/q?x=1", content=b"")).status_code == 200
    headers = a.requests[0]["headers"]
    assert headers["x-path"] == "/p/q?x=1"
    assert headers["x-url-path"] == "/p/q"
    assert headers["x-method"] == "POST"
    assert headers["x-host"] == url.removeprefix("http://")
    assert headers["x-source"].startswith("127.0.0.1")
    assert headers["x-route"] == "main"
    assert headers["x-cluster"] == "a"
    assert headers["x-root-id"] == "props_root"
    assert "x-missing" not in headers


async def test_a_modules_metrics_are_in_stats_and_prometheus(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    gw, url, _a = await gateway_with(nursery, start_gateway, [wasm("count", "count_requests")])
    async with httpx.AsyncClient() as client:
        for _ in range(3):
            assert (await client.get(f"{url}/x")).status_code == 200
        text = (await client.get(f"http://{gw.admin_address}/stats/prometheus")).text
    stats = await stats_of(gw)
    assert stats["counters"]["wasmcustom.requests_seen"] == 3
    assert stats["gauges"]["wasmcustom.in_flight"] == 0
    assert stats["histograms"]["wasmcustom.header_count"]["count"] == 3
    assert "triogate_wasmcustom_requests_seen_total 3" in text.splitlines()
    assert "triogate_wasmcustom_header_count_count 3" in text.splitlines()


async def test_a_network_module_rewrites_tcp_bytes_both_ways(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    echo = await StreamEcho().start(nursery)
    flt = wasm("proto", "network")
    gw = await start_gateway(l4_config({"api": [echo.address]}, network_filters=[flt]))
    stream = await connect(gw)
    async with stream:
        await stream.send_all(b"hello")
        await stream.send_eof()
        received = await read_to_end(stream)
    # "> " before what the client sent (upstream), " <" after what came back (downstream)
    assert received.startswith(b"> hello")
    assert received.endswith(b" <")
    assert received.replace(b" <", b"") == b"> hello"


async def test_an_admin_change_of_the_modules_config_swaps_for_new_requests(
    nursery: trio.Nursery, start_gateway: StartGateway, assemblyscript_build: Path
) -> None:
    example = assemblyscript_build / "add_header.wasm"
    flt = wasm("hello", example, root_id="add_header", config="one")
    gw, url, _a = await gateway_with(nursery, start_gateway, [flt])

    def hosts(config: str) -> list[Any]:
        return [live.host for key, live in wasm_adapter._hosts.items() if key[4] == config]

    async with (
        httpx.AsyncClient(base_url=f"http://{gw.admin_address}") as admin,
        httpx.AsyncClient() as client,
    ):
        assert (await client.get(f"{url}/1")).headers["hello"] == "one"
        (old,) = hosts("one")  # validation and publication loaded it once
        changed = wasm("hello", example, root_id="add_header", config="two")
        r = await admin.patch("/listeners/web", json={"http_filters": [changed]})
        assert r.status_code == 200, r.text
        assert (await client.get(f"{url}/2")).headers["hello"] == "two"
        assert len(hosts("two")) == 1
        assert hosts("one") == [] and old.closed  # no chain used it: closed


async def test_a_module_that_imports_an_unprovided_function_is_refused_and_the_config_stays(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    gw, url, a = await gateway_with(nursery, start_gateway, [wasm("tag", "add_header")])
    async with (
        httpx.AsyncClient(base_url=f"http://{gw.admin_address}") as admin,
        httpx.AsyncClient() as client,
    ):
        r = await admin.patch(
            "/listeners/web", json={"http_filters": [wasm("tag", "missing_import")]}
        )
        assert 400 <= r.status_code < 500
        assert "listeners[0].http_filters[0].wasm" in r.text
        assert "proxy_http_call" in r.text
        assert (await client.get(f"{url}/still")).status_code == 200
    assert a.requests[0]["headers"]["x-wasm"] == "1"


async def test_ticks_stop_once_a_closed_host_has_no_context(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    gw, url, _a = await gateway_with(nursery, start_gateway, [wasm("hold", "pause")])
    async with (
        httpx.AsyncClient(base_url=f"http://{gw.admin_address}") as admin,
        httpx.AsyncClient() as client,
    ):
        assert (await client.get(f"{url}/1")).status_code == 200
        (old,) = [live.host for live in wasm_adapter._hosts.values() if "pause" in live.host.name]
        r = await admin.patch("/listeners/web", json={"http_filters": []})
        assert r.status_code == 200, r.text
    assert old.closed
    await wait_until(lambda: old.live_contexts() == 0 and not old._vms)


async def test_a_held_request_body_is_given_whole_and_bodies_are_rewritten(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    _gw, url, a = await gateway_with(nursery, start_gateway, [wasm("bodies", "bodies")])
    payload = b"piece " * 20000  # 120,000 bytes: several pieces, each held
    async with httpx.AsyncClient() as client:
        r = await client.post(f"{url}/echo", content=payload)
    assert r.status_code == 200
    # nothing of the body went up before its end: only what replaced it, whole
    assert a.requests[0]["body"] == b"replaced"
    assert r.content == b"replacedreplaced"  # echoed, each response piece doubled


def test_validation_and_publication_share_one_host_and_a_new_file_is_a_new_host(
    tmp_path: Path,
) -> None:
    from gateway.config import config_from_data
    from gateway.filters.factories import build_chains
    from gateway.observe.stats import StatsRegistry

    module = tmp_path / "noop.wat"
    module.write_bytes(filter_path("noop").read_bytes())
    data = simple_config({"a": [Address("127.0.0.1", 9)]}, http_filters=[wasm("n", module)])

    def loaded() -> list[Any]:
        return [live.host for key, live in wasm_adapter._hosts.items() if key[1] == str(module)]

    config = config_from_data(data)  # validation, outside a run (the CLI's): no ticks yet
    (host,) = loaded()
    chains, _ = build_chains(config, StatsRegistry())
    assert chains["web"].members[0].factory.host is host  # type: ignore[attr-defined]
    config_from_data(data)  # the same entry in the next config version: the same host
    assert loaded() == [host]
    module.write_bytes(filter_path("noop").read_bytes() + b"\n;; changed\n")
    config_from_data(data)
    assert len(loaded()) == 2 and host in loaded()


async def test_a_network_module_that_pauses_gets_the_held_bytes_again_with_the_next(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    echo = await StreamEcho().start(nursery)
    flt = wasm("hold", "network_hold")
    gw = await start_gateway(l4_config({"api": [echo.address]}, network_filters=[flt]))
    stream = await connect(gw)
    async with stream:
        await stream.send_all(b"hello")  # 5 bytes: held
        await trio.sleep(0.1)
        await stream.send_all(b" world!")  # 12 with what was held: replaced, sent on
        await stream.send_eof()
        received = await read_to_end(stream)
    assert received == b"whole"
