"""``x-forwarded-client-cert`` (XFCC), Envoy's header and modes, pure.

An element describes one verified client certificate, in Envoy's order: ``By`` (each
URI SAN of the gateway's own certificate that served the connection, the one the
client's server name picked; none when it has no URI SAN), ``Hash`` (SHA-256 of the
client's DER, hex), ``Subject`` (RFC 4514, quoted), then each ``URI`` and ``DNS`` SAN of
the client's; elements of several hops are joined with ``,``. Envoy's ``Cert`` and
``Chain`` (URL-encoded PEM) are left out: Envoy adds them only when configured, and
there is no key for them. What the gateway does with the client's own header
(``forward_client_cert``), as Envoy's ``forward_client_cert_details``:

    sanitize         removed; nothing set
    forward_only     a client with a verified certificate: passed as sent; else removed
    append_forward   a client with a verified certificate: ours appended; else removed
    sanitize_set     a client with a verified certificate: replaced by ours; else removed

So a client cannot forge the header: without a verified certificate whatever it sent
is removed, and under ``sanitize_set`` it is replaced. The header is settled before the
route is matched, so ``match.headers`` on it sees what the upstream will.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.config.model import ForwardClientCert
from gateway.http1.events import Headers
from gateway.tls.contexts import ClientIdentity

XFCC = b"x-forwarded-client-cert"


def xfcc_element(identity: ClientIdentity, by: Sequence[str] = ()) -> bytes:
    """The XFCC element describing ``identity``, verified by a proxy whose certificate
    has the URI SANs ``by``."""
    subject = identity.subject.replace("\\", "\\\\").replace('"', '\\"')
    parts = [f"By={uri}" for uri in by]
    parts += [f"Hash={identity.hash}", f'Subject="{subject}"']
    parts += [f"URI={uri}" for uri in identity.uris]
    parts += [f"DNS={name}" for name in identity.dns]
    return ";".join(parts).encode()


class ClientCertHeader:
    """What one connection does to each request's XFCC (its mode and its element)."""

    __slots__ = ("element", "mode")

    def __init__(
        self,
        mode: ForwardClientCert,
        identity: ClientIdentity | None,
        by: Sequence[str] = (),
    ) -> None:
        self.mode = mode if identity is not None else "sanitize"
        self.element = xfcc_element(identity, by) if identity is not None else b""

    def apply(self, headers: Headers) -> None:
        """Rewrite ``headers`` in place as the mode says."""
        mode = self.mode
        if mode == "forward_only":
            return
        sent = [value for name, value in headers if name.lower() == XFCC]
        if sent:
            headers[:] = [(name, value) for name, value in headers if name.lower() != XFCC]
        if mode == "sanitize_set":
            headers.append((XFCC, self.element))
        elif mode == "append_forward":
            headers.append((XFCC, b",".join([*sent, self.element])))
