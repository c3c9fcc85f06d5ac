"""Stable 64-bit hashes for hash-based balancing.

Theory of operation: Python's ``hash()`` is salted per process, so two gateway
processes (or one, restarted) would send the same client to different hosts. Every
hash here is BLAKE2b cut to 64 bits: stable across processes, platforms and Python
versions, and well mixed in every bit (ring hash compares whole values, Maglev and the
priority choice take residues). ``person`` separates the uses, so a host's Maglev
offset and skip are independent of each other and of the request keys.
"""

from __future__ import annotations

import hashlib

__all__ = ["hash64", "hash_key"]


def hash64(data: bytes, person: bytes = b"") -> int:
    """BLAKE2b of ``data`` as an unsigned 64-bit integer; ``person`` names the use."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8, person=person).digest(), "little")


def hash_key(data: bytes | str) -> int:
    """The stable 64-bit hash of a request's affinity key (header, cookie, source IP)."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    return hash64(data)
