"""UDP listeners end to end: real datagram sockets on loopback, port 0 everywhere.

The upstreams are small echo servers that answer each datagram with their name and the
datagram, and remember from which address each came (one address per gateway session).
"""

from __future__ import annotations

import socket
import statistics
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
import yaml

from gateway.app import Gateway
from gateway.config import Address, Config, ToxicAttributes, config_from_data
from gateway.config.model import Toxic
from gateway.errors import ConfigError
from tests.conftest import StartGateway, gateway_process, wait_until
from tests.strategies import share_tolerance

pytestmark = pytest.mark.filterwarnings("error")


@attrs.define(eq=False)
class EchoUpstream:
    """A UDP echo server: answers ``name:datagram`` to whoever sent it."""

    name: str
    sock: trio.socket.SocketType
    #: the source address of every datagram received, in order
    sources: list[tuple[str, int]] = attrs.Factory(list)

    @property
    def address(self) -> Address:
        host, port = self.sock.getsockname()[:2]
        return Address(host, port)

    async def serve(self) -> None:
        with self.sock:
            while True:
                data, source = await self.sock.recvfrom(65535)
                self.sources.append(source)
                await self.sock.sendto(self.name.encode() + b":" + data, source)


async def start_echo(nursery: trio.Nursery, name: str) -> EchoUpstream:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))
    upstream = EchoUpstream(name, sock)
    nursery.start_soon(upstream.serve)
    return upstream


class Client:
    """A client socket of its own (one session), on ``ip``."""

    def __init__(self, target: Address, ip: str = "127.0.0.1") -> None:
        self.target = (target.host, target.port)
        self.sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.ip = ip

    async def __aenter__(self) -> Client:
        await self.sock.bind((self.ip, 0))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.sock.close()

    async def send(self, data: bytes) -> None:
        await self.sock.sendto(data, self.target)

    async def receive(self, within: float = 2.0) -> bytes | None:
        """The next reply (asserting that it came from the listener), or None."""
        with trio.move_on_after(within):
            data, source = await self.sock.recvfrom(65535)
            assert source[:2] == self.target, f"reply from {source}, not the listener"
            return bytes(data)
        return None

    async def ask(self, data: bytes, within: float = 2.0) -> bytes | None:
        await self.send(data)
        return await self.receive(within)

    async def round_trip(self, data: bytes) -> float:
        start = trio.current_time()
        reply = await self.ask(data)
        assert reply is not None and reply.endswith(b":" + data), reply
        return trio.current_time() - start


def udp_config(
    *upstreams: EchoUpstream, lb_policy: str = "round_robin", **listener: Any
) -> dict[str, Any]:
    return {
        "admin": {"address": "127.0.0.1:0"},
        "listeners": [
            {
                "name": "dns",
                "address": "127.0.0.1:0",
                "protocol": "udp",
                "cluster": "echo",
                **listener,
            }
        ],
        "clusters": [
            {
                "name": "echo",
                "lb_policy": lb_policy,
                "endpoints": [{"address": str(u.address)} for u in upstreams],
            }
        ],
    }


def toxic(name: str, type_: str, stream: str = "upstream", **settings: Any) -> Toxic:
    toxicity = settings.pop("toxicity", 1.0)
    source = tuple(settings.pop("source", ()))
    return Toxic(name, type_, stream, toxicity, ToxicAttributes(**settings), source)  # type: ignore[arg-type]


def with_listener(**changes: Any) -> Any:
    def change(config: Config) -> Config:
        [listener] = config.listeners
        return attrs.evolve(config, listeners=(attrs.evolve(listener, **changes),))

    return change


def listener_stats(gw: Gateway) -> dict[str, int]:
    stats = gw.stats.listener("dns")
    return {**stats.counters(), **stats.gauges()}


