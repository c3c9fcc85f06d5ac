"""Toxiproxy's proxies as the config's tcp listeners, and its writes as config changes.

Theory of operation: a Toxiproxy proxy named ``db`` is a ``protocol: tcp`` listener
``db`` whose ``cluster`` is ``db-upstream``, a static cluster with one endpoint, the
proxy's ``upstream``. Any tcp listener that names a cluster is a proxy here, so one made
through the native API shows up too (its upstream is its cluster's first endpoint). An
upstream written with a host name (``localhost:6379``) is kept so in the endpoint and
resolved each time a connection is made (the upstream connector resolves the host of
every new connection), as Toxiproxy dials its upstream for each client it accepts.

Every write is one pure ``Change`` (``Config -> Config``) run by the control plane
actor against the config current at that instant: a proxy and its toxics, or a whole
``/populate`` array, start together or not at all. The checks Toxiproxy makes against
its own state (a name already taken, a toxic not found) are made inside the change, so
they cannot go stale; they raise ``ToxiproxyError``, which the actor hands back.

Addresses: ``listen`` port 0 is kept as 0 in the config; the bound port is read from
the control plane's view after the change. ``""`` (Toxiproxy: every interface, an
ephemeral port) is ``0.0.0.0:0``; ``localhost`` is ``127.0.0.1``, as Go resolves it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Final

import attrs

from admin.toxiproxy.decode import GoType, bad_body, decode_struct, kind_of
from admin.toxiproxy.errors import ToxiproxyError, proxy_not_found
from admin.toxiproxy.toxics import chain_order, toxic_from, toxic_json
from gateway.config import Address, Cluster, Config, Endpoint, Listener, Toxic

Change = Callable[[Config], Config]

#: seconds an idle proxied connection is kept: Toxiproxy's proxies have no idle
#: timeout, a test's connection pool may sit idle for minutes
IDLE_TIMEOUT: Final = 86400.0

_PROXY_FIELDS: Final[Mapping[str, GoType]] = {
    "name": "string",
    "listen": "string",
    "upstream": "string",
    "enabled": "bool",
}
#: Go's names of the bodies' types, for its top-level type errors
PROXY_TYPE: Final = "toxiproxy.Proxy"
POPULATE_TYPE: Final = 'struct { toxiproxy.Proxy; Enabled *bool "json:\\"enabled\\"" }'
TOXIC_TYPE: Final = "toxics.ToxicWrapper"


def upstream_cluster(proxy: str) -> str:
    """The cluster holding a proxy's upstream: ``db`` -> ``db-upstream``."""
    return f"{proxy}-upstream"


@attrs.frozen
class ProxySpec:
    """A proxy as a create or populate body asks for it."""

    name: str
    listen: Address
    upstream: Address
    enabled: bool = True
    toxics: tuple[Toxic, ...] = ()
    #: whether the body listed toxics (then a populate compares them too)
    has_toxics: bool = False


def is_proxy(listener: Listener) -> bool:
    return listener.protocol == "tcp" and listener.cluster is not None


def find_proxy(config: Config, name: str) -> Listener:
    listener = config.listener(name)
    if listener is None or not is_proxy(listener):
        raise proxy_not_found()
    return listener


def upstream_of(config: Config, listener: Listener) -> str:
    """What Toxiproxy shows as ``upstream``: the cluster's first endpoint."""
    cluster = config.cluster(listener.cluster or "")
    if cluster is None:
        return ""
    if cluster.discovery.type == "dns" and cluster.discovery.hostname:
        return f"{cluster.discovery.hostname}:{cluster.discovery.port}"
    return str(cluster.endpoints[0].address) if cluster.endpoints else ""


def proxy_json(config: Config, listener: Listener, listen: str) -> dict[str, Any]:
    """A proxy as Toxiproxy writes it, ``"Logger":{}`` included (an artefact of its Go
    struct that clients may expect), toxics upstream first."""
    return {
        "name": listener.name,
        "listen": listen,
        "upstream": upstream_of(config, listener),
        "enabled": listener.enabled,
        "Logger": {},
        "toxics": [toxic_json(t) for t in chain_order(listener.toxics)],
    }


def parse_listen(text: str) -> Address:
    """A ``listen`` as Go's ``net.Listen`` reads it; 500 (Go's error) if it cannot."""
    if text == "":
        return Address("0.0.0.0", 0)
    try:
        address = Address.parse(text)
    except ValueError:
        raise ToxiproxyError(500, f"listen tcp: address {text}: missing port in address") from None
    if address.host == "localhost":
        return Address("127.0.0.1", address.port)
    return address


