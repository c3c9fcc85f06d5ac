"""The UDP proxy: client sessions over a listener's datagram socket, each bound to an endpoint.

Theory of operation, as Envoy's udp_proxy:

- The listener's socket (``netio.open_listening_sockets``, ``SO_REUSEPORT`` like the TCP listeners,
  so worker processes share the address and the kernel spreads the clients) is read by
  ``UdpProxy.serve``. The datagrams of one client address form a **session**: an
  upstream socket of its own, connected to one endpoint of the listener's ``cluster``
  (or of the cluster its ``split`` gives the client's address), picked by the cluster's
  balancer when the session starts (``ring_hash`` and ``maglev`` hash the client's IP,
  as the TCP proxy does). Replies from the endpoint go back to the client from the
  listener's socket.
- A session ends after ``idle_timeout`` seconds with no datagram either way
  (``idle_timeout``), or when its listener socket goes (a rebind, a drain, ``enabled:
  false``). An ICMP error from the endpoint does not end it: it is counted
  (``udp.sess_*_errors``), and the next datagram is sent all the same.
- At most ``max_sessions`` sessions: a datagram of a new client over it is dropped
  (``downstream_sess_overflow``). With no endpoint to pick, it is dropped too
  (``downstream_sess_no_route``, and the cluster's ``upstream_cx_none_healthy``).
- A session keeps its endpoint until it ends (an endpoint that turns unhealthy or is
  ejected gets no new session).

Nothing waits: a datagram the kernel cannot take at once (a full send buffer) is
dropped and counted, as a router would drop it.

Toxics (``latency`` with ``jitter``, ``packet_loss``; ``policies.datagram_toxics``
decides): each session rolls its toxics when it starts and again when the listener's
toxics change (read from the listener's config on every datagram: a tuple identity
test). A dropped datagram is counted; a delayed one waits in its direction's queue,
which keeps the order: it is sent ``delay`` after it was read, and never before the one
read before it. A direction holds at most ``DELAY_QUEUE`` datagrams (Toxiproxy's
channel size); past it a datagram is dropped (``toxics.delay_overflow``).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
from collections import deque
from collections.abc import Callable
from typing import Any, Final

import trio
from trio.lowlevel import wait_readable

from gateway.cluster.snapshot import EndpointRuntime
from gateway.config import Listener, Toxic, WeightedCluster
from gateway.listener.context import TIMER_TICK, ListenerContext
from gateway.observe.stats import ClusterStats, ListenerStats
from policies.balancing import hash_key
from policies.datagram_toxics import (
    NO_TOXICS,
    DatagramToxic,
    SessionToxics,
    decide,
    roll_session,
)
from policies.split import WeightedSplit, key_point

__all__ = ["DELAY_QUEUE", "UdpProxy", "compile_toxics"]

log = logging.getLogger("triogate.udp")

#: the largest datagram read (an IPv4 UDP payload's limit)
MAX_DATAGRAM: Final = 65535
#: datagrams read in one wake-up before the other tasks get a turn
READ_BATCH: Final = 64
#: delayed datagrams one direction of a session holds (Toxiproxy's channel: 1024 chunks)
DELAY_QUEUE: Final = 1024

ClientAddress = Any  # what recvfrom answers: (host, port) or (host, port, flow, scope)


def compile_toxics(toxics: tuple[Toxic, ...]) -> tuple[DatagramToxic, ...]:
    """A udp listener's toxics as the policy takes them (validation admits only these two
    types on a udp listener; any other is skipped)."""
    return tuple(
        DatagramToxic(
            name=t.name,
            type=t.type,
            stream=t.stream,
            toxicity=t.toxicity,
            latency=t.attributes.latency,
            jitter=t.attributes.jitter,
            percent=t.attributes.percent,
            source=t.source,
        )
        for t in toxics
        if t.type == "latency" or t.type == "packet_loss"
    )


def _client_ip(client: ClientAddress) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(str(client[0]).partition("%")[0])


class _Direction:
    """One direction of a session: sends at once, or through its delay queue in order."""

    __slots__ = ("_send", "queue", "ready", "running", "session")

    def __init__(self, session: _Session, send: Callable[[bytes], None]) -> None:
        self.session = session
        self._send = send
        #: (due time, datagram), in the order read
        self.queue: deque[tuple[float, bytes]] = deque()
        #: whether the far side can be sent to (the upstream socket is connected)
        self.ready = False
        #: whether a task drains the queue
        self.running = False

    def push(self, data: bytes, delay: float, stats: ListenerStats) -> None:
        """Send ``data`` now, or after ``delay`` s from now, never before the queue."""
        queue = self.queue
        if delay <= 0.0 and self.ready and not queue:
            self._send(data)
            return
        if len(queue) >= DELAY_QUEUE:
            stats.toxic_delay_overflow += 1
            return
        queue.append((trio.current_time() + delay, data))
        self.wake()

    def wake(self) -> None:
        nursery = self.session.nursery
        if self.queue and self.ready and not self.running and nursery is not None:
            self.running = True
            nursery.start_soon(self._drain)

    async def _drain(self) -> None:
        queue = self.queue
        try:
            while queue:
                due = queue[0][0]
                if due > trio.current_time():
                    await trio.sleep_until(due)
                self._send(queue.popleft()[1])
        finally:
            self.running = False


class _Session:
    """One client address's datagrams, to and from one endpoint."""

    __slots__ = (
        "client",
        "cluster_stats",
        "downstream",
        "endpoint",
        "listener_sock",
        "nursery",
        "proxy",
        "scope",
        "seen",
        "toxics",
        "toxics_version",
        "upstream",
        "upstream_sock",
    )

    def __init__(
        self,
        proxy: UdpProxy,
        listener_sock: socket.socket,
        client: ClientAddress,
        endpoint: EndpointRuntime,
        cluster_stats: ClusterStats,
    ) -> None:
        self.proxy = proxy
        self.listener_sock = listener_sock
        self.client = client
        self.endpoint = endpoint
        self.cluster_stats = cluster_stats
        self.scope = trio.CancelScope()
        self.nursery: trio.Nursery | None = None
        self.upstream_sock: socket.socket | None = None
        #: the clock (the listener's ``now``) at the last datagram either way
        self.seen = proxy.ctx.now
        self.toxics: SessionToxics = NO_TOXICS
        self.toxics_version = -1
        self.upstream = _Direction(self, self._send_upstream)
        self.downstream = _Direction(self, self._send_downstream)

    def chains(self) -> SessionToxics:
        """The session's toxics, rolled again if the listener's changed."""
        proxy = self.proxy
        toxics = proxy.current_toxics()
        if self.toxics_version != proxy.toxics_version:
            self.toxics_version = proxy.toxics_version
            self.toxics = roll_session(toxics, _client_ip(self.client), proxy.rng, self.toxics)
        return self.toxics

    def from_client(self, data: bytes) -> None:
        self.seen = self.proxy.ctx.now
        toxics = self.chains()
        if toxics.upstream:
            self._through(toxics.upstream, self.upstream, data)
        else:
            self.upstream.push(data, 0.0, self.proxy.stats)

    def _through(
        self, chain: tuple[DatagramToxic, ...], direction: _Direction, data: bytes
    ) -> None:
        stats = self.proxy.stats
        delay = decide(chain, self.proxy.rng)
        if delay is None:
            stats.toxic_datagrams_dropped += 1
            return
        if delay > 0.0:
            stats.toxic_datagrams_delayed += 1
        direction.push(data, delay, stats)

    def _send_upstream(self, data: bytes) -> None:
        sock = self.upstream_sock
        assert sock is not None  # the direction is ready only once connected
        cluster_stats = self.cluster_stats
        try:
            sock.send(data)
        except OSError as e:  # a full buffer, or an ICMP error of an earlier datagram
            cluster_stats.udp_sess_tx_errors += 1
            log.debug("udp %s: send to %s: %s", self.proxy.ctx.name, self.endpoint.key, e)
            return
        cluster_stats.udp_sess_tx_datagrams += 1

    def _send_downstream(self, data: bytes) -> None:
        stats = self.proxy.stats
        try:
            self.listener_sock.sendto(data, self.client)
        except OSError as e:
            stats.downstream_sess_tx_errors += 1
            log.debug("udp %s: send to %s: %s", self.proxy.ctx.name, self.client, e)
            return
        stats.downstream_sess_tx_datagrams += 1
        stats.downstream_sess_tx_bytes += len(data)

    async def run(self) -> None:
        """Connect to the endpoint, then carry the replies until the session ends."""
        proxy = self.proxy
        endpoint = self.endpoint
        cluster_stats = self.cluster_stats
        endpoint_stats = cluster_stats.endpoint(endpoint.key)
        endpoint.active += 1
        try:
            with self.scope:
                address = endpoint.pool.address
                try:
                    infos = await trio.socket.getaddrinfo(
                        address.host, address.port, type=socket.SOCK_DGRAM
                    )
                    family, type_, proto, _, sockaddr = infos[0]
                    sock = self.upstream_sock = socket.socket(family, type_, proto)
                    sock.setblocking(False)
                    sock.connect(sockaddr)
                except OSError as e:
                    cluster_stats.upstream_cx_connect_fail += 1
                    endpoint_stats.cx_connect_fail += 1
                    log.info("udp %s: session to %s: %s", proxy.ctx.name, endpoint.key, e)
                    return
                cluster_stats.upstream_cx_total += 1
                endpoint_stats.cx_total += 1
                async with trio.open_nursery() as nursery:
                    self.nursery = nursery
                    self.upstream.ready = self.downstream.ready = True
                    self.upstream.wake()
                    await self._replies(sock)
        finally:
            endpoint.active -= 1
            proxy.closed(self)
            if self.upstream_sock is not None:
                trio.lowlevel.notify_closing(self.upstream_sock)
                self.upstream_sock.close()

    async def _replies(self, sock: socket.socket) -> None:
        proxy = self.proxy
        stats = proxy.stats
        cluster_stats = self.cluster_stats
        while True:
            await wait_readable(sock)
            for _ in range(READ_BATCH):
                try:
                    data = sock.recv(MAX_DATAGRAM)
                except BlockingIOError:
                    break
                except OSError as e:  # ECONNREFUSED: an ICMP port unreachable came back
                    cluster_stats.udp_sess_rx_errors += 1
                    log.debug("udp %s: from %s: %s", proxy.ctx.name, self.endpoint.key, e)
                    continue
                cluster_stats.udp_sess_rx_datagrams += 1
                self.seen = proxy.ctx.now
                toxics = self.chains()
                if toxics.downstream:
                    self._through(toxics.downstream, self.downstream, data)
                else:
                    self.downstream.push(data, 0.0, stats)


