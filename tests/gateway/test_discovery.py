"""Endpoint discovery: the DNS codec and client, endpoints files, the registry, and each
source end to end (real upstreams, a real DNS server on loopback, the admin API)."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio.testing

from gateway.app import Gateway
from gateway.cluster.actor import ClusterHandle, run_cluster
from gateway.config import Address, Cluster, Discovery, Endpoint, config_from_data
from gateway.discovery import (
    DnsClient,
    EndpointsFileError,
    NotRegistered,
    Registry,
    ResolutionFailed,
    parse_endpoints,
)
from gateway.discovery.dnswire import AAAA, A, DnsFormatError, decode_response, encode_query
from gateway.errors import ConfigError
from tests.conftest import StartGateway, StartUpstream, simple_config, wait_until

# -- a DNS server on loopback whose records the test sets ------------------------------


@attrs.define
class DnsZone:
    """What the test DNS server answers: addresses per (name, type), or an error code."""

    records: dict[tuple[str, int], list[str]] = attrs.Factory(dict)
    rcode: int = 0
    #: answer UDP questions with TC set, so the client must ask again over TCP
    truncate_udp: bool = False
    questions: list[tuple[str, int, str]] = attrs.Factory(list)

    def answer(self, query: bytes, transport: str) -> bytes:
        """A reply written independently of gateway.discovery.dnswire (no shared code)."""
        qid, _flags, _qd, _an, _ns, _ar = struct.unpack("!6H", query[:12])
        pos, labels = 12, []
        while query[pos]:
            labels.append(query[pos + 1 : pos + 1 + query[pos]].decode())
            pos += 1 + query[pos]
        qtype, _qclass = struct.unpack("!HH", query[pos + 1 : pos + 5])
        question = query[12 : pos + 5]
        name = ".".join(labels).lower()
        self.questions.append((name, qtype, transport))
        addresses = [] if self.rcode else self.records.get((name, qtype), [])
        truncated = self.truncate_udp and transport == "udp"
        flags = 0x8180 | (0x0200 if truncated else 0) | self.rcode
        if truncated:
            addresses = []
        answers = b""
        for text in addresses:
            family = trio.socket.AF_INET if qtype == A else trio.socket.AF_INET6
            rdata = trio.socket.inet_pton(family, text)
            # owner: a compression pointer to the question's name at offset 12
            answers += struct.pack("!HHHIH", 0xC00C, qtype, 1, 30, len(rdata)) + rdata
        return struct.pack("!6H", qid, flags, 1, len(addresses), 0, 0) + question + answers


async def _udp_and_tcp_on_one_port() -> tuple[trio.socket.SocketType, list[trio.SocketListener]]:
    """A UDP socket and TCP listeners on one loopback port.

    Port 0 picks a port free for UDP, which another socket of this machine (a test's
    listener, an outgoing connection) may hold for TCP: then that port is given back
    and another one tried, never a port taken by guesswork.
    """
    for _ in range(20):
        udp = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        await udp.bind(("127.0.0.1", 0))
        try:
            return udp, await trio.open_tcp_listeners(udp.getsockname()[1], host="127.0.0.1")
        except OSError:
            udp.close()
    raise AssertionError("no loopback port was free for both UDP and TCP in 20 tries")


async def serve_dns(
    zone: DnsZone, *, task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED
) -> None:
    """UDP and TCP on one loopback port until cancelled."""
    udp, tcp_listeners = await _udp_and_tcp_on_one_port()
    port = udp.getsockname()[1]

    async def over_tcp(stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            while len(data) < 2 or len(data) < 2 + struct.unpack("!H", data[:2])[0]:
                data += await stream.receive_some(4096)
            reply = zone.answer(data[2:], "tcp")
            await stream.send_all(struct.pack("!H", len(reply)) + reply)

    with udp:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, over_tcp, tcp_listeners)
            task_status.started(Address("127.0.0.1", port))
            while True:
                query, peer = await udp.recvfrom(4096)
                await udp.sendto(zone.answer(query, "udp"), peer)


# -- the DNS codec ------------------------------------------------------------------------


def test_query_asks_one_question_with_edns() -> None:
    q = encode_query(0x1234, "Svc.Example.", AAAA)
    assert q[:12] == struct.pack("!6H", 0x1234, 0x0100, 1, 0, 0, 1)
    assert q[12:29] == b"\x03Svc\x07Example\x00" + struct.pack("!HH", AAAA, 1)
    assert q[29:] == b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)  # OPT, 1232-byte payload


def _reply(qid: int, qtype: int, answers: bytes, count: int, *, name: bytes, flags: int) -> bytes:
    header = struct.pack("!6H", qid, flags, 1, count, 0, 0)
    return header + name + struct.pack("!HH", qtype, 1) + answers


def test_reply_follows_a_cname_chain_through_compressed_names() -> None:
    name = b"\x03svc\x04test\x00"
    target = b"\x04real\xc0\x10"  # "real" + pointer to "test" (offset 16)
    answers = (
        struct.pack("!HHHIH", 0xC00C, 5, 1, 60, len(target))
        + target
        + struct.pack("!HHHIH", 0xC00C + len(name) + 4 + 12, A, 1, 60, 4)  # owner: "real.test"
        + bytes([10, 0, 0, 7])
        + b"\x05other\x00"  # a record for an unrelated name is ignored
        + struct.pack("!HHIH", A, 1, 60, 4)
        + bytes([10, 0, 0, 9])
    )
    data = _reply(7, A, answers, 3, name=name, flags=0x8180)
    answer = decode_response(data, 7, "svc.test", A)
    assert answer.addresses == ("10.0.0.7",)
    assert answer.rcode == 0 and not answer.truncated


@pytest.mark.parametrize(
    ("mutate", "why"),
    [
        (lambda d: d[:2] + b"\x00\x08" + d[4:], "not a reply"),
        (lambda d: b"\x00\x09" + d[2:], "reply id"),
        (lambda d: d[:8], "shorter than a DNS header"),
        (lambda d: d[:-2], "record data runs past"),
        (lambda d: d.replace(b"\x03svc", b"\x03sub"), "reply is for"),
        (lambda d: d[:6] + b"\x00\x02" + d[8:], "name runs past the end"),
    ],
)
def test_reply_to_another_question_or_malformed_is_refused(
    mutate: Callable[[bytes], bytes], why: str
) -> None:
    answers = struct.pack("!HHHIH", 0xC00C, A, 1, 60, 4) + bytes([10, 0, 0, 7])
    good = _reply(8, A, answers, 1, name=b"\x03svc\x04test\x00", flags=0x8180)
    assert decode_response(good, 8, "svc.test", A).addresses == ("10.0.0.7",)
    with pytest.raises(DnsFormatError, match=why):
        decode_response(mutate(good), 8, "svc.test", A)


def test_pointer_loops_are_refused() -> None:
    looped = struct.pack("!6H", 1, 0x8180, 1, 0, 0, 0) + b"\xc0\x0c" + struct.pack("!HH", A, 1)
    with pytest.raises(DnsFormatError, match="backwards"):
        decode_response(looped, 1, "x", A)


async def test_dns_client_asks_both_families_and_falls_back_to_tcp(nursery: trio.Nursery) -> None:
    zone = DnsZone({("svc.test", A): ["127.0.0.1", "10.1.1.1"], ("svc.test", AAAA): ["::1"]})
    server = await nursery.start(serve_dns, zone)
    client = DnsClient(server)
    assert sorted(await client("svc.test", "all")) == ["10.1.1.1", "127.0.0.1", "::1"]
    assert await client("svc.test", "v6") == ["::1"]
    zone.truncate_udp = True
    assert sorted(await client("svc.test", "v4")) == ["10.1.1.1", "127.0.0.1"]
    assert zone.questions[-2:] == [("svc.test", A, "udp"), ("svc.test", A, "tcp")]
    zone.truncate_udp = False
    assert await client("nothing.test", "all") == []  # NOERROR, no records: not a failure
    zone.rcode = 2
    with pytest.raises(ResolutionFailed, match="SERVFAIL"):
        await client("svc.test", "all")
    zone.rcode = 3
    with pytest.raises(ResolutionFailed, match="NXDOMAIN"):
        await client("svc.test", "v4")


# -- endpoints files ----------------------------------------------------------------------


def test_endpoints_file_forms() -> None:
    yaml_list = "- {address: 10.0.0.1:80, weight: 3}\n- address: '[::1]:81'\n  locality: z\n"
    assert parse_endpoints(yaml_list) == (
        Endpoint(Address("10.0.0.1", 80), weight=3),
        Endpoint(Address("::1", 81), locality="z"),
    )
    as_json = json.dumps({"endpoints": [{"address": "10.0.0.1:80"}]})
    assert parse_endpoints(as_json, json_only=True) == (Endpoint(Address("10.0.0.1", 80)),)
    assert parse_endpoints("[]") == ()  # emptied on purpose: valid


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("- {address: 10.0.0.1:80", "not valid YAML"),
        ("{address: 10.0.0.1:80}", "one key, 'endpoints'"),
        ("42", "must be a list"),
        ("- {address: nope, weight: x}", "endpoints[0].address"),
        ("- {address: 10.0.0.1:80, weight: 20000}", "endpoints[0].weight: must be 0-10000"),
        ("- {address: 10.0.0.1:80}\n- {address: 10.0.0.1:80}", "listed twice"),
        ("- {address: 10.0.0.1:80, colour: red}", "endpoints[0].colour: unknown field"),
    ],
)
def test_malformed_endpoints_file_says_why(text: str, reason: str) -> None:
    with pytest.raises(EndpointsFileError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        parse_endpoints(text)


# -- the registry -------------------------------------------------------------------------


def test_registry_ttls() -> None:
    reg = Registry()
    a, b = Endpoint(Address("10.0.0.1", 80)), Endpoint(Address("10.0.0.2", 80))
    assert reg.register(a, 10, now=0)[1] is True
    assert reg.register(b, 0, now=0)[1] is True  # never expires
    assert reg.register(attrs.evolve(a, weight=5), 10, now=1)[1] is False  # replaced
    assert reg.next_expiry() == 11
    reg.renew("10.0.0.1:80", now=8)
    assert reg.expire(now=17.9) == []
    (gone,) = reg.expire(now=18)
    assert gone.endpoint.weight == 5
    assert reg.endpoints() == (b,)
    with pytest.raises(NotRegistered):
        reg.renew("10.0.0.1:80", now=18)
    reg.deregister("10.0.0.2:80")
    assert reg.endpoints() == ()


# -- config -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("discovery", "endpoints", "paths"),
    [
        ({"type": "dns"}, [], {"discovery.hostname", "discovery.port"}),
        (
            {"type": "dns", "hostname": "-bad-.x", "port": 80, "resolver": "dns.local:53"},
            [],
            {"discovery.hostname", "discovery.resolver"},
        ),
        ({"type": "file"}, [], {"discovery.path"}),
        ({"type": "file", "path": "/x", "hostname": "a"}, [], {"discovery.hostname"}),
        ({"type": "static", "interval": 3}, [], {"discovery.interval"}),
        ({"type": "registry", "default_ttl": -1}, [], {"discovery.default_ttl"}),
        ({"type": "registry"}, [{"address": "127.0.0.1:1"}], {"endpoints"}),
        ({"type": "dns", "hostname": "a.b", "port": 1, "interval": 0}, [], {"discovery.interval"}),
    ],
)
def test_discovery_config_errors_by_path(
    discovery: dict[str, Any], endpoints: list[Any], paths: set[str]
) -> None:
    data = {"clusters": [{"name": "c", "endpoints": endpoints, "discovery": discovery}]}
    with pytest.raises(ConfigError) as caught:
        config_from_data(data)
    assert {i.path.removeprefix("clusters[0].") for i in caught.value.issues} == paths


# -- the cluster actor with an injected resolver (virtual time) ---------------------------


def _dns_cluster(**discovery: Any) -> Cluster:
    return Cluster(
        "c",
        endpoints=(Endpoint(Address("10.9.9.9", 80)),),  # the seed
        discovery=Discovery(type="dns", hostname="svc.test", port=80, interval=10, **discovery),
    )


def _keys(handle: ClusterHandle) -> list[str]:
    return [str(ep.address) for ep in handle.snapshot.members]


async def test_dns_source_keeps_last_good_set_on_failure_and_empty_answer(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    answers: list[list[str] | Exception] = [
        ["10.0.0.2", "10.0.0.1"],
        ResolutionFailed("svc.test: SERVFAIL"),
        [],
        ["10.0.0.3"],
    ]

    async def resolver(name: str, family: str) -> list[str]:
        assert (name, family) == ("svc.test", "all")
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    handle = ClusterHandle(_dns_cluster())
    assert _keys(handle) == ["10.9.9.9:80"]  # the seed, before the first answer
    await nursery.start(
        lambda task_status: run_cluster(handle, resolver=resolver, task_status=task_status)
    )
    # started only once warm: the first answer is already in the snapshot
    assert _keys(handle) == ["10.0.0.1:80", "10.0.0.2:80"]
    await trio.sleep(10.5)  # virtual time: the resolution interval passing is the input
    assert _keys(handle) == ["10.0.0.1:80", "10.0.0.2:80"]
    assert handle.discovery_stats.failures == 1
    assert handle.discovery_stats.last_error == "svc.test: SERVFAIL"
    await trio.sleep(10)
    assert _keys(handle) == ["10.0.0.1:80", "10.0.0.2:80"]
    assert handle.discovery_stats.failures == 2
    assert "no address records" in (handle.discovery_stats.last_error or "")
    await trio.sleep(10)
    assert _keys(handle) == ["10.0.0.3:80"]
    stats = handle.discovery_stats
    assert (stats.source, stats.resolutions, stats.failures, stats.changes) == ("dns", 2, 2, 2)
    assert stats.last_success is not None and stats.last_failure is not None


async def test_dns_timeout_counts_as_failure(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async def hangs(name: str, family: str) -> list[str]:
        await trio.sleep_forever()
        raise AssertionError

    handle = ClusterHandle(_dns_cluster(timeout=2.0))
    await nursery.start(
        lambda task_status: run_cluster(handle, resolver=hangs, task_status=task_status)
    )
    assert _keys(handle) == ["10.9.9.9:80"]  # the seed stays
    assert handle.discovery_stats.failures == 1
    assert handle.discovery_stats.last_error == "svc.test: no answer within 2s"


async def test_registry_ttl_expiry_in_virtual_time(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    cluster = Cluster("r", discovery=Discovery(type="registry", default_ttl=10))
    handle = ClusterHandle(cluster)
    await nursery.start(run_cluster, handle)
    a, b = Endpoint(Address("10.0.0.1", 80)), Endpoint(Address("10.0.0.2", 80), weight=3)
    assert (await handle.register(a)).created
    await handle.register(b, ttl=0)  # never expires
    assert _keys(handle) == ["10.0.0.1:80", "10.0.0.2:80"]
    await trio.sleep(9)  # virtual time: the TTL running down is the input
    await handle.renew("10.0.0.1:80")
    await trio.sleep(9)
    assert _keys(handle) == ["10.0.0.1:80", "10.0.0.2:80"]
    await trio.sleep(1.5)
    assert _keys(handle) == ["10.0.0.2:80"]
    assert handle.discovery_stats.expirations == 1
    assert [r.key for r in handle.registrations] == ["10.0.0.2:80"]
    with pytest.raises(NotRegistered):
        await handle.renew("10.0.0.1:80")
    with pytest.raises(ConfigError, match="weight"):
        await handle.register(Endpoint(Address("10.0.0.3", 80), weight=-1))
    await handle.deregister("10.0.0.2:80")
    assert _keys(handle) == [] and handle.snapshot.pick(0.0) is None


# -- end to end: real upstreams behind a gateway --------------------------------------------


async def upstream_of(client: httpx.AsyncClient, gateway: Gateway, path: str = "/") -> str:
    r = await client.get(f"http://{gateway.listener_address('web')}{path}")
    return r.headers.get("x-upstream", f"<{r.status_code}>")


async def served_by(client: httpx.AsyncClient, gateway: Gateway, n: int = 6) -> set[str]:
    return {await upstream_of(client, gateway) for _ in range(n)}


def dns_config(dns: Address, port: int, upstream: Address, **discovery: Any) -> dict[str, Any]:
    data = simple_config({"svc": [upstream]})
    data["clusters"][0] = {
        "name": "svc",
        "discovery": {
            "type": "dns",
            "hostname": "svc.test",
            "port": port,
            "resolver": str(dns),
            "interval": 0.05,
            "timeout": 1.0,
            **discovery,
        },
    }
    return data


async def test_dns_cluster_follows_a_change_of_records(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    # two upstreams on one port, one on each loopback address: records pick between them
    v4: Address = await nursery.start(_demo, "v4", Address("127.0.0.1", 0))
    v6: Address = await nursery.start(_demo, "v6", Address("::1", v4.port))
    zone = DnsZone({("svc.test", A): ["127.0.0.1"]})
    dns = await nursery.start(serve_dns, zone)
    gw = await start_gateway(dns_config(dns, v4.port, v4))
    handle = gw.control.clusters["svc"]
    async with httpx.AsyncClient() as client:
        assert await served_by(client, gw) == {"v4"}  # warm at start: no 503 first
        zone.records = {("svc.test", AAAA): ["::1"]}

        async def moved() -> bool:
            return await served_by(client, gw, 2) == {"v6"}

        await wait_until(moved)
        assert [str(ep.address) for ep in handle.snapshot.members] == [f"[::1]:{v6.port}"]
        zone.records[("svc.test", A)] = ["127.0.0.1"]

        async def both() -> bool:
            return await served_by(client, gw) == {"v4", "v6"}

        await wait_until(both)
        # a failing server and an empty answer keep the last good set, and are counted
        failures = handle.discovery_stats.failures
        zone.rcode = 2
        await wait_until(lambda: handle.discovery_stats.failures >= failures + 2)
        zone.rcode, zone.records = 0, {}
        await wait_until(lambda: handle.discovery_stats.failures >= failures + 5)
        assert "no address records" in (handle.discovery_stats.last_error or "")
        assert await served_by(client, gw) == {"v4", "v6"}
    assert handle.discovery_stats.resolutions >= 3


async def _demo(
    name: str, address: Address, *, task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED
) -> None:
    from triogate.demo import serve_demo_upstream

    await serve_demo_upstream(name, address, task_status=task_status)


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def endpoints_yaml(addresses: Iterable[Address]) -> str:
    return "".join(f"- {{address: '{a}'}}\n" for a in addresses)


async def test_file_cluster_follows_atomic_replace_and_rejects_malformed(
    start_upstream: StartUpstream, start_gateway: StartGateway, tmp_path: Path
) -> None:
    u1, u2 = await start_upstream("u1"), await start_upstream("u2")
    path = tmp_path / "endpoints.yaml"
    write_atomically(path, endpoints_yaml([u1]))
    data = simple_config({"svc": [u1]})
    data["clusters"][0] = {
        "name": "svc",
        "discovery": {"type": "file", "path": str(path), "interval": 0.02},
    }
    gw = await start_gateway(data)
    handle = gw.control.clusters["svc"]
    async with httpx.AsyncClient() as client:
        assert await served_by(client, gw) == {"u1"}
        write_atomically(path, endpoints_yaml([u2]))

        async def on_u2() -> bool:
            return await served_by(client, gw, 2) == {"u2"}

        await wait_until(on_u2)
        for bad, reason in [
            ("- {address: nope}\n", "endpoints[0].address"),
            ("", "the file is empty"),
            ("- {address: '127.0.0.1:1'", "not valid YAML"),
        ]:
            failures = handle.discovery_stats.failures
            write_atomically(path, bad)
            await wait_until(lambda f=failures: handle.discovery_stats.failures >= f + 1)
            assert reason in (handle.discovery_stats.last_error or "")
            assert str(path) in (handle.discovery_stats.last_error or "")
            assert await served_by(client, gw) == {"u2"}  # the last good set
        path.unlink()
        await wait_until(lambda: handle.discovery_stats.failures >= failures + 2)
        assert await served_by(client, gw) == {"u2"}
        write_atomically(path, json.dumps([{"address": str(u1)}, {"address": str(u2)}]))

        async def both() -> bool:
            return await served_by(client, gw) == {"u1", "u2"}

        await wait_until(both)


# -- the registry through the admin API -----------------------------------------------------


async def test_registry_through_the_admin_api_with_ttl_expiry(
    mock_clock: trio.testing.MockClock, start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    # trio's clock stands still but for the test's jumps (the sockets are real): the TTLs
    # run out when the test says, not when a loaded machine gets round to a heartbeat
    u1, u2, static = [await start_upstream(n) for n in ("u1", "u2", "static")]
    data = simple_config({"reg": [], "plain": [static]})
    data["clusters"][0] = {"name": "reg", "discovery": {"type": "registry", "default_ttl": 0.4}}
    gw = await start_gateway(data, admin=True)
    base = f"http://{gw.admin_address}"
    handle = gw.control.clusters["reg"]
    async with httpx.AsyncClient(base_url=base) as admin, httpx.AsyncClient() as client:
        assert await upstream_of(client, gw) == "<503>"  # nobody registered yet
        r = await admin.post("/clusters/reg/endpoints", json={"address": str(u1)})
        assert r.status_code == 201, r.text
        assert r.headers["location"] == f"/clusters/reg/endpoints/{u1}"
        assert r.json()["ttl"] == 0.4 and 0 < r.json()["expires_in"] <= 0.4
        assert "etag" not in r.headers  # runtime state, not a config version
        r = await admin.post("/clusters/reg/endpoints", json={"address": str(u1), "weight": 2})
        assert r.status_code == 200 and r.json()["weight"] == 2  # registered again: replaced
        r = await admin.put(f"/clusters/reg/endpoints/{u2}", json={"ttl": 0})
        assert r.status_code == 201 and r.json()["expires_in"] is None
        assert await served_by(client, gw) == {"u1", "u2"}
        # heartbeats keep u1 past several TTLs
        for _ in range(6):
            mock_clock.jump(0.15)
            r = await admin.put(f"/clusters/reg/endpoints/{u1}/heartbeat", json={})
            assert r.status_code == 200, r.text
        listed = (await admin.get("/clusters/reg/endpoints")).json()
        assert sorted(e["address"] for e in listed) == sorted([str(u1), str(u2)])
        # then u1 stops: its registration expires and no more requests go there
        mock_clock.jump(0.6)
        await trio.testing.wait_all_tasks_blocked()  # the cluster actor woke and expired it
        assert [r.key for r in handle.registrations] == [str(u2)]
        assert await served_by(client, gw) == {"u2"}
        status = (await admin.get("/clusters/reg/discovery")).json()
        assert status["type"] == "registry"
        assert status["stats"]["expirations"] == 1
        assert [e["address"] for e in status["endpoints"]] == [str(u2)]
        r = await admin.put(f"/clusters/reg/endpoints/{u1}/heartbeat", json={})
        assert r.status_code == 404  # the instance must register again
        r = await admin.get(f"/clusters/reg/endpoints/{u2}")
        assert r.status_code == 200 and r.json()["ttl"] == 0
        assert (await admin.delete(f"/clusters/reg/endpoints/{u2}")).status_code == 204
        assert (await admin.delete(f"/clusters/reg/endpoints/{u2}")).status_code == 404
        assert await upstream_of(client, gw) == "<503>"
        # a bad registration says what is wrong, by field
        r = await admin.post("/clusters/reg/endpoints", json={"address": "nope", "ttl": -1})
        assert r.status_code == 422
        assert {i["loc"] for i in r.json()["detail"]} == {"address", "ttl"}
        r = await admin.put(f"/clusters/reg/endpoints/{u1}", json={"address": str(u2)})
        assert r.status_code == 422
        # a static cluster's endpoints keep their config meaning
        version = gw.control.version
        r = await admin.post("/clusters/plain/endpoints", json={"address": str(u1)})
        assert r.status_code == 201 and r.headers["etag"] == f'"{version + 1}"'
        assert [str(e.address) for e in gw.control.config.clusters[1].endpoints] == [
            str(static),
            str(u1),
        ]
        r = await admin.put(f"/clusters/plain/endpoints/{u1}/heartbeat", json={})
        assert r.status_code == 409 and "registrations" in r.json()["detail"]
        status = (await admin.get("/clusters/plain/discovery")).json()
        assert status["type"] == "static" and status["registrations"] == []
        assert (await admin.get("/clusters/nope/discovery")).status_code == 404
