"""TLS origination: clusters with ``tls`` (SNI, verification against ``ca``, a client
certificate), for HTTP/1.1 through the pool and for the TCP proxy; and a TLS listener
served by two worker processes."""

from __future__ import annotations

import logging
import ssl
from typing import Any

import httpx
import pytest
import trio

from gateway.cluster.health import check_endpoint
from gateway.config import Address, UpstreamTls
from gateway.tls import TlsOrigin
from policies.health import HealthCheckConfig
from tests.conftest import StartGateway, simple_config
from tests.gateway.l4_support import connect, l4_config, read_to_end
from tests.gateway.tls_support import Pki, RecordingUpstream, server_context


def with_tls(config: dict[str, Any], **tls: Any) -> dict[str, Any]:
    config["clusters"][0]["tls"] = tls
    return config


async def test_verified_with_sni_and_pooled(
    nursery: trio.Nursery, start_gateway: StartGateway, pki: Pki
) -> None:
    context = server_context(pki.issue("upstream", "api.internal"))
    names: list[str | None] = []
    context.sni_callback = lambda obj, name, ctx: names.append(name)  # type: ignore[assignment,func-returns-value]
    upstream = await RecordingUpstream("api", context).start(nursery)
    gw = await start_gateway(
        with_tls(simple_config({"api": [upstream.address]}), sni="api.internal", ca=pki.ca_file)
    )
    web = gw.listener_address("web")
    async with httpx.AsyncClient() as client:
        for _ in range(3):
            response = await client.get(f"http://{web}/x")
            assert response.status_code == 200
            assert response.text == "api\n"
    stats = gw.stats.clusters["api"]
    assert stats.ssl_handshake == 1  # one pooled connection served all three
    assert stats.ssl_connection_error == 0
    assert names == ["api.internal"]
    assert len(upstream.requests) == 3


async def test_a_wrong_ca_is_refused_with_502_and_the_reason(
    nursery: trio.Nursery,
    start_gateway: StartGateway,
    pki: Pki,
    caplog: pytest.LogCaptureFixture,
) -> None:
    other = Pki(pki.root / "other")
    other.root.mkdir()
    upstream = await RecordingUpstream(
        "api", server_context(other.issue("upstream", "api.internal"))
    ).start(nursery)
    gw = await start_gateway(
        with_tls(simple_config({"api": [upstream.address]}), sni="api.internal", ca=pki.ca_file)
    )
    web = gw.listener_address("web")
    with caplog.at_level(logging.WARNING, logger="triogate.tls"):
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://{web}/x")
    assert response.status_code == 502
    assert gw.stats.clusters["api"].ssl_connection_error == 1
    assert gw.stats.clusters["api"].ssl_handshake == 0
    assert "certificate verify failed" in caplog.text
    assert upstream.requests == []
    # the same upstream with verify: false is served
    gw2 = await start_gateway(
        with_tls(simple_config({"api": [upstream.address]}), ca=pki.ca_file, verify=False)
    )
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://{gw2.listener_address('web')}/x")
    assert response.status_code == 200


async def test_the_wrong_name_is_refused(
    nursery: trio.Nursery, start_gateway: StartGateway, pki: Pki
) -> None:
    upstream = await RecordingUpstream(
        "api", server_context(pki.issue("upstream", "api.internal"))
    ).start(nursery)
    gw = await start_gateway(
        with_tls(simple_config({"api": [upstream.address]}), sni="other.internal", ca=pki.ca_file)
    )
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://{gw.listener_address('web')}/x")
    assert response.status_code == 502
    assert upstream.requests == []


async def test_an_upstream_requiring_a_client_certificate(
    nursery: trio.Nursery, start_gateway: StartGateway, pki: Pki
) -> None:
    context = server_context(pki.issue("upstream", "api.internal"), client_ca=pki.ca_file)
    upstream = await RecordingUpstream("api", context).start(nursery)
    without = await start_gateway(
        with_tls(simple_config({"api": [upstream.address]}), sni="api.internal", ca=pki.ca_file)
    )
    client_cert = pki.issue("gateway", "gateway.internal")
    with_cert = await start_gateway(
        with_tls(
            simple_config({"api": [upstream.address]}),
            sni="api.internal",
            ca=pki.ca_file,
            cert=client_cert[0],
            key=client_cert[1],
        )
    )
    async with httpx.AsyncClient() as client:
        refused = await client.get(f"http://{without.listener_address('web')}/x")
        served = await client.get(f"http://{with_cert.listener_address('web')}/x")
    # under TLS 1.3 the gateway learns of the refusal on its first read: a reset, 502
    assert refused.status_code == 502
    assert served.status_code == 200
    assert len(upstream.requests) == 1


@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_the_tcp_proxy_to_a_tls_cluster(
    nursery: trio.Nursery, start_gateway: StartGateway, pki: Pki, version: str
) -> None:
    context = server_context(pki.issue("upstream", "echo.internal"))
    if version == "1.2":
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    received: list[bytes] = []

    async def echo(tcp: trio.SocketStream) -> None:
        stream = trio.SSLStream(tcp, context, server_side=True)
        try:
            while data := await stream.receive_some(65536):
                received.append(data)
                await stream.send_all(data)
            await stream.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    address = Address("127.0.0.1", listeners[0].socket.getsockname()[1])
    nursery.start_soon(trio.serve_listeners, echo, listeners)
    config = l4_config({"echo": [address]})
    config["clusters"][0]["tls"] = {"sni": "echo.internal", "ca": pki.ca_file}
    gw = await start_gateway(config)
    payload = bytes(range(256)) * 400
    stream = await connect(gw)
    async with stream:
        await stream.send_all(payload)
        await stream.send_eof()  # close_notify upstream; the echo then closes
        assert await read_to_end(stream) == payload
    assert b"".join(received) == payload
    assert gw.stats.clusters["echo"].ssl_handshake == 1


async def test_health_checks_of_a_tls_cluster_run_over_tls(nursery: trio.Nursery, pki: Pki) -> None:
    upstream = await RecordingUpstream(
        "api", server_context(pki.issue("upstream", "api.internal"))
    ).start(nursery)
    good = TlsOrigin(UpstreamTls(sni="api.internal", ca=pki.ca_file))
    outcome = await check_endpoint(
        upstream.address, HealthCheckConfig(path="/healthz"), "api", good
    )
    assert outcome.passed, outcome.detail
    assert upstream.requests[-1]["host"] == "api"
    other = Pki(pki.root / "other")
    other.root.mkdir()
    wrong = TlsOrigin(UpstreamTls(sni="api.internal", ca=other.ca_file))
    outcome = await check_endpoint(upstream.address, HealthCheckConfig(), "api", wrong)
    assert not outcome.passed
    assert "certificate verify failed" in outcome.detail
    # in cleartext the TLS upstream does not answer HTTP
    assert not (await check_endpoint(upstream.address, HealthCheckConfig(), "api")).passed
