"""Session ticket keys shared by every TLS listener of one gateway, worker processes too.

OpenSSL seals a session ticket with its context's ticket keys, which it makes at random
for each context. So, left alone, a ticket is good only on the context that issued it:
a client that comes back on another worker process (``SO_REUSEPORT`` spreads connections
over them), or after a certificate reload (new contexts), makes a full handshake again.
Envoy shares one set of keys over its worker threads; here the primary makes one set
(``ticket_keys``), each worker takes the primary's (``use_ticket_keys``, from its first
``Install``), and every server context gets them (``share_ticket_keys``). They live as
long as the primary, like Envoy's generated keys (no rotation: a restart makes new ones).

A listener that verifies client certificates gets keys of its own, derived from the
shared ones and its client CA (``scope``): a resumed session skips the certificate
check, so a session from before the CA changed must not resume after it.

Python's ``ssl`` has no call for it, so this sets them with OpenSSL's own
``SSL_CTX_set_tlsext_ticket_keys`` (``SSL_CTX_ctrl`` command 59, 80 bytes: name, HMAC
key, AES key) through ``ctypes``, on the ``SSL_CTX`` pointer that CPython keeps first in
an ``SSLContext`` object. Each use reads the keys back (command 58) and compares: if
anything does not line up (another Python, another layout), the keys are not shared,
a warning says so once, and each context keeps its own, as before.
"""

from __future__ import annotations

import _ssl
import ctypes
import hashlib
import hmac
import logging
import os
import ssl

__all__ = ["TICKET_KEYS_LENGTH", "share_ticket_keys", "ticket_keys", "use_ticket_keys"]

log = logging.getLogger("triogate.tls")

TICKET_KEYS_LENGTH = 80
_SET_KEYS, _GET_KEYS = 59, 58  # SSL_CTRL_SET_TLSEXT_TICKET_KEYS, ..._GET_...

_keys: bytes | None = None
_broken = False


def ticket_keys() -> bytes:
    """This gateway's keys (made on first use: the primary's, or the worker's given ones)."""
    global _keys
    if _keys is None:
        _keys = os.urandom(TICKET_KEYS_LENGTH)
    return _keys


def use_ticket_keys(keys: bytes) -> None:
    """Take the primary's keys (a worker, before its first TLS listener)."""
    global _keys
    if len(keys) != TICKET_KEYS_LENGTH:
        raise ValueError(f"session ticket keys are {TICKET_KEYS_LENGTH} bytes, not {len(keys)}")
    _keys = keys


def _ctrl() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    try:
        function = ctypes.CDLL(_ssl.__file__).SSL_CTX_ctrl
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    function.restype = ctypes.c_long
    return function


_SSL_CTX_CTRL = _ctrl()


def _scoped(scope: bytes) -> bytes:
    if not scope:
        return ticket_keys()
    base = ticket_keys()
    derived = b"".join(hmac.digest(base, b"%d" % i + scope, hashlib.sha512) for i in range(2))
    return derived[:TICKET_KEYS_LENGTH]


def share_ticket_keys(context: ssl.SSLContext, scope: bytes = b"") -> bool:
    """Give ``context`` this gateway's ticket keys (those of ``scope``: a client CA's
    bytes); False if they cannot be set here."""
    global _broken
    if _broken:
        return False
    keys = _scoped(scope)
    ctrl = _SSL_CTX_CTRL
    ok = False
    if ctrl is not None:
        pointer = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
        if pointer:
            given = ctypes.create_string_buffer(keys, TICKET_KEYS_LENGTH)
            read = ctypes.create_string_buffer(TICKET_KEYS_LENGTH)
            ok = (
                ctrl(pointer, _SET_KEYS, TICKET_KEYS_LENGTH, given) == 1
                and ctrl(pointer, _GET_KEYS, TICKET_KEYS_LENGTH, read) == 1
                and read.raw == keys
            )
    if not ok:
        _broken = True
        log.warning(
            "session ticket keys cannot be shared here: each TLS context keeps its own "
            "(a session resumes only on the worker and certificate that issued its ticket)"
        )
    return ok
