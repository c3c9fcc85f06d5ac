"""mTLS on a listener: required, optional, ``allowed_sans``; ``x-forwarded-client-cert``
in each of Envoy's modes, a forged one, and a route matching on it. An unauthorised
client reaches no upstream: each refusal asserts zero upstream requests."""

from __future__ import annotations

import hashlib
import ssl
from pathlib import Path
from typing import Any

import pytest
import trio
from cryptography import x509

from tests.conftest import StartGateway, wait_until
from tests.gateway.tls_support import (
    Pki,
    RecordingUpstream,
    TlsClient,
    port_of,
    serial_of_file,
    tls_config,
    tls_get,
)

SPIFFE = "spiffe://cluster.local/ns/default/sa/web"


def mtls_config(
    pki: Pki, upstream: RecordingUpstream, client_auth: dict[str, Any], **tls: Any
) -> dict[str, Any]:
    cert = pki.issue("server", "localhost")
    return tls_config(
        upstream.address,
        [{"cert": cert[0], "key": cert[1]}],
        client_auth={"ca": pki.ca_file, **client_auth},
        **tls,
    )


async def refused(port: int, context: ssl.SSLContext) -> bool:
    """Whether the connection fails, at the handshake (TLS 1.2) or at its first read
    (TLS 1.3: the client's handshake ends before the server has seen its certificate)."""
    try:
        await tls_get(port, context)
    except (trio.BrokenResourceError, ssl.SSLError):
        return True
    return False


async def test_required_client_certificate(
    nursery: trio.Nursery, start_gateway: StartGateway, pki: Pki
) -> None:
    upstream = await RecordingUpstream("api").start(nursery)
    gw = await start_gateway(mtls_config(pki, upstream, {"required": True}))
    port = port_of(gw)
    stats = gw.stats.listener("web")
    # no certificate: refused after the handshake, under TLS 1.3 and 1.2
    assert await refused(port, pki.client_context())
    tls12 = pki.client_context()
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    assert await refused(port, tls12)
    assert stats.ssl_fail_verify_no_cert == 2
    # a certificate from another CA: the handshake fails
    stranger = Pki(pki.root / "other")
    stranger.root.mkdir()
    foreign = stranger.issue("client", "client.example.com")
    assert await refused(port, pki.client_context(foreign))
    assert stats.ssl_fail_verify_error == 1
    assert upstream.requests == []  # nobody unauthorised got through
    # a certificate from the CA: served
    good = pki.issue("client", "client.example.com")
    reply = await tls_get(port, pki.client_context(good))
    assert reply.status == 200
    assert len(upstream.requests) == 1


async def test_optional_client_certificate(
    nursery: trio.Nursery, start_gateway: StartGateway, pki: Pki
) -> None:
    upstream = await RecordingUpstream("api").start(nursery)
    gw = await start_gateway(
        mtls_config(pki, upstream, {"required": False}, forward_client_cert="sanitize_set")
    )
    port = port_of(gw)
    assert (await tls_get(port, pki.client_context())).status == 200
    assert gw.stats.listener("web").ssl_no_certificate == 1
    assert "x-forwarded-client-cert" not in upstream.requests[-1]
    good = pki.issue("client", "client.example.com")
    assert (await tls_get(port, pki.client_context(good))).status == 200
    assert "x-forwarded-client-cert" in upstream.requests[-1]


async def test_allowed_sans_dns_or_uri(
    nursery: trio.Nursery, start_gateway: StartGateway, pki: Pki
) -> None:
    upstream = await RecordingUpstream("api").start(nursery)
    gw = await start_gateway(
        mtls_config(pki, upstream, {"allowed_sans": [SPIFFE, "ops.example.com"]})
    )
    port = port_of(gw)
    stats = gw.stats.listener("web")
    wrong = pki.issue("wrong", "spiffe://cluster.local/ns/default/sa/other")
    for context in (pki.client_context(wrong), _tls12(pki.client_context(wrong))):
        assert await refused(port, context)
    assert stats.ssl_fail_verify_san == 2
    assert upstream.requests == []  # zero upstream requests from the refused client
    by_uri = pki.issue("web", SPIFFE)
    by_dns = pki.issue("ops", "ops.example.com")
    assert (await tls_get(port, pki.client_context(by_uri))).status == 200
    assert (await tls_get(port, pki.client_context(by_dns))).status == 200
    assert len(upstream.requests) == 2


