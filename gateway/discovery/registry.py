"""The registry of a ``registry`` cluster: instances that registered themselves, with TTLs.

Theory of operation: a ``Registry`` is plain state owned by one cluster actor (no trio,
no clock: ``now`` is the actor's ``trio.current_time()``). An instance registers with
its endpoint and a TTL (0: it never expires); a heartbeat renews it for another TTL;
it leaves by deregistering, or silently, when a TTL passes without a heartbeat
(``expire(now)``), which is how an instance that crashed is found out, as with
Consul's TTL checks or Eureka's lease renewals. Registering an address again replaces
its registration (an instance that restarts re-registers without deregistering).

Registrations are runtime state, not config: they are not persisted, and a restarted
gateway learns them again from the instances' next heartbeat, which answers 404 and
tells the instance to register again.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import attrs

from gateway.config import Endpoint
from gateway.discovery.errors import NotRegistered


@attrs.frozen
class Registration:
    """One registered instance."""

    endpoint: Endpoint
    #: seconds a heartbeat buys; 0 means the registration never expires
    ttl: float
    #: when it expires on the actor's clock; inf when it never does
    expires_at: float

    @property
    def key(self) -> str:
        return str(self.endpoint.address)

    def expires_in(self, now: float) -> float | None:
        """Seconds left, or None for a registration that never expires."""
        return None if math.isinf(self.expires_at) else max(0.0, self.expires_at - now)


def _expiry(ttl: float, now: float) -> float:
    return now + ttl if ttl > 0 else math.inf


class Registry:
    """The registrations of one cluster, by endpoint address."""

    __slots__ = ("_by_key",)

    def __init__(self, registrations: Iterable[Registration] = ()) -> None:
        self._by_key = {r.key: r for r in registrations}

    def register(self, endpoint: Endpoint, ttl: float, now: float) -> tuple[Registration, bool]:
        """Add or replace the registration of ``endpoint``; returns it and whether it is new."""
        reg = Registration(endpoint, ttl, _expiry(ttl, now))
        created = reg.key not in self._by_key
        self._by_key[reg.key] = reg
        return reg, created

    def renew(self, key: str, now: float, ttl: float | None = None) -> Registration:
        """A heartbeat: another ``ttl`` (default: the registration's own) from ``now``."""
        reg = self._get(key)
        ttl = reg.ttl if ttl is None else ttl
        reg = attrs.evolve(reg, ttl=ttl, expires_at=_expiry(ttl, now))
        self._by_key[key] = reg
        return reg

    def deregister(self, key: str) -> Registration:
        reg = self._get(key)
        del self._by_key[key]
        return reg

    def expire(self, now: float) -> list[Registration]:
        """Remove and return the registrations whose TTL ran out by ``now``."""
        gone = [r for r in self._by_key.values() if r.expires_at <= now]
        for r in gone:
            del self._by_key[r.key]
        return gone

    def next_expiry(self) -> float:
        """When the next registration expires (inf if none will)."""
        return min((r.expires_at for r in self._by_key.values()), default=math.inf)

    def registrations(self) -> tuple[Registration, ...]:
        """Every registration, by address."""
        return tuple(sorted(self._by_key.values(), key=lambda r: r.endpoint.address))

    def endpoints(self) -> tuple[Endpoint, ...]:
        return tuple(r.endpoint for r in self.registrations())

    def _get(self, key: str) -> Registration:
        try:
            return self._by_key[key]
        except KeyError:
            raise NotRegistered(f"no instance registered at {key}") from None
