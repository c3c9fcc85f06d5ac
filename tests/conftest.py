"""Shared fixtures: real upstreams and gateways on loopback, port 0 everywhere."""

from __future__ import annotations

import inspect
import os
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import h11
import httpx
import pytest
import trio
from hypothesis import HealthCheck, settings

from admin import admin_service
from gateway.app import Gateway, run_gateway
from gateway.config import Address, config_from_data
from triogate.demo import serve_demo_upstream

settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

StartUpstream = Callable[[str], Awaitable[Address]]


ClosedAddress = Callable[[], Address]


@pytest.fixture
def closed_address() -> Iterator[ClosedAddress]:
    """Make addresses that refuse connections (upstreams that are down) for this test.

    Each is a loopback port held by a socket that is bound and never listens: a connect
    gets ECONNREFUSED (on Linux), and nothing else can take the port while the test runs,
    as it could take a port that was bound, released and only then put in a config.
    """
    held: list[socket.socket] = []

    def make() -> Address:
        sock = socket.socket()
        held.append(sock)
        sock.bind(("127.0.0.1", 0))
        return Address("127.0.0.1", sock.getsockname()[1])

    yield make
    for sock in held:
        sock.close()


#: seconds between two looks of ``wait_until``
POLL_INTERVAL = 0.01

T = TypeVar("T")


async def wait_until(predicate: Callable[[], T | Awaitable[T]], *, within: float = 5.0) -> T:
    """Poll ``predicate`` until it returns something true; return that.

    For state that tells no one when it changes: another process, a file, a counter the
    data path bumps. Where there is an event to wait on, wait on the event instead.
    ``predicate`` may be a coroutine function (one that makes a request, say). The test
    fails once ``within`` seconds pass without it coming true: the bound is the helper's
    own (not a cancel scope left to each caller) so that no poll can go on unbounded.
    """
    with trio.move_on_after(within):
        while True:
            result = predicate()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result  # type: ignore[return-value]
            await trio.sleep(POLL_INTERVAL)
    name = getattr(predicate, "__qualname__", repr(predicate))
    raise AssertionError(f"{name} did not come true within {within} s")


#: every request on a connection of its own: the kernel spreads new connections over
#: worker processes (``SO_REUSEPORT``)
FRESH = httpx.Limits(max_keepalive_connections=0)


async def fresh_requests(web: Address, count: int, path: str = "/") -> list[httpx.Response]:
    """``count`` GETs of ``path``, ten at a time, each on a fresh connection."""
    answers: list[httpx.Response] = []

    async def one(client: httpx.AsyncClient) -> None:
        answers.append(await client.get(f"http://{web}{path}"))

    async with httpx.AsyncClient(limits=FRESH) as client:
        for _ in range(count // 10):
            async with trio.open_nursery() as nursery:
                for _ in range(10):
                    nursery.start_soon(one, client)
    return answers


async def admin_json(admin: Address, path: str) -> Any:
    """``GET path`` from the admin API at ``admin``, which must answer 200; its JSON.

    The timeout leaves room for a read that waits on a silent worker (5 s) first.
    """
    async with httpx.AsyncClient(timeout=20) as client:
        r = await client.get(f"http://{admin}{path}")
        assert r.status_code == 200, r.text
        return r.json()


async def worker_rows(admin: Address) -> list[dict[str, Any]]:
    """``GET /stats/workers``: each process serving the listeners."""
    rows: list[dict[str, Any]] = await admin_json(admin, "/stats/workers")
    return rows


async def refuses_connections(address: Address) -> bool:
    """Whether a connect to ``address`` is refused now (nothing listens there)."""
    try:
        stream = await trio.open_tcp_stream(address.host, address.port)
    except OSError:
        return True
    await stream.aclose()
    return False


@attrs.define(eq=False)
class GatewayProcess:
    """``triogate run`` as a child process: what it printed so far, and where it listens."""

    process: trio.Process
    #: the lines of its stdout read so far
    lines: list[str] = attrs.Factory(list)
    _partial: bytes = b""

    async def wait_for(self, pattern: str) -> re.Match[str]:
        """The first line printed (so far, or from now on) that ``pattern`` matches."""
        stdout = self.process.stdout
        assert stdout is not None
        with trio.fail_after(20):
            while True:
                for line in self.lines:
                    if found := re.search(pattern, line):
                        return found
                piece = await stdout.receive_some()
                assert piece, f"the gateway exited; it printed {self.lines}"
                *done, self._partial = (self._partial + piece).split(b"\n")
                self.lines += [line.decode() for line in done]

    @property
    def listeners(self) -> dict[str, Address]:
        """Each listener's bound address, as ``triogate run`` printed it once serving."""
        found = (re.fullmatch(r"listener (\S+): \w+://(\S+)", line) for line in self.lines)
        return {m[1]: Address.parse(m[2]) for m in found if m}

    @property
    def admin(self) -> Address:
        [address] = (m[1] for line in self.lines if (m := ADMIN_LINE.fullmatch(line)))
        return Address.parse(address)


ADMIN_LINE = re.compile(r"admin API: http://(\S+)/")


@asynccontextmanager
async def gateway_process(
    config: Path, *, state_file: Path | None = None, workers: int = 1
) -> AsyncIterator[GatewayProcess]:
    """``triogate run CONFIG`` as a real process, once serving; stopped after.

    Its config binds port 0: the ports are read back from what it prints once serving
    (each listener's address, then the admin API's). ``workers`` > 1 runs it with that
    many worker processes.
    """
    state = ["--no-state"] if state_file is None else ["--state-file", str(state_file)]
    process = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-m",
            "triogate.cli",
            "run",
            *state,
            "--workers",
            str(workers),
            str(config),
        ],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        gateway = GatewayProcess(process)
        await gateway.wait_for(ADMIN_LINE.pattern)
        yield gateway
    finally:
        if process.returncode is None:
            process.terminate()
            with trio.move_on_after(15):
                await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


