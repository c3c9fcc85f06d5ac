"""TLS: termination on listeners (SNI, ALPN, mTLS, XFCC), origination to clusters, and
certificates reloaded when their files change.

    contexts   the SSL contexts (``ServerTls`` of a listener, ``TlsOrigin`` of a cluster)
    stream     ``TlsStream``: an ``ssl.SSLObject`` over the data path's ``SocketIO``
    xfcc       ``x-forwarded-client-cert`` per Envoy's modes (pure)
    reload     the control-side watchers that swap contexts when files change

The data path only ever reads a context in force (``ListenerContext.tls``,
``TlsOrigin.context``); the watchers, one task per listener and per cluster actor,
replace them. A connection keeps the context it started with.
"""

from __future__ import annotations

from gateway.tls.contexts import (
    MODERN_CIPHERS,
    SERVED_ALPN,
    ClientIdentity,
    ServerTls,
    TlsOrigin,
    certificate_names,
    certificate_uris,
    files_signature,
)
from gateway.tls.stream import TlsStream
from gateway.tls.xfcc import XFCC, ClientCertHeader, xfcc_element

__all__ = [
    "MODERN_CIPHERS",
    "SERVED_ALPN",
    "XFCC",
    "ClientCertHeader",
    "ClientIdentity",
    "ServerTls",
    "TlsOrigin",
    "TlsStream",
    "certificate_names",
    "certificate_uris",
    "files_signature",
    "xfcc_element",
]
