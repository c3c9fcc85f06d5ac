"""What the admin API shows of a cluster's endpoint health: plain data, read from a handle.

Everything here reads the cluster actor's published values (``handle.snapshot``,
``handle.health``, ``handle.checks``), never its state.
"""

from __future__ import annotations

from typing import Any

import trio

from gateway.cluster.actor import ClusterHandle

__all__ = ["health_view"]


def health_view(handle: ClusterHandle, *, per_worker: bool = False) -> dict[str, Any]:
    """Per endpoint (every member, draining ones included): config state, health check
    (state, last result), ejection (None: no outlier detection), breaker (None: the
    classic breaker guards the cluster, not an endpoint), the combined verdict as Envoy
    prints health flags, and whether the balancer may pick it; and the cluster's
    breaker (``breaker_view``). ``per_worker``: worker processes serve the requests."""
    snapshot = handle.snapshot
    in_host_set = {id(state) for state in snapshot.endpoints}
    checked = snapshot.config.health_check is not None or bool(handle.health)
    detected = snapshot.config.outlier_detection is not None
    endpoints = []
    for state in snapshot.all_endpoints:
        health = state.health
        last = handle.checks.get(state.key)
        endpoints.append(
            {
                "address": state.key,
                "config_state": state.config.state,
                "health_check": None
                if not checked
                else {
                    "state": None if state.check is None else state.check.value,
                    "last": None
                    if last is None
                    else {"at": last.at, "passed": last.passed, "detail": last.detail},
                },
                "ejection": _ejection(handle, state.key) if detected else None,
                # the breaker guards the cluster: see the cluster's "breaker"
                "breaker": None,
                "verdict": str(health),
                # healthy, or unhealthy but in the host set (it serves in panic)
                "serves": health.healthy and id(state) in in_host_set,
                "in_host_set": id(state) in in_host_set,
            }
        )
    return {
        "cluster": handle.name,
        "health_check": checked,
        "outlier_detection": detected,
        "breaker": breaker_view(handle, per_worker=per_worker),
        "endpoints": endpoints,
    }


def breaker_view(handle: ClusterHandle, *, per_worker: bool = False) -> dict[str, Any] | None:
    """The cluster's classic breaker: None without ``breaker``. In one process its
    ``state`` now (an elapsed open time half-opens it); with worker processes each has
    its own breaker: ``state`` is None and ``open_workers`` how many reported theirs not
    closed (the summed ``breaker.open`` gauge, as of their last stats report)."""
    if handle.snapshot.config.breaker is None:
        return None
    stats = handle.stats
    if per_worker:
        return {
            "per_worker": True,
            "state": None,
            "open_workers": 0 if stats is None else stats.breaker_open,
        }
    guard = None if stats is None else stats.breaker
    if guard is None:  # pragma: no cover - the cluster actor makes it with the config
        return {"per_worker": False, "state": "closed", "open_time": None}
    state = guard.state_at(trio.current_time())
    return {"per_worker": False, "state": state.value, "open_time": guard.breaker.open_time}


def _ejection(handle: ClusterHandle, key: str) -> dict[str, Any]:
    """An endpoint's ejection now: ``ejected`` false, or since, until (Unix times), the
    ejections it has had and why this one."""
    ejection = handle.ejections.get(key)
    if ejection is None:
        return {"ejected": key in handle.ejected}
    return {
        "ejected": True,
        "since": ejection.since,
        "until": ejection.until,
        "times_ejected": ejection.times_ejected,
        "reason": ejection.reason.value,
    }