StartGateway = Callable[..., Awaitable[Gateway]]


@attrs.define
class H11Message:
    """A whole request a test upstream received: its head, body and trailers."""

    request: h11.Request
    body: bytes = b""
    trailers: list[tuple[bytes, bytes]] = attrs.Factory(list)


async def serve_h11_messages(
    stream: trio.SocketStream,
    respond: Callable[[H11Message], Awaitable[list[h11.Event]]],
    arrived: Callable[[h11.Request], None] | None = None,
) -> None:
    """Serve one connection of a test upstream: each request, once its whole message is
    in, is answered with the events ``respond`` gives (a response, its data, its end);
    ``arrived`` is told of each request as its head comes. Keep-alive as h11 allows."""
    conn = h11.Connection(h11.SERVER)
    message: H11Message | None = None
    try:
        async with stream:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    conn.receive_data(data)
                elif isinstance(event, h11.Request):
                    message = H11Message(event)
                    if arrived is not None:
                        arrived(event)
                elif isinstance(event, h11.Data):
                    assert message is not None
                    message.body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    assert message is not None
                    message.trailers = list(event.headers)
                    reply = b"".join(conn.send(e) or b"" for e in await respond(message))
                    await stream.send_all(reply)
                    if conn.our_state is h11.MUST_CLOSE:
                        return
                    conn.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    return
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
        pass  # the gateway closed the connection (a route timeout, a test that ended)


def h11_reply(status: int, body: bytes, headers: list[tuple[str, str]]) -> list[h11.Event]:
    """A response with ``body`` (its length given) and ``headers``, as events."""
    fields = [*headers, ("content-length", str(len(body)))]
    return [
        h11.Response(status_code=status, headers=fields),
        h11.Data(data=body),
        h11.EndOfMessage(),
    ]


async def serve_h11(
    stream: trio.SocketStream,
    name: str,
    arrived: Callable[[h11.Request], None],
    status_of: Callable[[h11.Request], Awaitable[int]],
) -> None:
    """Serve one connection of a test upstream named ``name``.

    ``arrived`` is told of each request as its head comes; once its whole message is in,
    it is answered with the status ``status_of`` gives, an ``x-upstream: name`` header
    and the body ``name`` and a newline.
    """

    async def respond(message: H11Message) -> list[h11.Event]:
        status = await status_of(message.request)
        return h11_reply(status, f"{name}\n".encode(), [("x-upstream", name)])

    await serve_h11_messages(stream, respond, arrived)


