"""Certificates (all from ``trustme``), TLS upstreams and raw TLS clients for the TLS tests."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path
from typing import Any

import attrs
import h11
import trio
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.app import Gateway
from gateway.config import Address
from tests.conftest import serve_h11


@attrs.define
class Pki:
    """A CA and files written under ``root``: the gateway reads them by path."""

    root: Path
    ca: trustme.CA = attrs.Factory(trustme.CA)

    @property
    def ca_file(self) -> str:
        path = self.root / f"ca-{id(self.ca)}.pem"
        if not path.exists():
            self.ca.cert_pem.write_to_path(str(path))
        return str(path)

    def issue(self, name: str, *identities: str, **kwargs: Any) -> tuple[str, str]:
        """A certificate for ``identities`` (default: ``name``): (cert file, key file).

        trustme takes DNS names and IPs; a ``scheme://`` identity (a SPIFFE id) is a URI
        SAN, in a leaf signed here with the trustme CA's key (trustme has no URI SANs).
        """
        identities = identities or (name,)
        cert_file, key_file = self.root / f"{name}.pem", self.root / f"{name}.key"
        if any("://" in i for i in identities):
            pem, key = self._issue_with_uris(identities)
            cert_file.write_bytes(pem)
            key_file.write_bytes(key)
            return str(cert_file), str(key_file)
        cert = self.ca.issue_cert(*identities, **kwargs)
        cert_file.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
        cert.private_key_pem.write_to_path(str(key_file))
        return str(cert_file), str(key_file)

    def _issue_with_uris(self, identities: tuple[str, ...]) -> tuple[bytes, bytes]:
        ca_cert = x509.load_pem_x509_certificate(self.ca.cert_pem.bytes())
        ca_key = serialization.load_pem_private_key(self.ca.private_key_pem.bytes(), None)
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        sans: list[x509.GeneralName] = [
            x509.UniformResourceIdentifier(i) if "://" in i else x509.DNSName(i) for i in identities
        ]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "trustme")]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
                ),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
        )
        pem = cert.public_bytes(serialization.Encoding.PEM)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return pem, key_pem

    def client_context(self, cert: tuple[str, str] | None = None) -> ssl.SSLContext:
        """A client context trusting this CA, presenting ``cert`` if given."""
        context = ssl.create_default_context(cafile=self.ca_file)
        if cert is not None:
            context.load_cert_chain(*cert)
        return context


def serial_of(der: bytes | None) -> int:
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def serial_of_file(path: str) -> int:
    return x509.load_pem_x509_certificate(Path(path).read_bytes()).serial_number


@attrs.define
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


@attrs.define(eq=False)
class TlsClient:
    """One TLS connection to the gateway, speaking HTTP/1.1 with h11 (keep-alive)."""

    stream: trio.SSLStream[trio.SocketStream]
    conn: h11.Connection = attrs.Factory(lambda: h11.Connection(h11.CLIENT))

    @classmethod
    async def open(
        cls,
        port: int,
        context: ssl.SSLContext,
        server_name: str = "localhost",
        alpn: list[str] | None = None,
    ) -> TlsClient:
        if alpn is not None:
            context.set_alpn_protocols(alpn)
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
        stream = trio.SSLStream(tcp, context, server_hostname=server_name)
        try:
            await stream.do_handshake()
        except BaseException:
            await tcp.aclose()
            raise
        return cls(stream)

    @property
    def peer_serial(self) -> int:
        return serial_of(self.stream.getpeercert(binary_form=True))

    async def request(self, path: str = "/", headers: list[tuple[str, str]] = ()) -> Reply:  # type: ignore[assignment]
        conn = self.conn
        if conn.our_state is h11.DONE:
            conn.start_next_cycle()
        data = conn.send(
            h11.Request(method="GET", target=path, headers=[("host", "localhost"), *headers])
        )
        data += conn.send(h11.EndOfMessage())
        await self.stream.send_all(data)
        response: h11.Response | None = None
        body = b""
        with trio.fail_after(5):
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await self.stream.receive_some(65536)
                    if not data:
                        raise trio.BrokenResourceError("closed by the gateway")
                    conn.receive_data(data)
                elif isinstance(event, h11.Response):
                    response = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise trio.BrokenResourceError("closed")
        assert response is not None
        return Reply(
            response.status_code,
            {k.decode(): v.decode() for k, v in response.headers},
            body,
        )

    async def aclose(self) -> None:
        with trio.move_on_after(1):
            await self.stream.aclose()


async def tls_get(
    port: int,
    context: ssl.SSLContext,
    path: str = "/",
    server_name: str = "localhost",
    headers: list[tuple[str, str]] = (),  # type: ignore[assignment]
) -> Reply:
    client = await TlsClient.open(port, context, server_name)
    try:
        return await client.request(path, headers)
    finally:
        await client.aclose()


@attrs.define(eq=False)
class RecordingUpstream:
    """An HTTP/1.1 upstream (over TLS with ``context``) that records each request's
    headers and answers 200 with its name."""

    name: str
    context: ssl.SSLContext | None = None
    address: Address = attrs.Factory(lambda: Address("127.0.0.1", 0))
    requests: list[dict[str, str]] = attrs.Factory(list)
    handshake_errors: list[str] = attrs.Factory(list)

    async def start(self, nursery: trio.Nursery) -> RecordingUpstream:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.address = Address("127.0.0.1", listeners[0].socket.getsockname()[1])
        nursery.start_soon(trio.serve_listeners, self._serve, listeners)
        return self

    async def _serve(self, tcp: trio.SocketStream) -> None:
        stream: trio.abc.Stream = tcp
        if self.context is not None:
            tls = trio.SSLStream(tcp, self.context, server_side=True)
            try:
                await tls.do_handshake()
            except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
                self.handshake_errors.append(str(e.__cause__ or e))
                await tcp.aclose()
                return
            stream = tls
        await serve_h11(stream, self.name, self._arrived, self._status)  # type: ignore[arg-type]

    def _arrived(self, request: h11.Request) -> None:
        self.requests.append({k.decode(): v.decode() for k, v in request.headers})

    async def _status(self, request: h11.Request) -> int:
        return 200


def server_context(cert: tuple[str, str], client_ca: str | None = None) -> ssl.SSLContext:
    """A TLS server context (an upstream's), asking for a client certificate from
    ``client_ca`` if given."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*cert)
    if client_ca is not None:
        context.load_verify_locations(cafile=client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def tls_config(
    upstream: Address,
    certificates: list[dict[str, Any]],
    routes: list[dict[str, Any]] | None = None,
    cluster_tls: dict[str, Any] | None = None,
    **tls: Any,
) -> dict[str, Any]:
    """One TLS listener ``web`` on port 0 to cluster ``api`` at ``upstream``."""
    cluster: dict[str, Any] = {"name": "api", "endpoints": [{"address": str(upstream)}]}
    if cluster_tls is not None:
        cluster["tls"] = cluster_tls
    return {
        "admin": {"address": "127.0.0.1:0"},
        "listeners": [
            {
                "name": "web",
                "address": "127.0.0.1:0",
                "routes": routes or [{"match": {"prefix": "/"}, "cluster": "api"}],
                "tls": {"certificates": certificates, **tls},
            }
        ],
        "clusters": [cluster],
    }


def port_of(gw: Gateway, listener: str = "web") -> int:
    return gw.listener_address(listener).port
