"""The admin API's resources, one ``APIRouter`` per module; ``create_app`` includes ``ROUTERS``.

A new resource is a new module here and one line below.
"""

from __future__ import annotations

from fastapi import APIRouter

from admin.routes import (
    clusters,
    config,
    endpoint_health,
    faults,
    fleet,
    health,
    listeners,
    registry,
    rollouts,
    toxics,
)

ROUTERS: tuple[APIRouter, ...] = (
    config.router,
    health.router,
    listeners.router,
    registry.router,  # before clusters: it takes the endpoints of registry clusters only
    clusters.router,
    registry.status_router,
    endpoint_health.router,
    faults.router,
    fleet.router,
    rollouts.router,
    toxics.router,
)