def parse_upstream(text: str) -> Address:
    """An ``upstream``: Toxiproxy takes any string and fails each dial; triogate needs a
    ``host:port`` it can put in an endpoint, and says so (400) at once."""
    try:
        address = Address.parse(text)
    except ValueError as e:
        raise ToxiproxyError(400, f"upstream {text!r} is not host:port: {e}") from None
    if address.port == 0:
        raise ToxiproxyError(400, f"upstream {text!r}: port must be 1-65535")
    return address


def decode_proxy(value: Any, *, top_type: str, at: str = "") -> dict[str, Any]:
    """The fields of a proxy body, name and upstream required (``at``: `` at proxy N``)."""
    fields = decode_struct(
        value,
        _PROXY_FIELDS,
        "Proxy",
        {"name": "", "listen": "", "upstream": "", "enabled": True},
        top_type=top_type,
    )
    for required in ("name", "upstream"):
        if not fields[required]:
            raise ToxiproxyError(400, f"missing required field: {required}{at}")
    fields["toxics"] = _raw_field(value, "toxics")
    return fields


def spec_of(fields: Mapping[str, Any]) -> ProxySpec:
    """A decoded proxy body as a ``ProxySpec`` (addresses parsed, toxics built)."""
    listen = parse_listen(fields["listen"])
    upstream = parse_upstream(fields["upstream"])
    raw_toxics = fields["toxics"]
    toxics: list[Toxic] = []
    if raw_toxics is not None:
        if not isinstance(raw_toxics, list):
            raise bad_body(
                f"json: cannot unmarshal {kind_of(raw_toxics)} into Go struct field "
                "Proxy.toxics of type []toxics.ToxicWrapper"
            )
        for item in raw_toxics:
            toxics.append(toxic_from(item, {t.name for t in toxics}, top_type=TOXIC_TYPE))
    return ProxySpec(
        name=fields["name"],
        listen=listen,
        upstream=upstream,
        enabled=fields["enabled"],
        toxics=tuple(toxics),
        has_toxics=raw_toxics is not None,
    )


def _raw_field(value: Any, name: str) -> Any:
    if not isinstance(value, dict):
        return None
    if name in value:
        return value[name]
    return next((v for k, v in value.items() if k.lower() == name), None)


# -- the changes ---------------------------------------------------------------------


def _listener_of(spec: ProxySpec) -> Listener:
    return Listener(
        name=spec.name,
        address=spec.listen,
        protocol="tcp",
        cluster=upstream_cluster(spec.name),
        enabled=spec.enabled,
        toxics=spec.toxics,
        idle_timeout=IDLE_TIMEOUT,
    )


def _with_upstream(config: Config, name: str, upstream: Address) -> Config:
    """``config`` with cluster ``name`` holding ``upstream`` only (added if missing)."""
    cluster = config.cluster(name)
    if cluster is None:
        new = Cluster(name=name, endpoints=(Endpoint(upstream),))
        return attrs.evolve(config, clusters=(*config.clusters, new))
    new = attrs.evolve(cluster, endpoints=(Endpoint(upstream),))
    clusters = tuple(new if c.name == name else c for c in config.clusters)
    return attrs.evolve(config, clusters=clusters)


def _put_listener(config: Config, listener: Listener) -> Config:
    """``config`` with ``listener`` in place of the one of its name, or added at the end."""
    if config.listener(listener.name) is None:
        return attrs.evolve(config, listeners=(*config.listeners, listener))
    listeners = tuple(listener if x.name == listener.name else x for x in config.listeners)
    return attrs.evolve(config, listeners=listeners)


def put_proxy(config: Config, spec: ProxySpec) -> Config:
    """``config`` with the proxy of ``spec`` added, or replacing the one of its name."""
    config = _with_upstream(config, upstream_cluster(spec.name), spec.upstream)
    return _drop_orphan(_put_listener(config, _listener_of(spec)), config.listener(spec.name))


def create_change(spec: ProxySpec) -> Change:
    """``POST /proxies``: 409 if the name is taken (by any listener)."""

    def change(config: Config) -> Config:
        if config.listener(spec.name) is not None:
            raise ToxiproxyError(409, "proxy already exists")
        return put_proxy(config, spec)

    return change


