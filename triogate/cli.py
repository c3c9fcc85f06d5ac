"""The ``triogate`` command: run, validate, demo (and ``ctl`` for the admin API)."""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import NoReturn

import click
import trio

from admin import admin_service
from gateway import Gateway, run_gateway
from gateway.config import Address, Config, load_config
from gateway.control.state import check_state_path, default_state_path, load_state
from gateway.control.store import Store, open_etcd_store
from gateway.errors import ConfigError, StateFileError, StoreUnavailable, root_cause
from gateway.runtime.workers import resolve_workers
from triogate.ctl import ctl
from triogate.demo import DemoPorts, run_demo

log = logging.getLogger("triogate")

#: seconds a drain (SIGTERM, SIGINT) gives requests in flight before stopping
DRAIN_GRACE = 10.0


def _fail_config(err: ConfigError, source: str, advice: str = "") -> NoReturn:
    """Report a config's issues and exit 2 (the input is wrong, as click's usage errors).

    One issue is one line, ending with ``advice`` (what to do besides fixing it); more are
    listed one a line under a count, the advice last.
    """
    if len(err.issues) == 1:
        click.echo(
            f"triogate: {source}: {err.issues[0]}" + (f"; {advice}" if advice else ""), err=True
        )
        sys.exit(2)
    click.echo(f"{source}: {len(err.issues)} error(s):", err=True)
    for issue in err.issues:
        click.echo(f"  {issue}", err=True)
    if advice:
        click.echo(f"triogate: fix them; {advice}", err=True)
    sys.exit(2)


def _check_with_validate(config_file: Path) -> str:
    return f"then check the file with: triogate validate {config_file}"


def _api_key(config: Config) -> str | None:
    admin = config.admin
    if admin.api_key_env:
        key = os.environ.get(admin.api_key_env)
        if not key:
            raise click.ClickException(f"admin.api_key_env: ${admin.api_key_env} is not set")
        return key
    if admin.api_key_file:
        try:
            key = Path(admin.api_key_file).read_text().strip()
        except OSError as e:
            raise click.ClickException(f"admin.api_key_file: {e.strerror}") from None
        if not key:
            raise click.ClickException(f"admin.api_key_file: {admin.api_key_file} is empty")
        return key
    return None


async def _serve(
    config: Config,
    state_path: Path | None,
    *,
    workers: int = 1,
    verbosity: int = 0,
    store: Store | None = None,
) -> None:
    api_key = _api_key(config)
    if not config.admin.address.is_loopback and api_key is None:
        raise click.ClickException(
            "admin.address is not loopback: set admin.api_key_env or admin.api_key_file"
        )
    # signals are ours before anything binds: a SIGTERM during startup drains too
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            gateway: Gateway = await nursery.start(
                lambda task_status: run_gateway(
                    config,
                    state_path=state_path,
                    store=store,
                    services=[admin_service(api_key)],
                    workers=workers,
                    verbosity=verbosity,
                    task_status=task_status,
                )
            )
            # everything startup made (modules, config, the admin app) lives until exit:
            # out of the cyclic collector's generations, so a full collection under
            # load scans only what requests made (measured: bench/README.md, HTTP/2)
            gc.freeze()
            # and a young generation ten times CPython's 700 objects: most of a request's
            # objects (an HTTP/2 stream's task, scopes, frames) die before it is collected
            gc.set_threshold(7000, 10, 10)
            pool = gateway.workers
            if pool is not None:
                pids = ", ".join(str(w.pid) for w in pool.workers)
                click.echo(f"{pool.count} worker processes serving the listeners (pids {pids})")
            for name, handle in gateway.control.listeners.items():
                click.echo(f"listener {name}: {handle.config.protocol}://{handle.bound}")
            if gateway.admin_address is not None:
                click.echo(f"admin API: http://{gateway.admin_address}/")
            async for _ in signals:
                click.echo(
                    f"draining for up to {DRAIN_GRACE:.0f} s (a second signal stops at once)"
                )
                await gateway.control.drain(grace=DRAIN_GRACE)
                async with trio.open_nursery() as waiting:

                    async def second_signal() -> None:
                        async for _ in signals:
                            waiting.cancel_scope.cancel()

                    waiting.start_soon(second_signal)
                    with trio.move_on_after(DRAIN_GRACE):
                        await gateway.control.wait_listeners_stopped()
                    waiting.cancel_scope.cancel()
                nursery.cancel_scope.cancel()
                break