@attrs.define(eq=False)
class HeldUpstream:
    """An upstream that holds every request until ``release()``, then answers 200.

    A request sent to it stays in flight for exactly as long as the test needs, and
    ``wait_received`` says when it has arrived: no delay for the test's next steps to
    fit into, and no sleep to guess when the request got there.
    """

    name: str
    address: Address
    #: the target of every request that arrived, in order
    received: list[str] = attrs.Factory(list)
    _arrived: trio.Event = attrs.Factory(trio.Event)
    _released: trio.Event = attrs.Factory(trio.Event)

    async def wait_received(self, count: int = 1) -> None:
        """Until ``count`` requests have arrived in all (held, or answered once released)."""
        while len(self.received) < count:
            await self._arrived.wait()

    def release(self) -> None:
        """Answer the requests held, and every later one at once."""
        self._released.set()

    async def serve(self, stream: trio.SocketStream) -> None:
        await serve_h11(stream, self.name, self._arrive, self._answer_when_released)

    def _arrive(self, request: h11.Request) -> None:
        self.received.append(request.target.decode())
        self._arrived.set()
        self._arrived = trio.Event()

    async def _answer_when_released(self, request: h11.Request) -> int:
        await self._released.wait()
        return 200


StartHeldUpstream = Callable[[str], Awaitable[HeldUpstream]]


@pytest.fixture
def start_held_upstream(nursery: trio.Nursery) -> StartHeldUpstream:
    """Start an upstream named ``name`` that holds its requests until released."""

    async def start(name: str) -> HeldUpstream:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        upstream = HeldUpstream(name, Address("127.0.0.1", port))
        nursery.start_soon(trio.serve_listeners, upstream.serve, listeners)
        return upstream

    return start


@pytest.fixture
def start_upstream(nursery: trio.Nursery) -> StartUpstream:
    """Start a demo upstream named ``name``; returns its address."""

    async def start(name: str) -> Address:
        address: Address = await nursery.start(serve_demo_upstream, name)
        return address

    return start


def simple_config(
    clusters: dict[str, list[Address]], routes: list[dict[str, Any]] | None = None, **listener: Any
) -> dict[str, Any]:
    """A one-listener config on port 0 with the given clusters (plain data, for editing)."""
    first = next(iter(clusters))
    return {
        "admin": {"address": "127.0.0.1:0"},
        "listeners": [
            {
                "name": "web",
                "address": "127.0.0.1:0",
                "routes": routes or [{"match": {"prefix": "/"}, "cluster": first}],
                **listener,
            }
        ],
        "clusters": [
            {"name": name, "endpoints": [{"address": str(a)} for a in addrs]}
            for name, addrs in clusters.items()
        ],
    }


@pytest.fixture
def start_gateway(nursery: trio.Nursery) -> StartGateway:
    """Start a gateway for a config given as plain data; returns its handle.

    Its stats windows move only when the test calls ``gateway.stats.tick(now)``: the
    ticker is turned off before any request (its tick at startup saw only zeros), so a
    recent figure (success rate, recent quantiles, series) never depends on where a
    once-a-second tick fell among the test's requests.
    """

    async def start(
        data: dict[str, Any], *, admin: bool = False, api_key: str | None = None, **kwargs: Any
    ) -> Gateway:
        config = config_from_data(data)
        services = [admin_service(api_key)] if admin else []
        gateway: Gateway = await nursery.start(
            lambda task_status: run_gateway(
                config, services=services, task_status=task_status, **kwargs
            )
        )
        gateway.stats.ticking = False
        return gateway

    return start


@attrs.define(eq=False)
class CheckedUpstream:
    """An upstream for health check tests: it can stop (its listener and connections
    close), start again on the same port, and fail its health checks while it serves.

    It answers ``/healthz`` with 200, or 503 while ``sick``; every other request with
    200 and its name, or 503 while ``failing``, after ``delay`` seconds. ``received``
    holds the targets of the other requests only.
    """

    name: str
    #: port 0 until the first start, then the port it keeps
    address: Address = attrs.Factory(lambda: Address("127.0.0.1", 0))
    sick: bool = False
    failing: bool = False
    #: seconds each request other than a health check waits before its answer
    delay: float = 0.0
    received: list[str] = attrs.Factory(list)
    #: the Host header of each health check
    checks: list[str] = attrs.Factory(list)
    _scope: trio.CancelScope | None = None

    async def start(self, nursery: trio.Nursery) -> None:
        """Listen (on the port it had, after the first start) and serve until ``stop``."""
        listeners = await trio.open_tcp_listeners(self.address.port, host="127.0.0.1")
        self.address = Address("127.0.0.1", listeners[0].socket.getsockname()[1])
        self._scope = scope = trio.CancelScope()

        async def serve() -> None:
            with scope:
                await trio.serve_listeners(self._serve, listeners)

        nursery.start_soon(serve)

    def stop(self) -> None:
        """Close the listener and every connection now."""
        assert self._scope is not None
        self._scope.cancel()

    async def _serve(self, stream: trio.SocketStream) -> None:
        await serve_h11(stream, self.name, self._arrive, self._status)

    def _arrive(self, request: h11.Request) -> None:
        target = request.target.decode()
        if target == "/healthz":
            self.checks.append(dict(request.headers).get(b"host", b"").decode())
        else:
            self.received.append(target)

    async def _status(self, request: h11.Request) -> int:
        if request.target == b"/healthz":
            return 503 if self.sick else 200
        if self.delay:
            await trio.sleep(self.delay)
        return 503 if self.failing else 200


