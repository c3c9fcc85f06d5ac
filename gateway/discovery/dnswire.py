"""DNS messages for A/AAAA lookups, sans-IO: a query to bytes, response bytes to addresses.

Theory of operation: ``encode_query`` builds one question (RD set, an EDNS0 OPT record
advertising a 1232-byte UDP payload, the size DNS Flag Day 2020 settled on), and
``decode_response`` checks that a reply answers exactly that question (ID, QR, opcode,
the question echoed back) before reading its answer section. Addresses are taken from
records of the asked type whose owner is the asked name or a name it is aliased to by
a CNAME chain in the same answer, as a stub resolver does. Names in replies may be
compressed (RFC 1035 4.1.4); pointers must point backwards, which also bounds the walk.

Nothing here does I/O, so the codec is tested on bytes (``tests/gateway/test_discovery``)
and the transport (``dns.py``) stays a few lines of trio.

Errors: ``DnsFormatError(ValueError)``, a reply that is malformed or does not answer
the question; such a reply is ignored (a spoofed or stray datagram must not end the wait
for the real one).
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Final

import attrs

__all__ = [
    "AAAA",
    "A",
    "Answer",
    "DnsFormatError",
    "decode_response",
    "encode_name",
    "encode_query",
]

A: Final = 1
AAAA: Final = 28
CNAME: Final = 5
OPT: Final = 41
CLASS_IN: Final = 1
#: the UDP payload size advertised with EDNS0
EDNS_PAYLOAD: Final = 1232

NOERROR: Final = 0
NXDOMAIN: Final = 3
RCODE_NAMES: Final = {
    0: "NOERROR",
    1: "FORMERR",
    2: "SERVFAIL",
    3: "NXDOMAIN",
    4: "NOTIMP",
    5: "REFUSED",
}

_HEADER = struct.Struct("!HHHHHH")
_RR_FIXED = struct.Struct("!HHIH")
_MAX_CNAME_CHAIN = 8


class DnsFormatError(ValueError):
    """A DNS message that is malformed, or a reply to some other question."""


@attrs.frozen
class Answer:
    """What a reply says about the question it answers."""

    rcode: int
    #: TC: the reply was cut to fit a datagram; ask again over TCP
    truncated: bool
    #: addresses of the asked type, in the order the server gave them
    addresses: tuple[str, ...]

    @property
    def rcode_name(self) -> str:
        return RCODE_NAMES.get(self.rcode, f"RCODE{self.rcode}")


def encode_name(name: str) -> bytes:
    """A host name in wire form (length-prefixed labels); ``ValueError`` if it cannot be one."""
    labels = name.rstrip(".").split(".") if name.rstrip(".") else []
    out = bytearray()
    for label in labels:
        raw = label.encode("ascii")
        if not 1 <= len(raw) <= 63:
            raise ValueError(f"label {label!r} of {name!r} must be 1-63 bytes")
        out += bytes([len(raw)]) + raw
    out += b"\x00"
    if len(out) > 255:
        raise ValueError(f"{name!r} is longer than 255 bytes in wire form")
    return bytes(out)


def encode_query(qid: int, name: str, qtype: int) -> bytes:
    """One question for ``name`` of ``qtype`` (A or AAAA), recursion desired, EDNS0."""
    header = _HEADER.pack(qid, 0x0100, 1, 0, 0, 1)
    question = encode_name(name) + struct.pack("!HH", qtype, CLASS_IN)
    # OPT pseudo-record: root owner, type OPT, class = payload size, ttl = 0 (no flags)
    opt = b"\x00" + struct.pack("!HHIH", OPT, EDNS_PAYLOAD, 0, 0)
    return header + question + opt


def _read_name(data: bytes, offset: int) -> tuple[str, int]:
    """The name at ``offset`` (lower-cased) and the offset just past it in the message."""
    labels: list[str] = []
    end: int | None = None
    pos = offset
    total = 0
    while True:
        if pos >= len(data):
            raise DnsFormatError("name runs past the end of the message")
        length = data[pos]
        if length & 0xC0 == 0xC0:
            if pos + 1 >= len(data):
                raise DnsFormatError("compression pointer cut short")
            target = ((length & 0x3F) << 8) | data[pos + 1]
            if target >= pos:
                raise DnsFormatError("compression pointer does not point backwards")
            if end is None:
                end = pos + 2
            pos = target
            continue
        if length & 0xC0:
            raise DnsFormatError(f"unknown label type {length:#x}")
        pos += 1
        if length == 0:
            break
        label = data[pos : pos + length]
        if len(label) != length:
            raise DnsFormatError("label runs past the end of the message")
        total += length + 1
        if total > 255:
            raise DnsFormatError("name longer than 255 bytes")
        labels.append(label.decode("ascii", "replace").lower())
        pos += length
    return ".".join(labels), (pos if end is None else end)


def _address(qtype: int, rdata: bytes) -> str:
    if qtype == A and len(rdata) == 4:
        return str(ipaddress.IPv4Address(rdata))
    if qtype == AAAA and len(rdata) == 16:
        return str(ipaddress.IPv6Address(rdata))
    raise DnsFormatError(f"address record of {len(rdata)} bytes for type {qtype}")


def decode_response(data: bytes, qid: int, name: str, qtype: int) -> Answer:
    """The answer in ``data`` to question (``qid``, ``name``, ``qtype``).

    Raises ``DnsFormatError`` if ``data`` is malformed or answers another question.
    """
    if len(data) < _HEADER.size:
        raise DnsFormatError("shorter than a DNS header")
    rid, flags, qdcount, ancount, _nscount, _arcount = _HEADER.unpack_from(data)
    if rid != qid:
        raise DnsFormatError(f"reply id {rid} is not the query's {qid}")
    if not flags & 0x8000:
        raise DnsFormatError("not a reply (QR clear)")
    if (flags >> 11) & 0xF != 0:
        raise DnsFormatError("not a standard query reply")
    rcode = flags & 0xF
    truncated = bool(flags & 0x0200)
    want = name.rstrip(".").lower()
    pos = _HEADER.size
    if qdcount != 1:
        if qdcount == 0 and (truncated or rcode != NOERROR):
            return Answer(rcode, truncated, ())  # some servers drop the question on errors
        raise DnsFormatError(f"{qdcount} questions in the reply, not 1")
    qname, pos = _read_name(data, pos)
    if pos + 4 > len(data):
        raise DnsFormatError("question cut short")
    rtype, rclass = struct.unpack_from("!HH", data, pos)
    pos += 4
    if (qname, rtype, rclass) != (want, qtype, CLASS_IN):
        raise DnsFormatError(f"reply is for {qname!r} type {rtype}, not {want!r} type {qtype}")
    if truncated:
        return Answer(rcode, True, ())
    aliases: dict[str, str] = {}
    found: list[tuple[str, str]] = []
    for _ in range(ancount):
        owner, pos = _read_name(data, pos)
        if pos + _RR_FIXED.size > len(data):
            raise DnsFormatError("resource record cut short")
        rtype, rclass, _ttl, rdlength = _RR_FIXED.unpack_from(data, pos)
        pos += _RR_FIXED.size
        rdata = data[pos : pos + rdlength]
        if len(rdata) != rdlength:
            raise DnsFormatError("record data runs past the end of the message")
        if rclass == CLASS_IN and rtype == CNAME:
            aliases[owner] = _read_name(data, pos)[0]
        elif rclass == CLASS_IN and rtype == qtype:
            found.append((owner, _address(qtype, rdata)))
        pos += rdlength
    names = {want}
    current = want
    for _ in range(_MAX_CNAME_CHAIN):
        if current not in aliases:
            break
        current = aliases[current]
        names.add(current)
    addresses = tuple(dict.fromkeys(addr for owner, addr in found if owner in names))
    return Answer(rcode, False, addresses)