@click.group()
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int) -> None:
    """triogate: a resilient HTTP/TCP gateway on Trio."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@main.command()
@click.argument("config_file", type=click.Path(dir_okay=False, path_type=Path))
def validate(config_file: Path) -> None:
    """Check CONFIG_FILE without starting anything."""
    try:
        config = load_config(config_file)
    except ConfigError as e:
        _fail_config(e, str(config_file))
    counts = f"{len(config.listeners)} listener(s), {len(config.clusters)} cluster(s)"
    click.echo(f"{config_file}: ok ({counts})")


@main.command()
@click.argument("config_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--state-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where runtime changes persist (default: CONFIG_FILE.state.json).",
)
@click.option("--no-state", is_flag=True, help="Ignore and do not write the state file.")
@click.option(
    "--workers",
    default="1",
    show_default=True,
    metavar="N|auto",
    help="Worker processes serving the listeners (auto: one per core); "
    "1 serves them in this process.",
)
@click.pass_context
def run(
    ctx: click.Context, config_file: Path, state_file: Path | None, no_state: bool, workers: str
) -> None:
    """Serve the listeners of CONFIG_FILE until SIGTERM/SIGINT (then drain)."""
    try:
        count = resolve_workers(workers)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--workers") from None
    try:
        config = load_config(config_file)
    except ConfigError as e:
        _fail_config(e, str(config_file), _check_with_validate(config_file))
    state_path: Path | None = None
    fleet = config.config_store.type == "etcd"
    if not no_state:
        state_path = state_file or (
            Path(config.admin.state_file)
            if config.admin.state_file
            else default_state_path(config_file)
        )
        try:
            check_state_path(state_path)
            # in a fleet the state file is the cache of etcd's config, read only when
            # etcd cannot be reached
            saved = None if fleet else load_state(state_path)
        except ConfigError as e:
            _fail_config(
                e,
                str(state_path),
                "the state file holds runtime changes: fix it, move it away, "
                "or run with --no-state",
            )
        except StateFileError as e:
            click.echo(f"triogate: {e}", err=True)
            sys.exit(1)
        if saved is not None:
            click.echo(f"loaded runtime state version {saved.version} from {state_path}")
            config = saved
        elif not fleet:
            click.echo(f"loaded {config_file} (no runtime state at {state_path})")
    verbosity = ctx.find_root().params.get("verbose", 0)
    serve = partial(_serve, workers=count, verbosity=verbosity)
    if fleet:
        _run_trio(_serve_fleet, serve, config, state_path, str(config_file))
    else:
        _run_trio(serve, config, state_path)


async def _serve_fleet(
    serve: Callable[..., Awaitable[None]], config: Config, cache: Path | None, source: str
) -> None:
    """Serve the fleet's config from etcd (seeded from ``config`` if it has none)."""
    try:
        opened = await open_etcd_store(config, cache, source)
    except StoreUnavailable as e:
        raise StoreUnavailable(
            f"{e}: start etcd, or correct config_store.endpoints in {source}, and run again "
            "(a node that has reached etcd once keeps a cache to start from without it)"
        ) from None
    click.echo(opened.message)
    try:
        await serve(opened.config, cache, store=opened.store)
    finally:
        with trio.CancelScope(shield=True):
            await opened.store.client.aclose()


def _run_trio(fn: Callable[..., Awaitable[None]], *args: object) -> None:
    """``trio.run``, with a failure to start reported in one line, exit status 1."""
    try:
        trio.run(fn, *args)
    except (Exception, BaseExceptionGroup) as e:
        cause = root_cause(e)
        if isinstance(cause, click.ClickException | KeyboardInterrupt):
            raise cause from None
        log.debug("gateway stopped", exc_info=e)
        click.echo(f"triogate: {cause}", err=True)
        sys.exit(1)


@main.command()
@click.option("--port", default=8080, show_default=True, help="Port of the web listener.")
@click.option("--tls-port", default=8443, show_default=True, help="Port of the TLS listener edge.")
@click.option("--tcp-port", default=15432, show_default=True, help="Port of the tcp listener db.")
@click.option("--admin-port", default=9901, show_default=True, help="Port of the admin API.")
@click.option("--toxiproxy-port", default=8474, show_default=True, help="Port of Toxiproxy's API.")
@click.option(
    "--tour",
    is_flag=True,
    help="Run the banner's commands, say what each changed, and stop (under a minute).",
)
@click.option("--no-traffic", is_flag=True, help="No background requests to the web listener.")
def demo(
    port: int,
    tls_port: int,
    tcp_port: int,
    admin_port: int,
    toxiproxy_port: int,
    tour: bool,
    no_traffic: bool,
) -> None:
    """Start a small world that shows each use, and print commands to try.

    Five built-in upstreams behind a gateway: a canary route with a split, a rollout to
    start and a fault to switch on (listener web), TLS from a CA the demo writes (edge),
    a tcp proxy with a toxic (db), the admin API and its dashboard, Toxiproxy's API.
    Port 0: any free port (the banner prints the real ones).
    """
    ports = DemoPorts(
        web=port, edge=tls_port, db=tcp_port, admin=admin_port, toxiproxy=toxiproxy_port
    )
    _run_trio(partial(run_demo, ports, tour=tour, traffic=not no_traffic))


@main.command(context_settings={"ignore_unknown_options": False})
@click.option("--host", "-host", default="localhost", show_default=True, help="API host.")
@click.option("--port", "-port", default=8474, show_default=True, help="API port (0: any).")
@click.option(
    "--config",
    "-config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A JSON array of proxies (/populate's body, toxics allowed) made at start.",
)
@click.option(
    "--proxy-metrics", "-proxy-metrics", is_flag=True, help="Serve /metrics (byte counters)."
)
@click.option("--runtime-metrics", "-runtime-metrics", is_flag=True, hidden=True)
@click.option("--seed", "-seed", type=int, default=None, hidden=True)
@click.option("--version", "-version", "show_version", is_flag=True, help="Print the version.")
def toxiproxy(
    host: str,
    port: int,
    config_file: Path | None,
    proxy_metrics: bool,
    runtime_metrics: bool,
    seed: int | None,
    show_version: bool,
) -> None:
    """A drop-in toxiproxy-server: Toxiproxy's REST API over triogate's tcp listeners."""
    from triogate.toxiproxy import VERSION, serve_toxiproxy_server

    if show_version:
        click.echo(f"toxiproxy-server version {VERSION}")
        return
    if host == "localhost":
        host = "127.0.0.1"  # as Go resolves it: IPv4 first
    try:
        address = Address.parse(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--host/--port") from None
    _run_trio(serve_toxiproxy_server, address, config_file, proxy_metrics or runtime_metrics)


main.add_command(ctl)

if __name__ == "__main__":
    main()
