"""TLS termination end to end: SNI picking a certificate, ALPN, versions, real clients
(httpx, curl, openssl s_client), stats, the handshake under the header timeout."""

from __future__ import annotations

import shutil
import ssl
import warnings

import httpx
import pytest
import trio

from tests.conftest import StartGateway
from tests.gateway.l4_support import StreamEcho, l4_config
from tests.gateway.tls_support import (
    Pki,
    RecordingUpstream,
    TlsClient,
    port_of,
    serial_of_file,
    tls_config,
    tls_get,
)


async def test_sni_picks_the_exact_name_then_a_wildcard_then_the_first(
    nursery: trio.Nursery, start_gateway: StartGateway, pki: Pki
) -> None:
    upstream = await RecordingUpstream("api").start(nursery)
    default = pki.issue("default", "localhost")
    exact = pki.issue("exact", "api.example.com")
    wildcard = pki.issue("wildcard", "*.example.com")
    gw = await start_gateway(
        tls_config(
            upstream.address,
            [
                {"cert": default[0], "key": default[1]},
                {"cert": wildcard[0], "key": wildcard[1]},  # names from its SANs
                {"cert": exact[0], "key": exact[1], "server_names": ["api.example.com"]},
            ],
        )
    )
    port = port_of(gw)
    context = pki.client_context()
    seen = {}
    for name in ("api.example.com", "www.example.com", "localhost"):
        client = await TlsClient.open(port, context, server_name=name)
        seen[name] = client.peer_serial
        assert (await client.request("/x")).status == 200
        await client.aclose()
    assert seen["api.example.com"] == serial_of_file(exact[0])
    assert seen["www.example.com"] == serial_of_file(wildcard[0])
    assert seen["localhost"] == serial_of_file(default[0])
    # an unknown name, and none at all, get the first certificate
    unknown = ssl.create_default_context(cafile=pki.ca_file)
    unknown.check_hostname = False
    client = await TlsClient.open(port, unknown, server_name="other.test")
    assert client.peer_serial == serial_of_file(default[0])
    await client.aclose()
    stats = gw.stats.listener("web")
    assert stats.ssl_handshake == 4
    assert stats.ssl_connection_error == 0
    assert len(upstream.requests) == 3
    # the upstream hears this hop's scheme
    assert upstream.requests[0]["x-forwarded-proto"] == "https"


async def test_httpx_with_the_ca_and_alpn_http_1_1(
    nursery: trio.Nursery, start_gateway: StartGateway, pki: Pki
) -> None:
    upstream = await RecordingUpstream("api").start(nursery)
    cert = pki.issue("server", "localhost", "127.0.0.1")
    gw = await start_gateway(tls_config(upstream.address, [{"cert": cert[0], "key": cert[1]}]))
    port = port_of(gw)
    async with httpx.AsyncClient(verify=pki.client_context()) as client:
        for _ in range(3):
            response = await client.get(f"https://localhost:{port}/hello")
            assert response.status_code == 200
            assert response.text == "api\n"
    assert gw.stats.listener("web").ssl_handshake == 1  # one keep-alive connection
    # offered h2 and http/1.1, the gateway takes h2 (its preference); http/1.1 alone
    client = await TlsClient.open(port, pki.client_context(), alpn=["h2", "http/1.1"])
    assert client.stream.selected_alpn_protocol() == "h2"
    await client.aclose()
    client = await TlsClient.open(port, pki.client_context(), alpn=["http/1.1"])
    assert client.stream.selected_alpn_protocol() == "http/1.1"
    await client.aclose()


async def test_http2_over_tls_by_alpn(
    nursery: trio.Nursery, start_gateway: StartGateway, pki: Pki
) -> None:
    upstream = await RecordingUpstream("api").start(nursery)
    cert = pki.issue("server", "localhost", "127.0.0.1")
    gw = await start_gateway(tls_config(upstream.address, [{"cert": cert[0], "key": cert[1]}]))
    port = port_of(gw)
    async with httpx.AsyncClient(verify=pki.client_context(), http2=True) as client:
        responses = [await client.get(f"https://localhost:{port}/h2/{i}") for i in range(3)]
    assert [(r.http_version, r.status_code, r.text) for r in responses] == [
        ("HTTP/2", 200, "api\n")
    ] * 3
    # each stream went upstream as an HTTP/1.1 request, :authority as its Host
    assert [r["host"] for r in upstream.requests] == [f"localhost:{port}"] * 3
    assert gw.stats.listener("web").ssl_handshake == 1  # one connection, three streams
    # a listener whose alpn leaves h2 out answers an h2-only client with none
    config = tls_config(upstream.address, [{"cert": cert[0], "key": cert[1]}])
    config["listeners"][0]["tls"]["alpn"] = ["http/1.1"]
    only_h1 = await start_gateway(config)
    client = await TlsClient.open(port_of(only_h1), pki.client_context(), alpn=["h2"])
    assert client.stream.selected_alpn_protocol() is None
    await client.aclose()


