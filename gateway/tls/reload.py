"""Certificate hot reload, on the control side: poll the files, swap the contexts.

Every ``RELOAD_INTERVAL`` seconds a watcher compares each TLS file's signature (where
its path leads, inode, size, mtime: ``files_signature``), which sees a rewrite in
place, an atomic rename over it and a symlink swap (Kubernetes' ``..data``). On a
change it builds new contexts from the files; if they load, new connections take them
(open ones keep theirs); if not (unparsable, a key that is not the certificate's), the
reason is logged, ``ssl.certificate_update_rejected`` counted, and the old contexts
keep serving until the files change again.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from gateway.tls.contexts import ServerTls, TlsOrigin, files_signature

if TYPE_CHECKING:
    from gateway.listener.context import ListenerContext

log = logging.getLogger("triogate.tls")

#: seconds between two looks at the files
RELOAD_INTERVAL = 1.0


def reload_server_tls(ctx: ListenerContext) -> bool | None:
    """Reload the listener's contexts if their files changed: True (reloaded), False
    (refused, the old ones kept), None (no change, or no TLS)."""
    current = ctx.tls
    if current is None:
        return None
    signature = files_signature(current.paths())
    if signature == current.signature:
        return None
    current.signature = signature  # tried once per change of the files
    try:
        ctx.tls = ServerTls(current.config)
    except (OSError, ssl.SSLError, ValueError) as e:
        log.error("listener %r: TLS files changed but do not load, kept the old: %s", ctx.name, e)
        ctx.stats.ssl_certificate_update_rejected += 1
        return False
    log.info("listener %r: TLS certificates reloaded", ctx.name)
    ctx.stats.ssl_certificate_update_success += 1
    return True


async def watch_listener_tls(ctx: ListenerContext, interval: float = RELOAD_INTERVAL) -> None:
    """Reload the listener's certificates when their files change; runs until cancelled."""
    while True:
        await trio.sleep(interval)
        reload_server_tls(ctx)


async def watch_origin(
    get: Callable[[], TlsOrigin | None], interval: float = RELOAD_INTERVAL
) -> None:
    """Reload a cluster's TLS files when they change (``get``: its origin in force)."""
    while True:
        await trio.sleep(interval)
        origin = get()
        if origin is not None:
            origin.reload_if_changed()
