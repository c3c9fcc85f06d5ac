"""``x-forwarded-client-cert`` (XFCC), Envoy's header and modes, pure.

An element describes one client certificate: ``Hash`` (SHA-256 of the DER, hex),
``Subject`` (RFC 4514, quoted), then each ``URI`` and ``DNS`` SAN; elements of several
hops are joined with ``,``. What the gateway does with the client's own header
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

from gateway.config.model import ForwardClientCert
from gateway.http1.events import Headers
from gateway.tls.contexts import ClientIdentity

XFCC = b"x-forwarded-client-cert"


def xfcc_element(identity: ClientIdentity) -> bytes:
    """The XFCC element describing ``identity``."""
    subject = identity.subject.replace("\\", "\\\\").replace('"', '\\"')
    parts = [f"Hash={identity.hash}", f'Subject="{subject}"']
    parts += [f"URI={uri}" for uri in identity.uris]
    parts += [f"DNS={name}" for name in identity.dns]
    return ";".join(parts).encode()


class ClientCertHeader:
    """What one connection does to each request's XFCC (its mode and its element)."""

    __slots__ = ("element", "mode")

    def __init__(self, mode: ForwardClientCert, identity: ClientIdentity | None) -> None:
        self.mode = mode if identity is not None else "sanitize"
        self.element = xfcc_element(identity) if identity is not None else b""

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
