"""Certificate hot reload: a rewrite in place, an atomic rename, a Kubernetes-style
symlink swap; new connections see the new certificate, an open keep-alive connection
goes on; a bad new certificate is refused and the old one keeps serving."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import trio

from tests.conftest import StartGateway, simple_config, wait_until
from tests.gateway.tls_support import (
    Pki,
    RecordingUpstream,
    TlsClient,
    port_of,
    serial_of_file,
    server_context,
    tls_config,
)

WITHIN = 6.0  # the watcher looks every second


def write(path: str, data: bytes) -> None:
    Path(path).write_bytes(data)


async def serial_now(port: int, pki: Pki) -> int:
    client = await TlsClient.open(port, pki.client_context())
    try:
        assert (await client.request()).status == 200
        return client.peer_serial
    finally:
        await client.aclose()


async def _reload_and_check(
    nursery: trio.Nursery,
    start_gateway: StartGateway,
    pki: Pki,
    cert_path: Path,
    key_path: Path,
    replace: object,
) -> None:
    upstream = await RecordingUpstream("api").start(nursery)
    gw = await start_gateway(
        tls_config(upstream.address, [{"cert": str(cert_path), "key": str(key_path)}])
    )
    port = port_of(gw)
    first = await serial_now(port, pki)
    kept = await TlsClient.open(port, pki.client_context())  # open across the reload
    assert (await kept.request()).status == 200
    new = pki.issue("new", "localhost")
    new_serial = serial_of_file(new[0])
    replace(new)  # type: ignore[operator]
    stats = gw.stats.listener("web")
    try:
        await wait_until(lambda: stats.ssl_certificate_update_success >= 1, within=WITHIN)
    except BaseException:
        await kept.aclose()
        raise
    assert await serial_now(port, pki) == new_serial != first
    assert (await kept.request()).status == 200  # the open connection goes on
    assert kept.peer_serial == first
    await kept.aclose()


async def test_reload_on_a_rewrite_in_place(
    nursery: trio.Nursery, start_gateway: StartGateway, pki: Pki
) -> None:
    cert, key = (Path(p) for p in pki.issue("server", "localhost"))

    def rewrite(new: tuple[str, str]) -> None:
        key.write_bytes(Path(new[1]).read_bytes())
        cert.write_bytes(Path(new[0]).read_bytes())

    await _reload_and_check(nursery, start_gateway, pki, cert, key, rewrite)


async def test_reload_on_an_atomic_rename(
    nursery: trio.Nursery, start_gateway: StartGateway, pki: Pki
) -> None:
    cert, key = (Path(p) for p in pki.issue("server", "localhost"))

    def rename(new: tuple[str, str]) -> None:
        os.replace(new[1], key)
        os.replace(new[0], cert)

    await _reload_and_check(nursery, start_gateway, pki, cert, key, rename)


async def test_reload_on_a_kubernetes_symlink_swap(
    nursery: trio.Nursery, start_gateway: StartGateway, pki: Pki
) -> None:
    volume = pki.root / "secret"
    first = volume / "..2026_01"
    first.mkdir(parents=True)
    old = pki.issue("server", "localhost")
    shutil.copy(old[0], first / "tls.crt")
    shutil.copy(old[1], first / "tls.key")
    (volume / "..data").symlink_to("..2026_01")
    (volume / "tls.crt").symlink_to("..data/tls.crt")
    (volume / "tls.key").symlink_to("..data/tls.key")

    def swap(new: tuple[str, str]) -> None:
        second = volume / "..2026_02"
        second.mkdir()
        shutil.copy(new[0], second / "tls.crt")
        shutil.copy(new[1], second / "tls.key")
        (volume / "..data_tmp").symlink_to("..2026_02")
        os.replace(volume / "..data_tmp", volume / "..data")  # what the kubelet does
        shutil.rmtree(first)

    await _reload_and_check(
        nursery, start_gateway, pki, volume / "tls.crt", volume / "tls.key", swap
    )


async def test_a_bad_new_certificate_is_refused_and_the_old_one_serves(
    nursery: trio.Nursery, start_gateway: StartGateway, pki: Pki
) -> None:
    upstream = await RecordingUpstream("api").start(nursery)
    cert, key = pki.issue("server", "localhost")
    gw = await start_gateway(tls_config(upstream.address, [{"cert": cert, "key": key}]))
    port = port_of(gw)
    stats = gw.stats.listener("web")
    old = await serial_now(port, pki)
    write(cert, b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    await wait_until(lambda: stats.ssl_certificate_update_rejected == 1, within=WITHIN)
    assert await serial_now(port, pki) == old
    # a certificate whose key is another's: refused too
    other = pki.issue("other", "localhost")
    shutil.copyfile(other[0], cert)
    await wait_until(lambda: stats.ssl_certificate_update_rejected == 2, within=WITHIN)
    assert await serial_now(port, pki) == old
    # the right pair: taken
    shutil.copyfile(other[1], key)
    await wait_until(lambda: stats.ssl_certificate_update_success == 1, within=WITHIN)
    assert await serial_now(port, pki) == serial_of_file(other[0])


async def test_a_cluster_reloads_its_client_certificate(
    nursery: trio.Nursery, start_gateway: StartGateway, pki: Pki
) -> None:
    import httpx

    upstream_ca = Pki(pki.root / "upstream")
    upstream_ca.root.mkdir()
    # the upstream trusts client certificates of ``pki``'s CA only
    context = server_context(upstream_ca.issue("upstream", "api.internal"), client_ca=pki.ca_file)
    upstream = await RecordingUpstream("api", context).start(nursery)
    stranger = upstream_ca.issue("stranger", "gateway.internal")  # not from pki's CA
    cert, key = pki.root / "client.pem", pki.root / "client.key"
    shutil.copy(stranger[0], cert)
    shutil.copy(stranger[1], key)
    config = simple_config({"api": [upstream.address]})
    config["clusters"][0]["tls"] = {
        "sni": "api.internal",
        "ca": upstream_ca.ca_file,
        "cert": str(cert),
        "key": str(key),
    }
    config["clusters"][0]["pool"] = {"max_idle": 0}  # a new connection per request
    gw = await start_gateway(config)
    web = gw.listener_address("web")
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"http://{web}/")).status_code == 502
        good = pki.issue("gateway", "gateway.internal")
        os.replace(good[1], key)
        os.replace(good[0], cert)
        stats = gw.stats.clusters["api"]
        await wait_until(lambda: stats.ssl_certificate_update_success >= 1, within=WITHIN)
        assert (await client.get(f"http://{web}/")).status_code == 200
    assert len(upstream.requests) == 1
