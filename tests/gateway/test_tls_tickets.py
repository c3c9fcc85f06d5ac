"""TLS session tickets shared over a gateway's contexts (``gateway.tls.tickets``): a
session resumes on a listener's new contexts (a reload, another worker process) and
on a TLS listener served by two worker processes, but not across a client CA change."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import trio
import yaml

from gateway.config import Address
from gateway.config.model import CertificateConfig, ClientAuth, ListenerTls
from gateway.tls import ServerTls
from tests.conftest import admin_json, gateway_process, simple_config, worker_rows
from tests.gateway.tls_support import Pki


def _serve_once(context: ssl.SSLContext, listener: socket.socket) -> None:
    conn, _ = listener.accept()
    with context.wrap_socket(conn, server_side=True) as tls:
        tls.sendall(b"x")
        tls.recv(1)


def resumed_on_each(
    contexts: list[ssl.SSLContext], client: ssl.SSLContext, version: ssl.TLSVersion
) -> list[bool]:
    """One connection to each server context in turn, each offering the session the one
    before got; whether each resumed."""
    client.maximum_version = version
    session = None
    reused = []
    for context in contexts:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            server = threading.Thread(target=_serve_once, args=(context, listener))
            server.start()
            raw = socket.create_connection(listener.getsockname())
            with client.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
                tls.recv(1)  # (TLS 1.3: the ticket comes after the handshake)
                session = tls.session
                reused.append(tls.session_reused)
                tls.sendall(b"y")
            server.join()
    return reused


def test_a_session_resumes_on_new_contexts_of_the_same_listener(pki: Pki) -> None:
    cert = pki.issue("server", "localhost")
    config = ListenerTls(certificates=(CertificateConfig(*cert),))
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        # three ServerTls: what a reload or two more worker processes make
        contexts = [ServerTls(config).default for _ in range(3)]
        assert resumed_on_each(contexts, pki.client_context(), version) == [False, True, True]


def test_a_client_ca_change_ends_the_sessions_of_its_clients(pki: Pki) -> None:
    cert = pki.issue("server", "localhost")
    client_cert = pki.issue("client", "client.internal")
    other_ca = Pki(pki.root / "other")
    other_ca.root.mkdir()
    ca_file = Path(pki.root / "clients-ca.pem")

    def listener() -> ssl.SSLContext:
        auth = ClientAuth(ca=str(ca_file), required=True)
        tls = ListenerTls(certificates=(CertificateConfig(*cert),), client_auth=auth)
        return ServerTls(tls).default

    ca_file.write_bytes(Path(pki.ca_file).read_bytes())
    before = listener()
    same = listener()
    ca_file.write_bytes(Path(pki.ca_file).read_bytes() + Path(other_ca.ca_file).read_bytes())
    changed = listener()
    client = pki.client_context(client_cert)
    version = ssl.TLSVersion.TLSv1_3
    assert resumed_on_each([before, same], client, version) == [False, True]
    assert resumed_on_each([before, changed], client, version) == [False, False]


async def test_sessions_resume_across_two_workers(pki: Pki, start_upstream: object) -> None:
    api: Address = await start_upstream("api")  # type: ignore[operator]
    cert = pki.issue("server", "localhost")
    config = simple_config({"api": [api]})
    config["listeners"][0]["tls"] = {"certificates": [{"cert": cert[0], "key": cert[1]}]}
    path = pki.root / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    async with gateway_process(path, workers=2) as gateway:
        port = gateway.listeners["web"].port
        client = pki.client_context()

        def requests() -> list[tuple[bytes, bool]]:
            session = None
            answers = []
            for _ in range(30):  # a connection each: SO_REUSEPORT spreads them
                raw = socket.create_connection(("127.0.0.1", port))
                with client.wrap_socket(raw, server_hostname="localhost", session=session) as s:
                    s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                    response = b""
                    while data := s.recv(65536):
                        response += data
                    session = s.session
                    answers.append((response[:12], s.session_reused))
            return answers

        answers = await trio.to_thread.run_sync(requests)
        rows = await worker_rows(gateway.admin)
        stats = await admin_json(gateway.admin, "/stats?filter=ssl")
    assert [status for status, _ in answers] == [b"HTTP/1.1 200"] * 30
    assert [reused for _, reused in answers] == [False] + [True] * 29
    assert all(row["downstream_rq_total"] > 0 for row in rows), rows  # both workers served
    assert len(rows) == 2
    assert stats["counters"]["listener.web.ssl.session_reused"] == 29