def _tls12(context: ssl.SSLContext) -> ssl.SSLContext:
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


def _hash_of(cert_file: str) -> str:
    der = ssl.PEM_cert_to_DER_cert(Path(cert_file).read_text())
    return hashlib.sha256(der).hexdigest()


def _subject_of(cert_file: str) -> str:
    subject = x509.load_pem_x509_certificate(Path(cert_file).read_bytes()).subject
    return subject.rfc4514_string()


FORGED = "Hash=00;URI=spiffe://forged"


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("sanitize", lambda own: None),
        ("forward_only", lambda own: FORGED),
        ("append_forward", lambda own: f"{FORGED},{own}"),
        ("sanitize_set", lambda own: own),
    ],
)
async def test_xfcc_modes_with_a_client_certificate_and_a_forged_header(
    nursery: trio.Nursery, start_gateway: StartGateway, pki: Pki, mode: str, expected: Any
) -> None:
    upstream = await RecordingUpstream("api").start(nursery)
    gw = await start_gateway(
        mtls_config(pki, upstream, {"required": False}, forward_client_cert=mode)
    )
    port = port_of(gw)
    client_cert = pki.issue("web", SPIFFE, "web.example.com")
    client = await TlsClient.open(port, pki.client_context(client_cert))
    assert (await client.request("/", [("x-forwarded-client-cert", FORGED)])).status == 200
    await client.aclose()
    subject = upstream.requests[-1].get("x-forwarded-client-cert")
    own = f'Hash={_hash_of(client_cert[0])};Subject="O=trustme";URI={SPIFFE};DNS=web.example.com'
    assert subject == expected(own)
    # without a client certificate every mode removes a forged header
    assert (
        await tls_get(port, pki.client_context(), headers=[("x-forwarded-client-cert", FORGED)])
    ).status == 200
    assert "x-forwarded-client-cert" not in upstream.requests[-1]


async def test_a_route_matches_the_verified_identity_in_xfcc(
    nursery: trio.Nursery, start_gateway: StartGateway, pki: Pki
) -> None:
    upstream = await RecordingUpstream("api").start(nursery)
    admin_upstream = await RecordingUpstream("admin").start(nursery)
    cert = pki.issue("server", "localhost")
    config = tls_config(
        upstream.address,
        [{"cert": cert[0], "key": cert[1]}],
        routes=[
            {
                "match": {
                    "prefix": "/",
                    "headers": [
                        {"name": "x-forwarded-client-cert", "regex": f".*;URI={SPIFFE}(;.*)?"}
                    ],
                },
                "cluster": "admin",
            },
            {"match": {"prefix": "/"}, "cluster": "api"},
        ],
        client_auth={"ca": pki.ca_file, "required": False},
        forward_client_cert="sanitize_set",
    )
    config["clusters"].append(
        {"name": "admin", "endpoints": [{"address": str(admin_upstream.address)}]}
    )
    gw = await start_gateway(config)
    port = port_of(gw)
    web = pki.issue("web", SPIFFE)
    other = pki.issue("other", "spiffe://cluster.local/ns/default/sa/other")
    assert (await tls_get(port, pki.client_context(web))).body == b"admin\n"
    assert (await tls_get(port, pki.client_context(other))).body == b"api\n"
    # a forged header naming the identity does not reach the admin cluster
    forged = [("x-forwarded-client-cert", f"Hash=00;URI={SPIFFE}")]
    assert (await tls_get(port, pki.client_context(), headers=forged)).body == b"api\n"
    assert (await tls_get(port, pki.client_context(other), headers=forged)).body == b"api\n"
    assert len(admin_upstream.requests) == 1

    await wait_until(lambda: len(upstream.requests) == 3)


