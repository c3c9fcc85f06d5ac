"""What the rollout tests share: a rollout's spec, and a load that records who answered."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import trio

from gateway.config import Address


def rollout_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "checkout-v2",
        "listener": "web",
        "route": "main",
        "stable": "v1",
        "canary": "v2",
        "steps": [10, 50, 100],
        "dwell": 0.4,
        "interval": 0.1,
        "gates": {"max_error_rate": 0.01, "max_p99_ms": 1000, "min_requests": 5},
    }
    spec.update(overrides)
    return spec


@attrs.define
class Load:
    """Keep-alive clients sending GETs until stopped; each answer's status by upstream."""

    answers: Counter[tuple[str, int]] = attrs.Factory(Counter)
    errors: list[str] = attrs.Factory(list)
    running: bool = True

    def count(self, upstream: str, status: int | None = None) -> int:
        return sum(n for (u, s), n in self.answers.items() if u == upstream and status in (None, s))

    async def client(self, web: Address) -> None:
        async with httpx.AsyncClient(base_url=f"http://{web}", timeout=10) as client:
            while self.running:
                try:
                    r = await client.get("/checkout")
                except httpx.HTTPError as e:
                    self.errors.append(repr(e))
                    continue
                self.answers[r.headers.get("x-upstream", "gateway"), r.status_code] += 1


@asynccontextmanager
async def load(web: Address, clients: int = 4) -> AsyncIterator[Load]:
    running = Load()
    async with trio.open_nursery() as nursery:
        for _ in range(clients):
            nursery.start_soon(running.client, web)
        try:
            yield running
        finally:
            running.running = False
