"""``triogate toxiproxy``: a gateway whose only admin surface is Toxiproxy's REST API.

A drop-in for ``toxiproxy-server`` in a CI pipeline: the same flags (``-host``,
``-port``, ``-config``, ``-proxy-metrics``, ``-version``; spelled with one dash or
two), the same API (``admin.toxiproxy``), nothing persisted. The composition: a
gateway with an empty config, no rollouts; the ``--config`` file (a ``/populate``
array, toxics included) applied as one change; then the API, so that a client that
reaches it finds those proxies up. As with Toxiproxy, a bad ``--config`` file is
logged and the server starts without it.
"""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path

import click
import trio

from admin.toxiproxy import VERSION, ToxiproxyApp, toxiproxy_service

__all__ = ["VERSION", "serve_toxiproxy_server"]
from gateway import Gateway, GatewayError, run_gateway
from gateway.config import Address, AdminConfig, Config, ToxiproxyApi

log = logging.getLogger("triogate.toxiproxy")


async def _populate_from(gateway: Gateway, path: Path) -> None:
    """Apply the ``--config`` file as ``POST /populate`` would (errors logged)."""
    try:
        body = await trio.Path(path).read_bytes()
    except OSError as e:
        log.error("--config %s: %s", path, e.strerror or e)
        click.echo(f"toxiproxy: --config {path}: {e.strerror or e}", err=True)
        return
    app = ToxiproxyApp(gateway)
    try:
        await app.populate_body(body)
    except GatewayError as e:
        click.echo(f"toxiproxy: --config {path}: {e}", err=True)
        return
    count = len(json.loads(body)) if body.strip() else 0
    click.echo(f"toxiproxy: populated {count} proxies from {path}")


async def serve_toxiproxy_server(
    address: Address, config_file: Path | None, proxy_metrics: bool
) -> None:
    """Run until SIGTERM/SIGINT (then stop: Toxiproxy keeps nothing to drain for)."""
    config = Config(admin=AdminConfig(toxiproxy=ToxiproxyApi(address, proxy_metrics)))
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            gateway: Gateway = await nursery.start(
                lambda task_status: run_gateway(config, rollouts=False, task_status=task_status)
            )
            if config_file is not None:
                await _populate_from(gateway, config_file)
            assert gateway.supervisor is not None
            service = toxiproxy_service(address, metrics=proxy_metrics)
            bound = await gateway.supervisor.start_child(service(gateway))
            click.echo(f"toxiproxy-server {VERSION} (triogate)")
            click.echo(f"Toxiproxy API: http://{bound}/")
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break