def populate_change(specs: Sequence[ProxySpec], shown: Mapping[str, str]) -> Change:
    """``POST /populate``: each entry in order adds its proxy or replaces the one of its
    name, unless that one has the same listen (as shown: ``shown``, by name) and
    upstream (and, when the entry lists toxics, the same toxics): then it is kept as is."""

    def change(config: Config) -> Config:
        for spec in specs:
            current = config.listener(spec.name)
            if current is not None and is_proxy(current) and _same(config, current, spec, shown):
                continue
            config = put_proxy(config, spec)
        return config

    return change


def _same(config: Config, current: Listener, spec: ProxySpec, shown: Mapping[str, str]) -> bool:
    if spec.listen.port == 0:
        return False  # as in Toxiproxy: port 0 never equals a bound address
    same = shown.get(current.name, str(current.address)) == str(spec.listen) and upstream_of(
        config, current
    ) == str(spec.upstream)
    return same and (not spec.has_toxics or current.toxics == spec.toxics)


def update_change(
    name: str, *, listen: Address | None, upstream: Address | None, enabled: bool
) -> Change:
    """``PATCH /proxies/{name}``: a new listen or upstream (None: unchanged) and enabled."""

    def change(config: Config) -> Config:
        listener = find_proxy(config, name)
        if upstream is not None:
            config = _with_upstream(config, upstream_cluster(name), upstream)
            listener = attrs.evolve(listener, cluster=upstream_cluster(name))
        if listen is not None:
            listener = attrs.evolve(listener, address=listen)
        before = config.listener(name)
        config = _put_listener(config, attrs.evolve(listener, enabled=enabled))
        return _drop_orphan(config, before)

    return change


def delete_change(name: str) -> Change:
    """``DELETE /proxies/{name}``: the listener, and its upstream cluster unless used."""

    def change(config: Config) -> Config:
        listener = find_proxy(config, name)
        config = attrs.evolve(
            config, listeners=tuple(x for x in config.listeners if x.name != name)
        )
        return _drop_orphan(config, listener)

    return change


def reset_change(pinned: Mapping[str, Address]) -> Change:
    """``POST /reset``: every proxy enabled, without toxics. A disabled proxy whose
    listen port is 0 goes back to the port it had (``pinned``), as Toxiproxy's does."""

    def change(config: Config) -> Config:
        listeners = []
        for listener in config.listeners:
            if is_proxy(listener):
                listener = attrs.evolve(enabling(listener, pinned), enabled=True, toxics=())
            listeners.append(listener)
        return attrs.evolve(config, listeners=tuple(listeners))

    return change


def enabling(listener: Listener, pinned: Mapping[str, Address]) -> Listener:
    """``listener`` about to be enabled: port 0 replaced by the port it was last bound
    to, if it was (Toxiproxy stores the bound address and listens there again)."""
    if listener.enabled or listener.address.port != 0 or listener.name not in pinned:
        return listener
    return attrs.evolve(listener, address=pinned[listener.name])


def toxics_change(name: str, edit: Callable[[tuple[Toxic, ...]], tuple[Toxic, ...]]) -> Change:
    """A change of proxy ``name``'s toxics (404 if there is no such proxy)."""

    def change(config: Config) -> Config:
        listener = find_proxy(config, name)
        return _put_listener(config, attrs.evolve(listener, toxics=edit(listener.toxics)))

    return change


def _drop_orphan(config: Config, before: Listener | None) -> Config:
    """``config`` without the upstream cluster ``before`` named, if it was a proxy's own
    (``<name>-upstream``) and nothing names it any more."""
    if before is None or before.cluster != upstream_cluster(before.name):
        return config
    cluster = before.cluster
    if cluster in _clusters_named(config):
        return config
    return attrs.evolve(config, clusters=tuple(c for c in config.clusters if c.name != cluster))


def _clusters_named(config: Config) -> Collection[str]:
    """Every cluster something in ``config`` refers to."""
    named: set[str] = set()
    for listener in config.listeners:
        if listener.cluster is not None:
            named.add(listener.cluster)
        named.update(w.cluster for w in listener.split)
        for route in listener.all_routes():
            if route.cluster is not None:
                named.add(route.cluster)
            named.update(w.cluster for w in route.split)
            if route.mirror is not None:
                named.add(route.mirror.cluster)
    named.update(f.cluster for f in config.faults if f.cluster is not None)
    for rollout in config.rollouts:
        named.update((rollout.stable, rollout.canary))
    return named