async def test_curl_with_a_client_certificate(
    nursery: trio.Nursery, start_gateway: StartGateway, pki: Pki
) -> None:
    upstream = await RecordingUpstream("api").start(nursery)
    gw = await start_gateway(
        mtls_config(pki, upstream, {"required": True}, forward_client_cert="sanitize_set")
    )
    port = port_of(gw)
    client = pki.issue("client", "client.example.com")
    base = ["curl", "-sS", "--cacert", pki.ca_file, f"https://localhost:{port}/curl"]
    served = await trio.run_process(
        [*base, "--cert", client[0], "--key", client[1]], capture_stdout=True
    )
    assert served.stdout == b"api\n"
    assert "DNS=client.example.com" in upstream.requests[-1]["x-forwarded-client-cert"]
    refused_run = await trio.run_process(
        base, capture_stdout=True, capture_stderr=True, check=False
    )
    assert refused_run.returncode != 0
    assert len(upstream.requests) == 1


GATEWAY = "spiffe://cluster.local/ns/edge/sa/gateway"


async def test_xfcc_by_names_the_uri_sans_of_the_certificate_that_served_the_connection(
    nursery: trio.Nursery, start_gateway: StartGateway, pki: Pki
) -> None:
    # two certificates, the server name picks one: "localhost" (the first) has no URI
    # SAN, "mesh.example.com" has two, so its element opens with two ``By``
    upstream = await RecordingUpstream("api").start(nursery)
    plain = pki.issue("server", "localhost")
    mesh = pki.issue("mesh", "mesh.example.com", GATEWAY, "spiffe://cluster.local/ns/edge/sa/alt")
    gw = await start_gateway(
        tls_config(
            upstream.address,
            [{"cert": plain[0], "key": plain[1]}, {"cert": mesh[0], "key": mesh[1]}],
            client_auth={"ca": pki.ca_file, "required": True},
            forward_client_cert="sanitize_set",
        )
    )
    port = port_of(gw)
    client_cert = pki.issue("web", SPIFFE, "web.example.com")
    own = f'Hash={_hash_of(client_cert[0])};Subject="O=trustme";URI={SPIFFE};DNS=web.example.com'

    served = await TlsClient.open(port, pki.client_context(client_cert), "mesh.example.com")
    assert served.peer_serial == serial_of_file(mesh[0])
    assert (await served.request("/")).status == 200
    await served.aclose()
    assert upstream.requests[-1]["x-forwarded-client-cert"] == (
        f"By={GATEWAY};By=spiffe://cluster.local/ns/edge/sa/alt;{own}"
    )

    served = await TlsClient.open(port, pki.client_context(client_cert), "localhost")
    assert served.peer_serial == serial_of_file(plain[0])
    assert (await served.request("/")).status == 200
    await served.aclose()
    assert upstream.requests[-1]["x-forwarded-client-cert"] == own


async def test_xfcc_by_in_an_appended_element(
    nursery: trio.Nursery, start_gateway: StartGateway, pki: Pki
) -> None:
    # the one certificate has a URI SAN: ours, appended to what the client sent, opens
    # with ``By``; the client's own element passes as sent
    upstream = await RecordingUpstream("api").start(nursery)
    cert = pki.issue("server", "localhost", GATEWAY)
    gw = await start_gateway(
        tls_config(
            upstream.address,
            [{"cert": cert[0], "key": cert[1]}],
            client_auth={"ca": pki.ca_file, "required": False},
            forward_client_cert="append_forward",
        )
    )
    client_cert = pki.issue("client", "client.example.com")
    reply = await tls_get(
        port_of(gw), pki.client_context(client_cert), headers=[("x-forwarded-client-cert", FORGED)]
    )
    assert reply.status == 200
    subject = _subject_of(client_cert[0])
    assert upstream.requests[-1]["x-forwarded-client-cert"] == (
        f'{FORGED},By={GATEWAY};Hash={_hash_of(client_cert[0])};Subject="{subject}";'
        "DNS=client.example.com"
    )
