"""DNS discovery: a hostname re-resolved on an interval, every A/AAAA record an endpoint.

Theory of operation: ``run_dns_source`` resolves, reports, and sleeps until the next
interval, forever. A resolution is bounded by ``discovery.timeout`` (a cancel scope
here, at the call site). An answer with addresses becomes ``EndpointsDiscovered``
(sorted, so the same records in another order are the same set); a failure or an empty
answer becomes ``DiscoveryFailed`` and the cluster keeps its last good set. Envoy's
strict DNS clusters drop every host on an empty answer; keeping them is what its users
ask for, and what a registry would do for a partition.

Two resolvers, both of the ``Resolver`` shape (injectable, e.g. in tests):

- ``resolve_system``: the platform's ``getaddrinfo`` (``/etc/hosts``, ``resolv.conf``),
  in trio's thread pool;
- ``DnsClient(server)``: asks one DNS server directly, like Envoy's ``dns_resolvers``:
  A and AAAA questions at once over UDP, resent every second until the timeout, and
  over TCP when the reply is truncated. A reply must answer the question sent (ID and
  question checked, ``dnswire``); anything else on the socket is ignored.

For ``ip_family: all`` a resolution fails if either question fails (SERVFAIL, refused,
no reply): half an answer would remove the other family's endpoints. A name with
records of one family only answers the other with no records, which is not a failure.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import socket
import struct
from collections.abc import Awaitable, Callable, Sequence

import attrs
import trio

from gateway.config import Address, Discovery, Endpoint
from gateway.config.model import IpFamily
from gateway.discovery.dnswire import (
    AAAA,
    NOERROR,
    NXDOMAIN,
    A,
    Answer,
    DnsFormatError,
    decode_response,
)
from gateway.discovery.dnswire import encode_query as _encode_query
from gateway.discovery.errors import ResolutionFailed
from gateway.discovery.reports import (
    DiscoveryFailed,
    DiscoveryReport,
    EndpointsDiscovered,
    ReportFn,
)

log = logging.getLogger("triogate.discovery")

#: resolves a name to IP address strings; raises ``ResolutionFailed`` (or ``OSError``)
Resolver = Callable[[str, IpFamily], Awaitable[Sequence[str]]]

#: seconds between resends of an unanswered UDP question
RETRANSMIT = 1.0
_QTYPES = {"all": (A, AAAA), "v4": (A,), "v6": (AAAA,)}
_FAMILIES = {"all": socket.AF_UNSPEC, "v4": socket.AF_INET, "v6": socket.AF_INET6}


async def resolve_system(name: str, family: IpFamily) -> list[str]:
    """The addresses ``getaddrinfo`` gives for ``name``."""
    try:
        infos = await trio.socket.getaddrinfo(
            name, None, family=_FAMILIES[family], type=socket.SOCK_STREAM
        )
    except socket.gaierror as e:
        raise ResolutionFailed(f"{name}: {e.strerror or e}") from None
    # a link-local address with a zone cannot be written as an endpoint address
    found = (str(info[4][0]) for info in infos)
    return list(dict.fromkeys(a for a in found if "%" not in a))


@attrs.frozen
class DnsClient:
    """A stub resolver asking one server (``Resolver`` shape: ``await client(name, family)``)."""

    server: Address

    async def __call__(self, name: str, family: IpFamily) -> list[str]:
        answers: dict[int, Answer] = {}

        async def ask(qtype: int) -> None:
            answers[qtype] = await self.query(name, qtype)

        async with trio.open_nursery() as nursery:
            for qtype in _QTYPES[family]:
                nursery.start_soon(ask, qtype)
        addresses: list[str] = []
        for qtype in _QTYPES[family]:
            answer = answers[qtype]
            if answer.rcode == NXDOMAIN:
                raise ResolutionFailed(f"{name}: NXDOMAIN (no such name)")
            if answer.rcode != NOERROR:
                kind = "A" if qtype == A else "AAAA"
                raise ResolutionFailed(f"{name} {kind}: {answer.rcode_name} from {self.server}")
            addresses += answer.addresses
        return addresses

    async def query(self, name: str, qtype: int) -> Answer:
        """One question, over UDP, then TCP if the reply is truncated; no timeout of its own."""
        qid = secrets.randbits(16)
        query = _encode_query(qid, name, qtype)
        answer = await self._over_udp(query, qid, name, qtype)
        if answer.truncated:
            answer = await self._over_tcp(query, qid, name, qtype)
        return answer

    async def _over_udp(self, query: bytes, qid: int, name: str, qtype: int) -> Answer:
        host, port = self.server.host, self.server.port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with trio.socket.socket(family, socket.SOCK_DGRAM) as sock:
            # connected: the kernel drops datagrams from any other address, and an ICMP
            # port unreachable surfaces as ConnectionRefusedError
            await sock.connect((host, port))
            while True:
                await sock.send(query)
                with trio.move_on_after(RETRANSMIT):
                    while True:
                        data = await sock.recv(65535)
                        try:
                            return decode_response(data, qid, name, qtype)
                        except DnsFormatError as e:
                            log.debug("ignoring a datagram from %s: %s", self.server, e)

    async def _over_tcp(self, query: bytes, qid: int, name: str, qtype: int) -> Answer:
        stream = await trio.open_tcp_stream(self.server.host, self.server.port)
        async with stream:
            await stream.send_all(struct.pack("!H", len(query)) + query)
            (length,) = struct.unpack("!H", await _receive_exactly(stream, 2))
            data = await _receive_exactly(stream, length)
        try:
            return decode_response(data, qid, name, qtype)
        except DnsFormatError as e:
            raise ResolutionFailed(f"{name}: bad reply over TCP from {self.server}: {e}") from None


async def _receive_exactly(stream: trio.abc.ReceiveStream, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        piece = await stream.receive_some(n - len(data))
        if not piece:
            raise ResolutionFailed("DNS server closed the TCP connection mid-reply")
        data += piece
    return bytes(data)


def resolver_for(discovery: Discovery) -> Resolver:
    """The resolver a dns source uses: the named server, else the system's."""
    if discovery.resolver is not None:
        return DnsClient(discovery.resolver)
    return resolve_system


