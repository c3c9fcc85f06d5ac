"""The one error of the Toxiproxy API: an answer in Toxiproxy's error format.

    GatewayError (gateway.errors)
    └── ToxiproxyError     status and message, written as Toxiproxy's ``apiError`` does:
                           ``{"error": message, "status": status}`` + newline, text/plain

Errors of the control plane (an invalid config, a bind failure, an actor that stopped)
are translated into one by ``admin.toxiproxy.app`` where they are caught.
"""

from __future__ import annotations

from gateway import GatewayError


class ToxiproxyError(GatewayError):
    """A Toxiproxy API error: ``status`` and Toxiproxy's ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status_hint = status
        self.message = message


def proxy_not_found() -> ToxiproxyError:
    return ToxiproxyError(404, "proxy not found")


def toxic_not_found() -> ToxiproxyError:
    return ToxiproxyError(404, "toxic not found")