async def test_sessions_per_client_address_replies_from_the_listener(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    echo = await start_echo(nursery, "e")
    gw = await start_gateway(udp_config(echo))
    address = gw.listener_address("dns")
    async with Client(address) as one, Client(address) as two:
        for i in range(3):
            assert await one.ask(b"one%d" % i) == b"e:one%d" % i
            assert await two.ask(b"two%d" % i) == b"e:two%d" % i
    # one upstream socket per session, kept for all its datagrams
    assert len(echo.sources) == 6 and len(set(echo.sources)) == 2
    assert echo.sources[0] == echo.sources[2] == echo.sources[4]
    stats = listener_stats(gw)
    assert stats["downstream_sess_total"] == 2 and stats["downstream_sess_active"] == 2
    assert stats["downstream_sess_rx_datagrams"] == 6 == stats["downstream_sess_tx_datagrams"]
    assert stats["downstream_sess_rx_bytes"] == 6 * 4
    assert stats["downstream_sess_tx_bytes"] == 6 * 6
    cluster = gw.stats.cluster("echo").counters()
    assert cluster["udp.sess_tx_datagrams"] == 6 == cluster["udp.sess_rx_datagrams"]
    assert cluster["upstream_cx_total"] == 2


async def test_idle_sessions_expire(nursery: trio.Nursery, start_gateway: StartGateway) -> None:
    echo = await start_echo(nursery, "e")
    gw = await start_gateway(udp_config(echo, idle_timeout=0.3))
    async with Client(gw.listener_address("dns")) as client:
        assert await client.ask(b"a") == b"e:a"
        assert listener_stats(gw)["downstream_sess_active"] == 1
        await wait_until(lambda: listener_stats(gw)["idle_timeout"] == 1, within=3)
        await wait_until(lambda: listener_stats(gw)["downstream_sess_active"] == 0)
        assert await client.ask(b"b") == b"e:b"
    # the second datagram opened a new session: a new upstream socket
    assert len(set(echo.sources)) == 2
    assert listener_stats(gw)["downstream_sess_total"] == 2


async def test_a_session_kept_busy_does_not_expire(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    echo = await start_echo(nursery, "e")
    gw = await start_gateway(udp_config(echo, idle_timeout=0.4))
    async with Client(gw.listener_address("dns")) as client:
        for i in range(10):  # 1.0 s in all, never 0.4 s quiet
            assert await client.ask(b"%d" % i) is not None
            await trio.sleep(0.1)
    assert len(set(echo.sources)) == 1
    assert listener_stats(gw)["idle_timeout"] == 0


async def test_max_sessions_drops_and_counts_new_clients(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    echo = await start_echo(nursery, "e")
    gw = await start_gateway(udp_config(echo, max_sessions=2))
    address = gw.listener_address("dns")
    async with Client(address) as a, Client(address) as b, Client(address) as c:
        assert await a.ask(b"a") == b"e:a"
        assert await b.ask(b"b") == b"e:b"
        assert await c.ask(b"c", within=0.3) is None
        assert await c.ask(b"c", within=0.3) is None
        assert listener_stats(gw)["downstream_sess_overflow"] == 2
        assert await a.ask(b"a") == b"e:a"  # the sessions in place go on
        # raised live (Reconfigure): the third client gets a session
        await gw.control.apply(with_listener(max_sessions=3))
        assert await c.ask(b"c") == b"e:c"
    assert listener_stats(gw)["downstream_sess_total"] == 3


async def test_ring_hash_keeps_each_client_ip_on_one_endpoint(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    ups = [await start_echo(nursery, "e1"), await start_echo(nursery, "e2")]
    gw = await start_gateway(udp_config(*ups, lb_policy="ring_hash"))
    address = gw.listener_address("dns")
    by_ip: dict[str, set[bytes]] = {}
    for n in range(1, 21):
        ip = f"127.0.0.{n}"
        for _ in range(2):  # two sessions (two client ports) from each address
            async with Client(address, ip) as client:
                reply = await client.ask(b"x")
                assert reply is not None
                by_ip.setdefault(ip, set()).add(reply.split(b":")[0])
    assert all(len(names) == 1 for names in by_ip.values()), by_ip
    assert set().union(*by_ip.values()) == {b"e1", b"e2"}


async def test_round_robin_spreads_sessions_and_avoids_a_disabled_endpoint(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    ups = [await start_echo(nursery, f"e{i}") for i in range(3)]
    data = udp_config(*ups)
    data["clusters"][0]["endpoints"][2]["state"] = "disabled"
    gw = await start_gateway(data)
    address = gw.listener_address("dns")
    seen = []
    for _ in range(10):
        async with Client(address) as client:
            reply = await client.ask(b"x")
            assert reply is not None
            seen.append(reply.split(b":")[0])
    assert seen.count(b"e0") == 5 == seen.count(b"e1")
    assert ups[2].sources == []


async def test_an_endpoint_failing_its_health_checks_gets_no_session(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    # tcp health checks: only e1 also listens on TCP at its port, so e2 fails them
    for _ in range(20):
        healthy = await start_echo(nursery, "e1")
        try:
            tcp = await trio.open_tcp_listeners(healthy.address.port, host="127.0.0.1")
            break
        except OSError:
            continue
    nursery.start_soon(trio.serve_listeners, _hang_up, tcp)
    sick = await start_echo(nursery, "e2")
    data = udp_config(healthy, sick)
    data["clusters"][0]["health_check"] = {
        "type": "tcp",
        "interval": 0.05,
        "no_traffic_interval": 0.05,
        "unhealthy_threshold": 1,
        "timeout": 3,  # e1 must never fail one, even on a loaded machine
    }
    gw = await start_gateway(data)
    await wait_until(lambda: gw.stats.cluster("echo").gauges()["health_check.healthy"] == 1)
    address = gw.listener_address("dns")
    for _ in range(6):
        async with Client(address) as client:
            assert await client.ask(b"x") == b"e1:x"
    assert sick.sources == []


async def _hang_up(stream: trio.SocketStream) -> None:
    await stream.aclose()


async def test_a_split_keeps_each_client_ip_in_one_cluster(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    one, two = await start_echo(nursery, "one"), await start_echo(nursery, "two")
    data = udp_config(one)
    del data["listeners"][0]["cluster"]
    data["listeners"][0]["split"] = [
        {"cluster": "echo", "weight": 50},
        {"cluster": "other", "weight": 50},
    ]
    data["clusters"].append({"name": "other", "endpoints": [{"address": str(two.address)}]})
    gw = await start_gateway(data)
    address = gw.listener_address("dns")
    by_ip: dict[str, set[bytes]] = {}
    for n in range(1, 31):
        for _ in range(2):
            async with Client(address, f"127.0.1.{n}") as client:
                reply = await client.ask(b"x")
                assert reply is not None
                by_ip.setdefault(client.ip, set()).add(reply.split(b":")[0])
    assert all(len(names) == 1 for names in by_ip.values()), by_ip
    assert set().union(*by_ip.values()) == {b"one", b"two"}


async def test_enabled_false_closes_the_socket_and_true_serves_again(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    echo = await start_echo(nursery, "e")
    gw = await start_gateway(udp_config(echo))
    address = gw.listener_address("dns")
    async with Client(address) as client:
        assert await client.ask(b"a") == b"e:a"
        await gw.control.apply(with_listener(enabled=False))
        assert gw.control.listeners["dns"].bound is None
        await wait_until(lambda: listener_stats(gw)["downstream_sess_active"] == 0)
        # nothing reads the port: the kernel answers ICMP port unreachable
        connected = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with connected:
            await connected.connect((address.host, address.port))
            await connected.send(b"b")
            with pytest.raises(ConnectionRefusedError), trio.fail_after(2):
                await connected.recv(100)
        await gw.control.apply(with_listener(enabled=True))
        assert gw.listener_address("dns") == address  # the port it had
        assert await client.ask(b"c") == b"e:c"
    assert listener_stats(gw)["downstream_sess_total"] == 2


async def test_a_listener_configured_down_binds_nothing_until_enabled(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    echo = await start_echo(nursery, "e")
    gw = await start_gateway(udp_config(echo, enabled=False))
    assert gw.control.listeners["dns"].bound is None
    await gw.control.apply(with_listener(enabled=True))
    async with Client(gw.listener_address("dns")) as client:
        assert await client.ask(b"a") == b"e:a"


async def test_a_protocol_change_to_or_from_udp_rebinds_the_listener(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    echo = await start_echo(nursery, "e")
    gw = await start_gateway(udp_config(echo))
    await gw.control.apply(with_listener(protocol="tcp"))
    # stream sockets now: a TCP connect is taken
    address = gw.listener_address("dns")
    stream = await trio.open_tcp_stream(address.host, address.port)
    await stream.aclose()
    await gw.control.apply(with_listener(protocol="udp"))
    async with Client(gw.listener_address("dns")) as client:
        assert await client.ask(b"a") == b"e:a"


async def test_latency_toxics_delay_each_direction(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    echo = await start_echo(nursery, "e")
    gw = await start_gateway(udp_config(echo))
    async with Client(gw.listener_address("dns")) as client:
        base = statistics.median([await client.round_trip(b"%d" % i) for i in range(5)])
        # live: the session in place takes the toxics on its next datagram
        toxics = (
            toxic("up", "latency", "upstream", latency=100),
            toxic("down", "latency", "downstream", latency=150),
        )
        await gw.control.apply(with_listener(toxics=toxics))
        rtts = [await client.round_trip(b"%d" % i) for i in range(5)]
        assert all(0.25 <= rtt < 0.25 + 1.0 for rtt in rtts), (base, rtts)
        await gw.control.apply(with_listener(toxics=()))
        after = [await client.round_trip(b"%d" % i) for i in range(3)]
        assert statistics.median(after) < 0.2, after
    assert len(set(echo.sources)) == 1  # one session throughout
    assert listener_stats(gw)["toxics.datagrams_delayed"] == 10


async def test_jitter_keeps_the_order_of_a_direction(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    echo = await start_echo(nursery, "e")
    toxics = [toxic("j", "latency", "downstream", latency=60, jitter=50)]
    gw = await start_gateway(udp_config(echo, toxics=[attrs.asdict(t) for t in toxics]))
    async with Client(gw.listener_address("dns")) as client:
        start = trio.current_time()
        for i in range(30):
            await client.send(b"%02d" % i)
        replies = [await client.receive() for _ in range(30)]
        elapsed = trio.current_time() - start
    assert replies == [b"e:%02d" % i for i in range(30)]
    assert 0.01 <= elapsed < 0.11 + 1.0


async def test_packet_loss_drops_its_share(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    echo = await start_echo(nursery, "e")
    loss = [toxic("loss", "packet_loss", "upstream", percent=30)]
    gw = await start_gateway(udp_config(echo, toxics=[attrs.asdict(t) for t in loss]))
    sent = 2000
    received = 0
    async with Client(gw.listener_address("dns")) as client:
        for batch in range(sent // 50):  # paced: no kernel buffer overflows
            for i in range(50):
                await client.send(b"%d" % (batch * 50 + i))
            while await client.receive(within=0.05) is not None:
                received += 1
        while await client.receive(within=0.5) is not None:  # any late ones
            received += 1
    share = 1 - received / sent
    assert abs(share - 0.3) <= share_tolerance(sent, 0.3), share
    assert listener_stats(gw)["toxics.datagrams_dropped"] == sent - received


async def test_toxicity_and_source_choose_the_sessions(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    echo = await start_echo(nursery, "e")
    toxics = [
        toxic("never", "packet_loss", "upstream", percent=100, toxicity=0.0),
        toxic("only_2", "packet_loss", "downstream", percent=100, source=["127.0.0.2/32"]),
    ]
    gw = await start_gateway(udp_config(echo, toxics=[attrs.asdict(t) for t in toxics]))
    address = gw.listener_address("dns")
    async with Client(address, "127.0.0.1") as one, Client(address, "127.0.0.2") as two:
        assert await one.ask(b"a") == b"e:a"
        assert await two.ask(b"b", within=0.3) is None
        assert echo.sources  # it went up; the reply was dropped on its way down
    # the listener's toxics change: the new loss applies to the client untouched before
    await gw.control.apply(
        with_listener(toxics=(toxic("all", "packet_loss", "upstream", percent=100),))
    )
    async with Client(address, "127.0.0.1") as one:
        assert await one.ask(b"c", within=0.3) is None


async def test_two_worker_processes_serve_a_udp_listener(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    ups = [await start_echo(nursery, "e1"), await start_echo(nursery, "e2")]
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(udp_config(*ups)))
    async with gateway_process(config, workers=2) as gateway:
        await gateway.wait_for(r"listener dns: udp://")
        address = gateway.listeners["dns"]
        replies = []
        for n in range(40):  # clients on many ports: the kernel spreads them over both
            async with Client(address) as client:
                reply = await client.ask(b"%d" % n)
                assert reply is not None, f"client {n} got no reply"
                replies.append(reply)
        assert len(replies) == 40
        # every datagram reached a worker: none was lost to the primary's held socket
        assert sum(len(u.sources) for u in ups) == 40
        # down and up again in every worker, through the admin API
        async with httpx.AsyncClient(base_url=f"http://{gateway.admin}") as admin:
            r = await admin.patch("/listeners/dns", json={"enabled": False})
            assert r.status_code == 200, r.text
            async with Client(address) as client:
                assert await client.ask(b"down", within=0.3) is None
            r = await admin.patch("/listeners/dns", json={"enabled": True})
            assert r.status_code == 200, r.text
            for n in range(10):
                async with Client(address) as client:
                    assert await client.ask(b"up%d" % n) is not None
            stats = (await admin.get("/stats")).json()
        sessions = [v for k, v in _flatten(stats) if k.endswith("downstream_sess_total")]
        assert sessions == [50], stats


def _flatten(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(data, dict):
        return [kv for k, v in data.items() for kv in _flatten(v, f"{prefix}{k}.")]
    return [(prefix.rstrip("."), data)]


def test_udp_config_validation() -> None:
    base = udp_config()
    base["clusters"][0]["endpoints"] = [{"address": "127.0.0.1:53"}]
    base["listeners"][0]["toxics"] = [
        {"name": "bw", "type": "bandwidth", "attributes": {"rate": 10}},
        {"name": "l", "type": "latency", "toxicity": 2, "attributes": {"jitter": -1}},
        {"name": "p", "type": "packet_loss", "attributes": {"percent": 101}, "source": ["x"]},
    ]
    base["listeners"][0]["max_sessions"] = 0
    with pytest.raises(ConfigError) as error:
        config_from_data(base)
    paths = {issue.path for issue in error.value.issues}
    assert paths == {
        "listeners[0].max_sessions",
        "listeners[0].toxics[0].type",
        "listeners[0].toxics[1].toxicity",
        "listeners[0].toxics[1].attributes.jitter",
        "listeners[0].toxics[2].attributes.percent",
        "listeners[0].toxics[2].source[0]",
    }
