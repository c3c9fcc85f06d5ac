"""Helpers shared by the admin API tests (imported by name: tests/admin is on sys.path)."""

from __future__ import annotations

from typing import Any

import attrs
import httpx

from gateway.app import Gateway
from gateway.config import Address

UPSTREAMS = ("a", "b", "c")


def admin_config(upstreams: dict[str, Address]) -> dict[str, Any]:
    """One listener ``web`` whose route ``main`` sends to cluster ``a``; one cluster per upstream."""
    return {
        "admin": {"address": "127.0.0.1:0"},
        "listeners": [
            {
                "name": "web",
                "address": "127.0.0.1:0",
                "routes": [{"name": "main", "match": {"prefix": "/"}, "cluster": "a"}],
            }
        ],
        "clusters": [
            {"name": name, "endpoints": [{"address": str(address)}]}
            for name, address in upstreams.items()
        ],
    }


@attrs.frozen
class AdminSetup:
    """A running gateway with admin API, its upstreams, and clients for both sides."""

    gateway: Gateway
    upstreams: dict[str, Address]
    admin: httpx.AsyncClient
    web: httpx.AsyncClient

    async def config(self) -> tuple[dict[str, Any], str]:
        r = await self.admin.get("/config")
        assert r.status_code == 200, r.text
        return r.json(), r.headers["etag"]


def issue_locs(response: httpx.Response) -> list[str]:
    """The ``loc`` of each issue in a 422 answer (asserting its shape)."""
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail and all(set(i) == {"loc", "msg"} and i["msg"] for i in detail), detail
    return [i["loc"] for i in detail]