StartCheckedUpstream = Callable[[str], Awaitable[CheckedUpstream]]


@pytest.fixture
def start_checked_upstream(nursery: trio.Nursery) -> StartCheckedUpstream:
    """Start a ``CheckedUpstream`` named ``name`` (``upstream.start(nursery)`` restarts it)."""

    async def start(name: str) -> CheckedUpstream:
        upstream = CheckedUpstream(name)
        await upstream.start(nursery)
        return upstream

    return start


#: the program of ``UpstreamProcess``
UPSTREAM_PROGRAM = Path(__file__).with_name("upstream_process.py")
_LISTENING_LINE = re.compile(r"upstream \S+ listening on (\S+)")


@attrs.define(eq=False)
class UpstreamProcess:
    """``tests/upstream_process.py`` as a child process: an upstream a test can SIGKILL
    and start again on the same port (see that file for what it answers).

    ``options`` are its command-line options (``--delay 0.01``); ``address`` has port 0
    until the first start, then keeps the port that start was given.
    """

    name: str
    options: tuple[str, ...] = ()
    address: Address = attrs.Factory(lambda: Address("127.0.0.1", 0))
    process: trio.Process | None = None

    async def start(self, *options: str) -> None:
        """Start it (on the port it had, after the first start); return once it listens.

        ``options`` are added to the ones it was made with, for this start only.
        """
        if self.process is not None:
            assert self.process.returncode is not None, "still running"
            await _close_stdout(self.process)  # the dead one's pipe
        argv = [sys.executable, str(UPSTREAM_PROGRAM), "--name", self.name]
        argv += ["--port", str(self.address.port), *self.options, *options]
        self.process = process = await trio.lowlevel.open_process(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
        )
        assert process.stdout is not None
        printed = b""
        with trio.fail_after(20):
            while b"\n" not in printed:
                piece = await process.stdout.receive_some()
                assert piece, f"upstream {self.name} exited: {printed!r}"
                printed += piece
        found = _LISTENING_LINE.match(printed.decode())
        assert found, printed
        self.address = Address.parse(found[1])

    def kill(self) -> None:
        """SIGKILL it, now (no checkpoint: a test may read the gateway's state just before)."""
        assert self.process is not None and self.process.returncode is None
        self.process.kill()

    async def wait_dead(self) -> None:
        """Until the killed process is reaped (its port then refuses connections)."""
        assert self.process is not None
        with trio.fail_after(10):
            await self.process.wait()

    async def state(self, **changes: float | int | bool) -> dict[str, Any]:
        """Its counts and settings (``GET /_upstream``), after ``changes`` to its settings."""
        params = {k: int(v) if isinstance(v, bool) else v for k, v in changes.items()}
        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.get(f"http://{self.address}/_upstream", params=params)
        assert r.status_code == 200, r.text
        found: dict[str, Any] = r.json()
        return found

    async def aclose(self) -> None:
        """SIGKILL it if it runs, and reap it."""
        process = self.process
        if process is not None:
            if process.returncode is None:
                process.kill()
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                await process.wait()
                await _close_stdout(process)


async def _close_stdout(process: trio.Process) -> None:
    if process.stdout is not None:
        await process.stdout.aclose()


StartUpstreamProcess = Callable[..., Awaitable[UpstreamProcess]]


@pytest.fixture
async def start_upstream_process() -> AsyncIterator[StartUpstreamProcess]:
    """Start an ``UpstreamProcess`` named ``name`` with ``options``; each is killed after."""
    started: list[UpstreamProcess] = []

    async def start(name: str, *options: str) -> UpstreamProcess:
        upstream = UpstreamProcess(name, options)
        started.append(upstream)
        await upstream.start()
        return upstream

    yield start
    for upstream in started:
        await upstream.aclose()


if TYPE_CHECKING:
    from tests.gateway.tls_support import Pki


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """A trustme CA whose files go under the test's ``tmp_path``."""
    from tests.gateway.tls_support import Pki  # (it imports this module)

    return Pki(tmp_path)
