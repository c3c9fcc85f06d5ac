"""toxiproxy-python (PyPI) against ``triogate toxiproxy``, with real traffic.

Calls driven: Toxiproxy: update_api_consumer, running, version, create, proxies,
get_proxy, populate, reset, destroy, destroy_all. Proxy: add_toxic, toxics, get_toxic,
destroy_toxic, disable, enable, down, destroy. (The client has no toxic update.)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from toxiproxy import Toxiproxy
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

from tests.toxiproxy import effects
from tests.toxiproxy.conftest import ToxiproxyServer, round_trip


@pytest.fixture
def client(toxiproxy: ToxiproxyServer) -> Iterator[Toxiproxy]:
    server = Toxiproxy()
    server.update_api_consumer(toxiproxy.host, toxiproxy.port)
    yield server
    server.destroy_all()


def test_server_calls(client: Toxiproxy, echo: str) -> None:
    assert client.running()
    assert client.version().startswith(b'{"version": "2.12.0')
    proxy = client.create(upstream=echo, name="db")
    assert (proxy.name, proxy.upstream, proxy.enabled) == ("db", echo, True)
    assert proxy.listen.startswith("127.0.0.1:") and not proxy.listen.endswith(":0")
    assert round_trip(proxy.listen)[0] == b"ping"
    with pytest.raises(ProxyExists):
        client.create(upstream=echo, name="db")
    assert set(client.proxies()) == {"db"}
    assert client.get_proxy("db").listen == proxy.listen
    assert client.get_proxy("nope") is None
    made = client.populate(
        [
            {"name": "cache", "upstream": echo, "listen": "127.0.0.1:0"},
            {"name": "db", "upstream": echo, "listen": proxy.listen},  # same: kept
        ]
    )
    assert [p.name for p in made] == ["cache"]
    assert set(client.proxies()) == {"db", "cache"}
    assert client.destroy(client.get_proxy("cache"))
    assert set(client.proxies()) == {"db"}
    client.destroy_all()
    assert client.proxies() == {}


def test_toxics_with_traffic(client: Toxiproxy, echo: str) -> None:
    proxy = client.create(upstream=echo, name="db")
    effects.assert_no_latency(proxy.listen)

    proxy.add_toxic(type="latency", attributes={"latency": effects.LATENCY_MS})
    effects.assert_latency(proxy.listen)
    assert set(proxy.toxics()) == {"latency_downstream"}
    toxic = proxy.get_toxic("latency_downstream")
    assert (toxic.type, toxic.stream, toxic.toxicity) == ("latency", "downstream", 1)
    assert toxic.attributes == {"latency": effects.LATENCY_MS, "jitter": 0}
    proxy.destroy_toxic("latency_downstream")
    effects.assert_no_latency(proxy.listen)

    proxy.add_toxic(type="bandwidth", name="slow", attributes={"rate": effects.RATE_KBPS})
    effects.assert_bandwidth(proxy.listen)
    proxy.destroy_toxic("slow")

    proxy.add_toxic(type="reset_peer", attributes={"timeout": 0})
    effects.assert_reset(proxy.listen)
    proxy.destroy_toxic("reset_peer_downstream")

    proxy.add_toxic(type="limit_data", attributes={"bytes": effects.LIMIT_BYTES})
    effects.assert_limited(proxy.listen)
    proxy.destroy_toxic("limit_data_downstream")

    with pytest.raises(InvalidToxic):
        proxy.add_toxic(type="bandwidth", attributes={"rate": 0})  # Toxiproxy would stall
    with pytest.raises(ProxyExists):
        proxy.add_toxic(type="noop", name="n")
        proxy.add_toxic(type="noop", name="n")
    assert round_trip(proxy.listen)[0] == b"ping"


def test_disable_enable_down_and_reset(client: Toxiproxy, echo: str) -> None:
    proxy = client.create(upstream=echo, name="db")
    proxy.disable()
    assert client.get_proxy("db").enabled is False
    effects.assert_refused(proxy.listen)
    proxy.enable()
    assert round_trip(proxy.listen)[0] == b"ping"
    with proxy.down():
        effects.assert_refused(proxy.listen)
    assert round_trip(proxy.listen)[0] == b"ping"

    proxy.add_toxic(type="latency", attributes={"latency": effects.LATENCY_MS})
    proxy.disable()
    assert client.reset()
    assert client.get_proxy("db").enabled is True
    assert proxy.toxics() == {}
    effects.assert_no_latency(proxy.listen)
    assert proxy.destroy()
    with pytest.raises(NotFound):
        proxy.toxics()