async def test_tls_1_1_is_refused_and_1_3_only_when_configured(
    nursery: trio.Nursery, start_gateway: StartGateway, pki: Pki
) -> None:
    upstream = await RecordingUpstream("api").start(nursery)
    cert = pki.issue("server", "localhost")
    gw = await start_gateway(tls_config(upstream.address, [{"cert": cert[0], "key": cert[1]}]))
    port = port_of(gw)
    old = pki.client_context()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # a TLS 1.1 client, on purpose
        old.minimum_version = ssl.TLSVersion.TLSv1_1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
        with pytest.raises((trio.BrokenResourceError, ssl.SSLError)) as refused:
            await TlsClient.open(port, old)
    assert "version" in str(refused.value.__cause__ or refused.value).lower()
    # TLS 1.2 with a modern suite works; a CBC (non-AEAD) suite does not
    tls12 = pki.client_context()
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    client = await TlsClient.open(port, tls12)
    assert client.stream.cipher()[0].startswith("ECDHE")  # type: ignore[index]
    assert client.stream.version() == "TLSv1.2"
    await client.aclose()
    cbc = pki.client_context()
    cbc.maximum_version = ssl.TLSVersion.TLSv1_2
    cbc.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA")
    with pytest.raises((trio.BrokenResourceError, ssl.SSLError)):
        await TlsClient.open(port, cbc)

    def errors() -> int:
        return gw.stats.listener("web").ssl_connection_error

    assert errors() == 2
    assert upstream.requests == []

    gw13 = await start_gateway(
        tls_config(upstream.address, [{"cert": cert[0], "key": cert[1]}], min_version="1.3")
    )
    with pytest.raises((trio.BrokenResourceError, ssl.SSLError)):
        await TlsClient.open(port_of(gw13), tls12)
    reply = await tls_get(port_of(gw13), pki.client_context())
    assert reply.status == 200


async def test_a_silent_client_is_cut_at_the_header_timeout(
    nursery: trio.Nursery, start_gateway: StartGateway, pki: Pki
) -> None:
    upstream = await RecordingUpstream("api").start(nursery)
    cert = pki.issue("server", "localhost")
    gw = await start_gateway(
        {
            **(config := tls_config(upstream.address, [{"cert": cert[0], "key": cert[1]}])),
            "listeners": [{**config["listeners"][0], "header_timeout": 0.3}],
        }
    )
    tcp = await trio.open_tcp_stream("127.0.0.1", port_of(gw))
    start = trio.current_time()
    with trio.fail_after(3):
        assert await tcp.receive_some(100) == b""  # closed without a handshake
    assert trio.current_time() - start >= 0.25
    assert gw.stats.listener("web").ssl_connection_error == 1
    await tcp.aclose()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
async def test_curl_and_openssl_s_client(
    nursery: trio.Nursery, start_gateway: StartGateway, pki: Pki
) -> None:
    upstream = await RecordingUpstream("api").start(nursery)
    cert = pki.issue("server", "api.example.com")
    gw = await start_gateway(tls_config(upstream.address, [{"cert": cert[0], "key": cert[1]}]))
    port = port_of(gw)
    result = await trio.run_process(
        [
            "curl",
            "-sS",
            "--cacert",
            pki.ca_file,
            "--resolve",
            f"api.example.com:{port}:127.0.0.1",
            f"https://api.example.com:{port}/curl",
        ],
        capture_stdout=True,
    )
    assert result.stdout == b"api\n"
    if shutil.which("openssl") is not None:
        s_client = await trio.run_process(
            [
                "openssl",
                "s_client",
                "-connect",
                f"127.0.0.1:{port}",
                "-servername",
                "api.example.com",
                "-CAfile",
                pki.ca_file,
                "-alpn",
                "h2,http/1.1",
            ],
            stdin=b"",
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        # after ALPN h2 the server's SETTINGS frame may reach s_client before its stdin's
        # end does, and it prints those bytes raw
        out = (s_client.stdout + s_client.stderr).decode(errors="replace")
        assert "Verify return code: 0 (ok)" in out
        assert "ALPN protocol: h2" in out


async def test_a_tcp_listener_terminates_tls_and_passes_plain_bytes_on(
    nursery: trio.Nursery, start_gateway: StartGateway, pki: Pki
) -> None:
    echo = await StreamEcho().start(nursery)
    cert = pki.issue("server", "localhost")
    config = l4_config({"db": [echo.address]})
    config["listeners"][0]["tls"] = {"certificates": [{"cert": cert[0], "key": cert[1]}]}
    gw = await start_gateway(config)
    port = gw.listener_address("tcp").port
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    stream = trio.SSLStream(tcp, pki.client_context(), server_hostname="localhost")
    async with stream:
        payload = b"x" * 100_000
        await stream.send_all(payload)
        received = b""
        with trio.fail_after(10):
            while len(received) < len(payload):
                received += await stream.receive_some(65536)
        assert received == payload  # the upstream echoed the decrypted bytes
    stats = gw.stats.listener("tcp")
    assert stats.ssl_handshake == 1
    assert stats.downstream_cx_rx_bytes_total >= len(payload)
    # a client that does not speak TLS reaches no upstream
    plain = await trio.open_tcp_stream("127.0.0.1", port)
    async with plain:
        await plain.send_all(b"not a handshake\r\n\r\n")
        with trio.fail_after(10):
            while await plain.receive_some(65536):
                pass
    assert echo.accepted == 1
