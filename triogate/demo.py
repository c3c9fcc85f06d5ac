"""``triogate demo``: a small world that shows each use, and its built-in upstreams.

The world (``serve_demo``): five built-in upstreams behind a gateway with an HTTP
listener ``web`` (a canary route ``shop`` split between clusters ``v1`` and ``v2``, a
fault ``v2-errors`` on ``v2`` that is off until its ``percent`` is raised, and ``/api``
to cluster ``api``: two endpoints, retries, outlier detection), a TLS listener ``edge``
(a certificate from a ``trustme`` CA the demo writes, for ``localhost``), a ``tcp``
listener ``db`` with a latency toxic, the admin API with its dashboard, and Toxiproxy's
API. A gentle stream of requests keeps the dashboard moving and feeds a rollout's
judgements. The banner prints the dashboard's URL and a handful of commands, each with
the real ports; ``--tour`` runs them itself (``triogate.tour``).

The upstreams are small HTTP/1.1 servers that say who answered; the tests use them as
real upstreams too. Paths:

- ``/...``              200, JSON: upstream name, method, path, request headers and
                        the request body's length (the body is read, never kept)
- ``.../status/NNN``    that status
- ``.../delay/MS``      200 after MS milliseconds
- ``.../bytes/N``       N bytes of body, streamed in 64 KiB pieces (chunked)
- ``.../echo`` (POST)   the body back (chunked)

Any path with ``close=1`` in its query gets ``Connection: close``. Each response names
the upstream (``x-upstream``) and the connection that served it
(``x-upstream-connection``).
"""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any, Final

import attrs
import click
import h11
import httpx
import trio
import trustme
import yaml

from admin import admin_service
from gateway import Gateway, run_gateway
from gateway.config import Address, config_from_text


class _Conn:
    _ids = 0

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.SERVER)
        _Conn._ids += 1
        #: which connection served a request, so tests can see reuse
        self.id = _Conn._ids

    async def send(self, event: Any) -> None:
        data = self.h11.send(event)
        if data:
            await self.stream.send_all(data)

    async def next_event(self) -> Any:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.h11.receive_data(await self.stream.receive_some(65536))


async def _respond(conn: _Conn, name: str, request: h11.Request) -> None:
    path = request.target.decode("latin-1")
    headers = [(b"x-upstream", name.encode()), (b"x-upstream-connection", b"%d" % conn.id)]
    if "close=1" in path:
        headers.append((b"connection", b"close"))
    body_size = 0
    body_chunks: list[bytes] = []
    echo = path.split("?")[0].endswith("/echo")
    while True:
        event = await conn.next_event()
        if isinstance(event, h11.EndOfMessage):
            break
        if isinstance(event, h11.Data):
            body_size += len(event.data)
            if echo:
                body_chunks.append(event.data)
    # the last two path segments pick a behaviour, so any route prefix can come before
    segments = path.split("?")[0].strip("/").split("/")
    verb, arg = (segments[-2], segments[-1]) if len(segments) >= 2 else ("", "")
    if verb == "status" and arg.isdigit():
        status = int(arg)
        body = f"{status} from {name}\n".encode()
        await conn.send(
            h11.Response(
                status_code=status, headers=[*headers, (b"content-length", b"%d" % len(body))]
            )
        )
        await conn.send(h11.Data(data=body))
    elif verb == "delay" and arg.isdigit():
        await trio.sleep(int(arg) / 1000)
        body = f"slept {arg} ms in {name}\n".encode()
        await conn.send(
            h11.Response(
                status_code=200, headers=[*headers, (b"content-length", b"%d" % len(body))]
            )
        )
        await conn.send(h11.Data(data=body))
    elif verb == "bytes" and arg.isdigit():
        remaining = int(arg)
        await conn.send(
            h11.Response(status_code=200, headers=[*headers, (b"transfer-encoding", b"chunked")])
        )
        piece = b"x" * 65536
        while remaining > 0:
            n = min(remaining, len(piece))
            await conn.send(h11.Data(data=piece[:n]))
            remaining -= n
    elif echo:
        await conn.send(
            h11.Response(status_code=200, headers=[*headers, (b"transfer-encoding", b"chunked")])
        )
        for piece in body_chunks:
            await conn.send(h11.Data(data=piece))
    else:
        info = {
            "upstream": name,
            "connection": conn.id,
            "method": request.method.decode(),
            "path": path,
            "body_bytes": body_size,
            "headers": {k.decode(): v.decode("latin-1") for k, v in request.headers},
        }
        body = (json.dumps(info, indent=1) + "\n").encode()
        await conn.send(
            h11.Response(
                status_code=200,
                headers=[
                    *headers,
                    (b"content-type", b"application/json"),
                    (b"content-length", b"%d" % len(body)),
                ],
            )
        )
        await conn.send(h11.Data(data=body))
    await conn.send(h11.EndOfMessage())