class UdpProxy:
    """One udp listener's sessions over its sockets.

    Made by the listener actor, read-only for the rest: the config (``idle_timeout``,
    ``max_sessions``, toxics, the cluster or split) is read from the listener's context
    when used, so the actor's ``Reconfigure`` applies to live sessions.
    """

    def __init__(self, ctx: ListenerContext) -> None:
        self.ctx = ctx
        self.stats = ctx.stats
        self.rng = ctx.rng
        #: by client address, over every socket of the listener
        self.sessions: dict[ClientAddress, _Session] = {}
        #: the listener's toxics as last compiled, and a version that grows when they change
        self.toxics_version = 0
        self._toxics_of: tuple[Toxic, ...] = ()
        self._toxics: tuple[DatagramToxic, ...] = ()
        self._split_of: tuple[WeightedCluster, ...] = ()
        self._split: WeightedSplit | None = None

    def current_toxics(self) -> tuple[DatagramToxic, ...]:
        """The listener's toxics, compiled again when its config has others."""
        toxics = self.ctx.config.toxics
        if toxics is not self._toxics_of:
            if toxics != self._toxics_of:
                self._toxics = compile_toxics(toxics)
                self.toxics_version += 1
            self._toxics_of = toxics
        return self._toxics

    async def serve(self, sock: socket.socket) -> None:
        """Read ``sock`` until cancelled; its sessions end with it."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._expire, sock)
                while True:
                    await wait_readable(sock)
                    for _ in range(READ_BATCH):
                        try:
                            data, client = sock.recvfrom(MAX_DATAGRAM)
                        except BlockingIOError:
                            break
                        except OSError as e:
                            if e.errno == errno.EBADF:
                                raise trio.ClosedResourceError("listener socket closed") from None
                            self.stats.downstream_sess_rx_errors += 1
                            continue
                        self._from_client(sock, client, data, nursery)
        finally:  # (each session's task has ended with the nursery)
            for client in [c for c, s in self.sessions.items() if s.listener_sock is sock]:
                del self.sessions[client]

    def _from_client(
        self,
        sock: socket.socket,
        client: ClientAddress,
        data: bytes,
        nursery: trio.Nursery,
    ) -> None:
        stats = self.stats
        stats.downstream_sess_rx_datagrams += 1
        stats.downstream_sess_rx_bytes += len(data)
        session = self.sessions.get(client)
        if session is None:
            session = self._open(sock, client)
            if session is None:
                return
            self.sessions[client] = session
            stats.downstream_sess_total += 1
            stats.downstream_sess_active += 1
            nursery.start_soon(session.run)
        session.from_client(data)

    def _open(self, sock: socket.socket, client: ClientAddress) -> _Session | None:
        """A session for a new client, or None (counted) when it cannot have one."""
        ctx = self.ctx
        config = ctx.config
        stats = self.stats
        if len(self.sessions) >= config.max_sessions:
            stats.downstream_sess_overflow += 1
            return None
        client_ip = str(client[0]).encode()
        cluster = self._cluster_for(config, client_ip)
        handle = ctx.dataplane.current.clusters.get(cluster)
        cluster_stats = ctx.cluster_stats.get(cluster) or ctx.registry.cluster(cluster)
        endpoint = None
        if handle is not None:
            snapshot = handle.snapshot
            key = hash_key(client_ip) if snapshot.uses_hash else None
            endpoint = snapshot.pick(ctx.now, key)
        if endpoint is None:
            cluster_stats.upstream_cx_none_healthy += 1
            stats.downstream_sess_no_route += 1
            return None
        return _Session(self, sock, client, endpoint, cluster_stats)

    def _cluster_for(self, config: Listener, client_ip: bytes) -> str:
        if config.cluster is not None:
            return config.cluster
        split = config.split
        if split is not self._split_of:
            self._split_of = split
            self._split = WeightedSplit.of((wc.cluster, wc.weight) for wc in split)
        assert self._split is not None  # validation: a udp listener has a cluster or a split
        # sticky: one client address always lands in the same cluster of the split
        return self._split.pick_at(key_point(client_ip))

    def closed(self, session: _Session) -> None:
        """``session`` ended (its task's last act)."""
        if self.sessions.get(session.client) is session:
            del self.sessions[session.client]
        self.stats.downstream_sess_active -= 1

    async def _expire(self, sock: socket.socket) -> None:
        """End the sessions on ``sock`` idle for ``idle_timeout``; runs until cancelled."""
        sessions = self.sessions
        while True:
            idle = self.ctx.config.idle_timeout
            await trio.sleep(max(TIMER_TICK, min(idle / 8, 1.0)))
            now = trio.current_time()
            expired = [
                s for s in sessions.values() if s.listener_sock is sock and now - s.seen >= idle
            ]
            for session in expired:
                del sessions[session.client]  # its client's next datagram starts another
                session.scope.cancel()
                self.stats.idle_timeout += 1
