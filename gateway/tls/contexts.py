"""The SSL contexts of a listener (termination) and of a cluster (origination).

Termination: one ``ssl.SSLContext`` per configured certificate, all with the same
policy (TLS 1.2 or the configured minimum, ECDHE with AEAD ciphers only for TLS 1.2,
ALPN, client certificates from ``client_auth.ca``). Connections start on the first
context; its ``sni_callback`` moves the connection to the context the client's server
name picks: an exact name, then a wildcard (``*.example.com`` matches one label), then
the first. Session tickets are on (OpenSSL's default: two per TLS 1.3 handshake), all
sealed with the gateway's one set of keys (``gateway.tls.tickets``), so a session
resumes whichever certificate the name picked, on any worker process, and after a
certificate reload.

Client certificates are asked for with ``CERT_OPTIONAL`` even when ``required``: a
certificate that does not verify fails the handshake (OpenSSL), but a missing one is
refused by ``ServerTls.admit`` after it, where it is counted (``ssl.fail_verify_no_cert``)
and ``allowed_sans`` is checked; either way the connection closes before a byte of it
is read as HTTP, so an unauthorised client reaches no upstream.

Origination (``TlsOrigin``): SNI (``sni`` or the endpoint's host), verification
against ``ca`` or the system's store (hostname included) unless ``verify: false``, an
optional client certificate. The origin object stays for the cluster's config; a
reload swaps its context in place, so pools keep theirs and new connections take it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import ssl
from collections.abc import Iterable
from typing import TYPE_CHECKING

import trio
from cryptography import x509
from cryptography.x509.oid import NameOID

from gateway.config import Address, ListenerTls, UpstreamTls
from gateway.errors import UpstreamTlsError
from gateway.netio import SocketIO
from gateway.tls.stream import TlsStream
from gateway.tls.tickets import share_ticket_keys

if TYPE_CHECKING:
    from gateway.observe.stats import ClusterStats, ListenerStats

__all__ = [
    "MODERN_CIPHERS",
    "SERVED_ALPN",
    "ClientIdentity",
    "ServerTls",
    "TlsOrigin",
    "certificate_names",
    "certificate_uris",
    "files_signature",
]

log = logging.getLogger("triogate.tls")

#: the ALPN protocols this gateway serves; a listener offers those of its ``alpn`` in it
SERVED_ALPN: tuple[str, ...] = ("h2", "http/1.1")

#: TLS 1.2 cipher suites: forward secrecy (ECDHE) and AEAD only; TLS 1.3's are all so
MODERN_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def load_certificate(path: str) -> x509.Certificate:
    """The first certificate of a PEM file; ``OSError``, or ``ValueError`` if none parses."""
    with open(path, "rb") as f:
        data = f.read()
    certificates = x509.load_pem_x509_certificates(data)
    return certificates[0]


def certificate_names(certificate: x509.Certificate) -> list[str]:
    """The DNS names a certificate is for: its SANs, else its common name."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    if not names:
        names = [
            str(a.value) for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        ]
    return [n.lower() for n in names]


