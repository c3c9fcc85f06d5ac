"""The faults of one config version, compiled for the data path: who gets which fault.

Theory of operation: the control plane builds a ``FaultTable`` with every new config
version (``FaultTable.compile``) and publishes it in the ``DataPlane``; a config without
faults has none (``DataPlane.faults is None``: the data path's one test). The table
groups the faults by listener (a fault without a listener is in every HTTP listener's
group, in config order), each compiled once: its header tests (a regex compiled here,
never per request) and its ``policies.faults.FaultRule``.

A request is taken by the first fault of its listener's group, in config order, whose
scope (route name, the cluster picked for the request) and ``match`` take it; that fault
alone decides the request. What outlives a version is mutable and carried over by
``compile`` from the previous table: each fault's ``FaultCounter`` (for ``first_n``),
kept while the fault's config is unchanged and started again when it is replaced, and
the process's ``ActiveFaults`` (for ``max_active_faults``). With worker processes each
worker compiles its own table, so both count per worker.

A fault's ``match`` is the route match's ``headers`` (``exact``, ``prefix``, ``regex``
full match, ``present``, ``absent``, ``invert``), compiled as the route table compiles
them (``gateway.routing.header_condition``, ``policies.matching.HeaderCondition``).
"""

from __future__ import annotations

import attrs

from gateway.config import Config, Fault
from gateway.http1.events import Headers
from gateway.routing import header_condition
from policies.faults import FaultRule
from policies.matching import HeaderCondition


class FaultCounter:
    """How many requests one fault was injected into (``first_n``), for its config."""

    __slots__ = ("fault", "injected")

    def __init__(self, fault: Fault) -> None:
        self.fault = fault
        self.injected = 0


class ActiveFaults:
    """How many faults are being applied now in this process."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


@attrs.frozen(eq=False)
class CompiledFault:
    """One fault, ready for requests: its scope, its header tests, its rule, its count."""

    name: str
    route: str | None
    cluster: str | None
    headers: tuple[HeaderCondition, ...]
    rule: FaultRule
    counter: FaultCounter

    def takes(self, route: str | None, cluster: str, headers: Headers) -> bool:
        """Whether a request on ``route`` to ``cluster`` with ``headers`` is this fault's."""
        if self.route is not None and self.route != route:
            return False
        if self.cluster is not None and self.cluster != cluster:
            return False
        return not self.headers or all(test.accepts(headers) for test in self.headers)


@attrs.frozen(eq=False)
class FaultTable:
    """The faults of one config version by listener name, and the process's active count."""

    listeners: dict[str, tuple[CompiledFault, ...]]
    counters: dict[str, FaultCounter]
    active: ActiveFaults
    #: ``max_active_faults``
    max_active: int

    @classmethod
    def compile(cls, config: Config, previous: FaultTable | None) -> FaultTable | None:
        """The table of ``config`` (None without faults), carrying over from ``previous``
        the counters of faults whose config is unchanged, and the active count."""
        if not config.faults:
            return None
        old = previous.counters if previous is not None else {}
        counters: dict[str, FaultCounter] = {}
        compiled: list[tuple[str | None, CompiledFault]] = []
        for fault in config.faults:
            counter = old.get(fault.name)
            if counter is None or counter.fault != fault:
                counter = FaultCounter(fault)  # new or replaced: first_n counts again
            counters[fault.name] = counter
            compiled.append(
                (
                    fault.listener,
                    CompiledFault(
                        fault.name,
                        fault.route,
                        fault.cluster,
                        tuple(header_condition(h) for h in fault.match.headers),
                        fault.rule(),
                        counter,
                    ),
                )
            )
        listeners: dict[str, tuple[CompiledFault, ...]] = {}
        for lst in config.listeners:
            mine = tuple(f for scope, f in compiled if scope is None or scope == lst.name)
            if mine and lst.protocol == "http":
                listeners[lst.name] = mine
        active = previous.active if previous is not None else ActiveFaults()
        return cls(listeners, counters, active, config.max_active_faults)

    def taking(
        self, listener: str, route: str | None, cluster: str, headers: Headers
    ) -> CompiledFault | None:
        """The fault that decides a request, if any (the first that takes it)."""
        for fault in self.listeners.get(listener, ()):
            if fault.takes(route, cluster, headers):
                return fault
        return None