async def _serve_connection(stream: trio.SocketStream, *, name: str) -> None:
    conn = _Conn(stream)
    try:
        while True:
            event = await conn.next_event()
            if isinstance(event, h11.ConnectionClosed):
                return
            if not isinstance(event, h11.Request):
                return
            await _respond(conn, name, event)
            if conn.h11.our_state is h11.MUST_CLOSE:
                return
            conn.h11.start_next_cycle()
    except (h11.ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
        return
    finally:
        await stream.aclose()


LOOPBACK_ANY_PORT = Address("127.0.0.1", 0)


async def serve_demo_upstream(
    name: str,
    address: Address = LOOPBACK_ANY_PORT,
    *,
    task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve a demo upstream until cancelled; reports the bound address."""
    listeners = await trio.open_tcp_listeners(address.port, host=address.host)
    host, port = listeners[0].socket.getsockname()[:2]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, partial(_serve_connection, name=name), listeners)
        task_status.started(Address(host, port))


# -- the world ----------------------------------------------------------------------------

#: the built-in upstreams, by name (clusters: api-1 and api-2 in ``api``, v1 and v2 in
#: their own, db-1 in ``db-upstream``)
UPSTREAMS: Final = ("api-1", "api-2", "v1", "v2", "db-1")

#: the toxic the ``db`` listener starts with (Toxiproxy's default name for it)
DB_TOXIC: Final = "latency_downstream"
#: its latency, ms
DB_LATENCY_MS: Final = 200

DEMO_CONFIG: Final = """\
# Written by `triogate demo`, which serves it (a copy: `triogate validate` takes it).
admin:
  address: 127.0.0.1:{admin}
  toxiproxy: {{address: 127.0.0.1:{toxiproxy}}}   # Toxiproxy's REST API beside the native one
listeners:
  - name: web                            # plain HTTP, as a sidecar's listener
    address: 127.0.0.1:{web}
    routes:
      - name: api
        match: {{prefix: /api}}
        cluster: api
        retry: {{attempts: 2, retry_on: [connect-failure, reset]}}
      - name: shop                       # the canary route: a split you can move
        match: {{prefix: /}}
        split: [{{cluster: v1, weight: 90}}, {{cluster: v2, weight: 10}}]
  - name: edge                           # TLS, from the demo's own CA (ca.pem beside this)
    address: 127.0.0.1:{edge}
    tls:
      certificates: [{{cert: "{directory}/edge.pem", key: "{directory}/edge.key"}}]
    routes:
      - name: api
        match: {{prefix: /}}
        cluster: api
        retry: {{attempts: 2, retry_on: [connect-failure, reset]}}
  - name: db                             # a TCP proxy (its upstream speaks HTTP: try curl)
    address: 127.0.0.1:{db}
    protocol: tcp
    cluster: db-upstream
    toxics:
      - {{name: {toxic}, type: latency, stream: downstream, attributes: {{latency: {latency}}}}}
clusters:
  - name: api
    endpoints: [{{address: "{api-1}"}}, {{address: "{api-2}"}}]
    outlier_detection:                   # an endpoint that fails 3 times in a row is ejected
      consecutive_gateway_failure: 3
      interval: 1
      max_ejection_percent: 50
  - name: v1
    endpoints: [{{address: "{v1}"}}]
  - name: v2
    endpoints: [{{address: "{v2}"}}]
  - name: db-upstream
    endpoints: [{{address: "{db-1}"}}]
faults:
  - name: v2-errors                      # off until its percent is raised
    cluster: v2
    abort: {{status: 503}}
    percent: 0
"""

#: the rollout the banner starts (``triogate ctl rollout start --file``): short steps, so
#: that it finishes while one watches
ROLLOUT_SPEC: Final = {
    "name": "canary",
    "listener": "web",
    "route": "shop",
    "stable": "v1",
    "canary": "v2",
    "steps": [25, 50, 100],
    "dwell": 3,
    "interval": 1,
    "gates": {"max_error_rate": 0.05, "min_requests": 5},
}


@attrs.frozen
class DemoPorts:
    """The ports the demo asks for; 0: any free one (the banner prints the real ones)."""

    web: int = 8080
    edge: int = 8443
    db: int = 15432
    admin: int = 9901
    toxiproxy: int = 8474


@attrs.frozen
class Upstream:
    """A running built-in upstream; cancelling ``scope`` kills it (its socket closes)."""

    name: str
    address: Address
    scope: trio.CancelScope


@attrs.frozen
class DemoWorld:
    """What the demo runs, as its banner and its tour see it."""

    gateway: Gateway
    #: where ``ca.pem``, the edge's certificate, ``demo.yaml`` and ``rollout.yaml`` are
    directory: Path
    upstreams: dict[str, Upstream]
    toxiproxy: Address
    #: how this program is invoked from a shell (``triogate``, ``.venv/bin/triogate``)
    command: str

    def listener(self, name: str) -> Address:
        bound = self.gateway.control.listeners[name].bound
        assert bound is not None, f"listener {name} is not bound"
        return bound

    @property
    def admin(self) -> Address:
        assert self.gateway.admin_address is not None
        return self.gateway.admin_address

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ctl(self) -> str:
        """``triogate ctl``, with ``--admin`` when the admin API is not at the default."""
        admin = f"http://{self.admin}"
        return f"{self.command} ctl" + ("" if admin == DEFAULT_ADMIN else f" --admin {admin}")


DEFAULT_ADMIN: Final = "http://127.0.0.1:9901"


def self_command() -> str:
    """How to run this program again from the shell it was started in."""
    script = Path(sys.argv[0])
    if script.name == "triogate":
        on_path = shutil.which("triogate")
        if on_path is not None and Path(on_path).resolve() == script.resolve():
            return "triogate"
        return shlex.quote(sys.argv[0])
    return f"{shlex.quote(sys.executable)} -m triogate.cli"


#: the ``triogate demo`` option that sets each port
PORT_OPTIONS: Final = {
    "web": "--port",
    "edge": "--tls-port",
    "db": "--tcp-port",
    "admin": "--admin-port",
    "toxiproxy": "--toxiproxy-port",
}


def taken_ports(ports: DemoPorts) -> list[str]:
    """The ports asked for that something else holds now, each with its option (a
    friendlier refusal than the bind error the gateway would give a moment later)."""
    taken = []
    for field in attrs.fields(DemoPorts):
        port = getattr(ports, field.name)
        if port == 0:
            continue
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                taken.append(f"{port} ({PORT_OPTIONS[field.name]})")
    return taken


def free_port() -> int:
    """A port free on loopback now (for the Toxiproxy API, whose bound port is not
    published: the port is picked here and passed on)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def write_certificates(directory: Path) -> None:
    """A ``trustme`` CA (``ca.pem``) and the edge's certificate for localhost from it."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    with open(directory / "edge.pem", "wb") as chain:
        for pem in cert.cert_chain_pems:
            chain.write(pem.bytes())
    cert.private_key_pem.write_to_path(str(directory / "edge.key"))


async def _serve_killable(name: str, *, task_status: trio.TaskStatus[Upstream]) -> None:
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            address = await nursery.start(serve_demo_upstream, name)
            task_status.started(Upstream(name, address, scope))


async def serve_demo(
    ports: DemoPorts,
    directory: Path,
    *,
    traffic: bool = True,
    task_status: trio.TaskStatus[DemoWorld] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the demo's world until cancelled; reports it once everything accepts."""
    write_certificates(directory)
    toxiproxy_port = ports.toxiproxy or free_port()
    async with trio.open_nursery() as nursery:
        upstreams: dict[str, Upstream] = {}
        for name in UPSTREAMS:
            upstreams[name] = await nursery.start(_serve_killable, name)
        text = DEMO_CONFIG.format_map(
            {
                "admin": ports.admin,
                "toxiproxy": toxiproxy_port,
                "web": ports.web,
                "edge": ports.edge,
                "db": ports.db,
                "directory": directory,
                "toxic": DB_TOXIC,
                "latency": DB_LATENCY_MS,
                **{name: up.address for name, up in upstreams.items()},
            }
        )
        (directory / "demo.yaml").write_text(text)
        (directory / "rollout.yaml").write_text(yaml.safe_dump(ROLLOUT_SPEC, sort_keys=False))
        config = config_from_text(text, source="demo")
        gateway: Gateway = await nursery.start(
            partial(run_gateway, config, state_path=None, services=[admin_service(None)])
        )
        world = DemoWorld(
            gateway,
            directory,
            upstreams,
            Address("127.0.0.1", toxiproxy_port),
            self_command(),
        )
        if traffic:
            nursery.start_soon(send_traffic, world)
        task_status.started(world)


#: seconds between the background requests (to each of ``web``'s two routes)
TRAFFIC_INTERVAL: Final = 0.1


async def send_traffic(world: DemoWorld) -> None:
    """A gentle stream of requests to ``web`` (the dashboard's graphs; a rollout's
    judgements), until cancelled; failures are what the demo shows, never an error."""
    base = f"http://{world.listener('web')}"
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        while True:
            for path in ("/", "/api/orders"):
                try:
                    await client.get(path)
                except httpx.HTTPError:
                    pass
            await trio.sleep(TRAFFIC_INTERVAL)


def banner(world: DemoWorld) -> str:
    """The dashboard first, then a handful of commands, each working as printed."""
    web, edge, db = (world.listener(name) for name in ("web", "edge", "db"))
    admin, ctl, directory = world.admin, world.ctl, shlex.quote(str(world.directory))
    json_header = "-H 'content-type: application/json'"
    commands = [
        (f"curl -s http://{web}/", "web's canary route shop: v1 90%, v2 10%"),
        (f"{ctl} split web shop v1=50 v2=50", "move the split"),
        (
            f"{ctl} rollout start --file {directory}/rollout.yaml",
            "v2 to 100% in steps, judged by its errors",
        ),
        (f"{ctl} rollout get canary", "where it is"),
        (
            f"curl -s -X PATCH {json_header} -d '{{\"percent\": 50}}' "
            f"http://{admin}/faults/v2-errors",
            "switch the fault on: half of v2's requests get 503",
        ),
        (
            f"curl -s --cacert {directory}/ca.pem https://localhost:{edge.port}/api",
            "edge: TLS from the demo's CA, api-1 and api-2 in turn",
        ),
        (
            f"curl -s -o /dev/null -w '%{{time_total}} s\\n' http://{db}/",
            f"the tcp proxy db, with a {DB_LATENCY_MS} ms latency toxic",
        ),
        (
            f"curl -s -X DELETE http://{world.toxiproxy}/proxies/db/toxics/{DB_TOXIC}",
            "Toxiproxy's API: the toxic goes",
        ),
        (f"{ctl} clusters", "endpoints, health, requests in flight"),
    ]
    lines = [
        f"triogate demo: {len(world.upstreams)} built-in upstreams behind a gateway",
        f"  dashboard  http://{admin}/dashboard",
        f"  config     {world.directory}/demo.yaml",
        "",
        "try:",
        *(line for command, comment in commands for line in (f"  # {comment}", f"  {command}")),
        "",
        f"Ctrl-C stops it. `{world.command} demo --tour` runs these itself and says what changed.",
    ]
    return "\n".join(lines)


async def run_demo(ports: DemoPorts, *, tour: bool = False, traffic: bool = True) -> None:
    """``triogate demo``: the world and its banner until SIGINT/SIGTERM; with ``tour``,
    the tour instead, then stop."""
    from triogate.tour import run_tour

    taken = taken_ports(ports)
    if taken:
        raise click.ClickException(
            f"port {', '.join(taken)} taken: pass another port, or 0 for any free one"
        )
    with (
        tempfile.TemporaryDirectory(prefix="triogate-demo-") as tmp,
        trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals,
    ):
        async with trio.open_nursery() as nursery:
            world: DemoWorld = await nursery.start(
                partial(serve_demo, ports, Path(tmp), traffic=traffic)
            )
            if tour:
                nursery.start_soon(_stop_on_signal, signals, nursery.cancel_scope)
                await run_tour(world, say=click.echo)
            else:
                click.echo(banner(world))
                await _stop_on_signal(signals, nursery.cancel_scope)
            nursery.cancel_scope.cancel()


async def _stop_on_signal(signals: AsyncIterator[int], scope: trio.CancelScope) -> None:
    async for _ in signals:
        scope.cancel()
        return