def certificate_uris(certificate: x509.Certificate) -> tuple[str, ...]:
    """The URI SANs of a certificate (a SPIFFE id, say), in its order."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(san.get_values_for_type(x509.UniformResourceIdentifier))


def files_signature(paths: Iterable[str]) -> tuple[tuple[str, int, int, int, int], ...]:
    """What says a file changed: where its path leads (a symlink swap), inode, size,
    mtime. A file that cannot be read gives zeros (a reload then reports it)."""
    signature = []
    for path in paths:
        try:
            st = os.stat(path)
            signature.append(
                (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            )
        except OSError:
            signature.append((path, 0, 0, 0, 0))
    return tuple(signature)


class ClientIdentity:
    """A verified client certificate: what ``x-forwarded-client-cert`` says of it."""

    __slots__ = ("dns", "hash", "subject", "uris")

    def __init__(self, der: bytes) -> None:
        certificate = x509.load_der_x509_certificate(der)
        self.hash = hashlib.sha256(der).hexdigest()
        self.subject = certificate.subject.rfc4514_string()
        try:
            san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            self.dns: list[str] = san.get_values_for_type(x509.DNSName)
            self.uris: list[str] = san.get_values_for_type(x509.UniformResourceIdentifier)
        except x509.ExtensionNotFound:
            self.dns, self.uris = [], []

    def sans(self) -> set[str]:
        return {*self.dns, *self.uris}


class ServerTls:
    """A listener's TLS: its contexts by server name, and the checks after a handshake."""

    def __init__(self, config: ListenerTls) -> None:
        self.config = config
        offered = [p for p in config.alpn if p in SERVED_ALPN]
        self.exact: dict[str, ssl.SSLContext] = {}
        self.wildcard: dict[str, ssl.SSLContext] = {}
        #: each context's certificate's URI SANs: XFCC's ``By`` on its connections
        self.served_uris: dict[ssl.SSLContext, tuple[str, ...]] = {}
        contexts = []
        for certificate in config.certificates:
            context = _server_context(config, certificate.cert, certificate.key, offered)
            contexts.append(context)
            leaf = load_certificate(certificate.cert)
            self.served_uris[context] = certificate_uris(leaf)
            names = certificate.server_names or certificate_names(leaf)
            for name in names:
                name = name.lower()
                if name.startswith("*."):
                    self.wildcard.setdefault(name[2:], context)
                else:
                    self.exact.setdefault(name, context)
        self.default = contexts[0]
        self.default.sni_callback = self._pick
        self.allowed_sans = frozenset(config.client_auth.allowed_sans if config.client_auth else ())
        self.client_cert_required = config.client_auth is not None and config.client_auth.required
        self.signature = files_signature(self.paths())

    def paths(self) -> list[str]:
        """The files its contexts were made from (watched for a reload)."""
        paths = [p for c in self.config.certificates for p in (c.cert, c.key)]
        if self.config.client_auth is not None:
            paths.append(self.config.client_auth.ca)
        return paths

    def _pick(self, sslobj: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        if not name:
            return
        name = name.lower()
        chosen = self.exact.get(name)
        if chosen is None:
            _, _, parent = name.partition(".")
            chosen = self.wildcard.get(parent)
        if chosen is not None and chosen is not context:
            sslobj.context = chosen

    def wrap(self, io: SocketIO) -> TlsStream:
        return TlsStream(io, self.default, server_side=True)

    def served_by(self, stream: TlsStream) -> tuple[str, ...]:
        """The URI SANs of the certificate ``stream`` was served with (the one its
        server name picked), after its handshake."""
        return self.served_uris.get(stream.ssl.context, ())

    def admit(self, stream: TlsStream, stats: ListenerStats) -> tuple[bool, ClientIdentity | None]:
        """After the handshake: whether the client may go on (a refusal is counted in
        ``stats``), and its verified identity (None if it showed no certificate)."""
        stats.ssl_handshake += 1
        if stream.session_reused:
            stats.ssl_session_reused += 1
        if self.config.client_auth is None:
            return True, None
        der = stream.peer_certificate()
        if der is None:
            if self.client_cert_required:
                stats.ssl_fail_verify_no_cert += 1
                return False, None
            stats.ssl_no_certificate += 1
            return True, None
        identity = ClientIdentity(der)
        if self.allowed_sans and not (identity.sans() & self.allowed_sans):
            stats.ssl_fail_verify_san += 1
            return False, identity
        return True, identity


def _server_context(config: ListenerTls, cert: str, key: str, alpn: list[str]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[config.min_version]
    context.set_ciphers(MODERN_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.load_cert_chain(cert, key)
    if alpn:
        context.set_alpn_protocols(alpn)
    scope = b""
    if config.client_auth is not None:
        context.load_verify_locations(cafile=config.client_auth.ca)
        context.verify_mode = ssl.CERT_OPTIONAL  # a missing one is refused by ``admit``
        with open(config.client_auth.ca, "rb") as ca:  # (just loaded: readable)
            scope = ca.read()
    # a ticket opens on every worker and after a reload (not after a client CA change)
    share_ticket_keys(context, scope)
    return context


def client_context(config: UpstreamTls, alpn: tuple[str, ...] = ()) -> ssl.SSLContext:
    """The context of connections to a cluster's endpoints, offering ``alpn``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if alpn:
        context.set_alpn_protocols(list(alpn))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(MODERN_CIPHERS)
    if config.verify:
        if config.ca is not None:
            context.load_verify_locations(cafile=config.ca)
        else:
            context.load_default_certs()
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if config.cert is not None and config.key is not None:
        context.load_cert_chain(config.cert, config.key)
    return context


def _reason(error: Exception) -> str:
    """OpenSSL's reason for a failed handshake, as a log line says it."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {error.verify_message}"
    if isinstance(error, ssl.SSLError) and error.reason:
        return str(error.reason).lower().replace("_", " ")
    return str(error)


class TlsOrigin:
    """TLS to a cluster's endpoints: the context in force and where it counts."""

    def __init__(
        self, config: UpstreamTls, stats: ClusterStats | None = None, alpn: tuple[str, ...] = ()
    ) -> None:
        self.config = config
        #: what the handshake offers: ``("h2",)`` to a ``protocol: http2`` cluster's
        #: endpoints (as Envoy, none to an HTTP/1.1 one)
        self.alpn = alpn
        self.context = client_context(config, alpn)
        self.stats = stats
        self.signature = files_signature(self.paths())

    def paths(self) -> list[str]:
        config = self.config
        return [p for p in (config.ca, config.cert, config.key) if p is not None]

    async def handshake(self, io: SocketIO, address: Address) -> TlsStream:
        """TLS over ``io`` (closed on failure); raises ``UpstreamTlsError``."""
        stream = TlsStream(
            io, self.context, server_side=False, server_hostname=self.config.sni or address.host
        )
        stats = self.stats
        try:
            await stream.do_handshake()
        except (ssl.SSLError, trio.BrokenResourceError, trio.ClosedResourceError) as e:
            io.close()
            if stats is not None:
                stats.ssl_connection_error += 1
            reason = _reason(e)
            log.warning("TLS handshake with upstream %s failed: %s", address, reason)
            raise UpstreamTlsError(f"TLS handshake with {address} failed: {reason}") from None
        except BaseException:
            io.close()
            raise
        if stats is not None:
            stats.ssl_handshake += 1
        return stream

    def reload_if_changed(self) -> bool | None:
        """Take the files again if they changed: True (reloaded), False (refused: the old
        context stays), None (unchanged)."""
        signature = files_signature(self.paths())
        if signature == self.signature:
            return None
        self.signature = signature
        try:
            self.context = client_context(self.config, self.alpn)
        except (OSError, ssl.SSLError, ValueError) as e:
            log.error("upstream TLS files changed but do not load, kept the old: %s", e)
            if self.stats is not None:
                self.stats.ssl_certificate_update_rejected += 1
            return False
        log.info("upstream TLS files reloaded: %s", ", ".join(self.paths()))
        if self.stats is not None:
            self.stats.ssl_certificate_update_success += 1
        return True
