"""What the admin API shows of a cluster's endpoint health: plain data, read from a handle.

Everything here reads the cluster actor's published values (``handle.snapshot``,
``handle.health``, ``handle.checks``), never its state.
"""

from __future__ import annotations

from typing import Any

from gateway.cluster.actor import ClusterHandle

__all__ = ["health_view"]


def health_view(handle: ClusterHandle) -> dict[str, Any]:
    """Per endpoint (every member, draining ones included): config state, health check
    (state, last result), ejection (None: no outlier detection), breaker (None: not
    built yet), the combined
    verdict as Envoy prints health flags, and whether the balancer may pick it."""
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
                # per-endpoint breakers are not built yet (issue 10)
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
        "endpoints": endpoints,
    }


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