def _sort_key(ip: str) -> tuple[int, int]:
    addr = ipaddress.ip_address(ip)
    return (addr.version, int(addr))


async def resolve_once(discovery: Discovery, resolver: Resolver) -> DiscoveryReport:
    """One resolution of ``discovery.hostname``, as the report a source sends."""
    name = discovery.hostname
    assert name is not None  # validated: dns needs a hostname
    with trio.move_on_after(discovery.timeout):
        try:
            found = await resolver(name, discovery.ip_family)
        except ResolutionFailed as e:
            return DiscoveryFailed(str(e), discovery)
        except OSError as e:
            return DiscoveryFailed(f"{name}: {e.strerror or e}", discovery)
        try:
            ips = sorted(set(found), key=_sort_key)
        except ValueError as e:
            return DiscoveryFailed(f"{name}: resolver gave a bad address: {e}", discovery)
        if not ips:
            return DiscoveryFailed(f"{name}: no address records", discovery)
        endpoints = tuple(Endpoint(Address(ip, discovery.port)) for ip in ips)
        return EndpointsDiscovered(endpoints, discovery)
    return DiscoveryFailed(f"{name}: no answer within {discovery.timeout:g}s", discovery)


async def run_dns_source(discovery: Discovery, report: ReportFn, resolver: Resolver) -> None:
    """Resolve every ``discovery.interval`` seconds and report each outcome; until cancelled."""
    while True:
        started = trio.current_time()
        await report(await resolve_once(discovery, resolver))
        await trio.sleep_until(started + discovery.interval)
