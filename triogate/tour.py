"""``triogate demo --tour``: the banner's commands run in order, each followed by what
changed, observed from the outside (answers counted, the admin API read back).

Each step prints the command it stands for (what a user would type; the tour makes the
same HTTP calls itself, without starting a process per command), then what it saw: a
split moving, a fault answered and counted, a rollout rolled back by its gate and
another one succeeding, an endpoint ejected after its upstream is killed, a toxic's
latency gone once Toxiproxy's API removes it, an answer over TLS. It takes about half a
minute, for a screen recording or a first look.
"""

from __future__ import annotations

import json
import ssl
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Final

import httpx
import trio

from triogate.demo import DB_LATENCY_MS, DB_TOXIC, ROLLOUT_SPEC, DemoWorld

Say = Callable[[str], None]

#: seconds a rollout may take in the tour before it gives up waiting on it
ROLLOUT_PATIENCE: Final = 30.0
#: seconds an ejection may take to be seen
EJECTION_PATIENCE: Final = 10.0


class Tour:
    """The tour's clients and its narration."""

    def __init__(self, world: DemoWorld, say: Say) -> None:
        self.world = world
        self.say = say
        self.web = httpx.AsyncClient(base_url=f"http://{world.listener('web')}", timeout=10)
        self.admin = httpx.AsyncClient(base_url=f"http://{world.admin}", timeout=10)
        self.toxiproxy = httpx.AsyncClient(base_url=f"http://{world.toxiproxy}", timeout=10)

    async def aclose(self) -> None:
        for client in (self.web, self.admin, self.toxiproxy):
            await client.aclose()

    def command(self, text: str) -> None:
        self.say(f"\n$ {text}")

    def saw(self, text: str) -> None:
        self.say(f"  -> {text}")

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """One admin API call, as ``triogate ctl`` or curl makes it; its JSON answer."""
        response = await self.admin.request(method, path, json=body)
        response.raise_for_status()
        return response.json() if response.content else None

    async def answers(self, path: str, count: int) -> Counter[str]:
        """``count`` requests to ``web``: who answered each (or its status, if not 200)."""
        seen: Counter[str] = Counter()
        for _ in range(count):
            response = await self.web.get(path)
            upstream = response.headers.get("x-upstream")
            seen[
                upstream if response.status_code == 200 and upstream else str(response.status_code)
            ] += 1
        return seen

    async def counter(self, name: str) -> int:
        stats = await self.call("GET", "/stats")
        value: int = stats["counters"].get(name, 0)
        return value


def _shares(seen: Counter[str]) -> str:
    return ", ".join(f"{who} {n}" for who, n in sorted(seen.items()))


async def run_tour(world: DemoWorld, *, say: Say) -> None:
    """Run the tour against a running demo; returns when it is over."""
    started = time.monotonic()
    tour = Tour(world, say)
    say(f"triogate demo --tour: {len(world.upstreams)} built-in upstreams behind a gateway")
    say(f"  dashboard  http://{world.admin}/dashboard   (watch it while the tour runs)")
    try:
        await _split(tour)
        await _fault_and_rollback(tour)
        await _rollout(tour)
        await _ejection(tour)
        await _toxic(tour)
        await _tls(tour)
    finally:
        await tour.aclose()
    elapsed = time.monotonic() - started
    say(f"\ntour done in {elapsed:.0f} s; `{world.command} demo` keeps it running.")


async def _split(tour: Tour) -> None:
    tour.command(f"curl -s http://{tour.world.listener('web')}/   # 20 times")
    before = await tour.answers("/", 20)
    tour.saw(f"the canary route shop (v1 90, v2 10) answered: {_shares(before)}")
    tour.command(f"{tour.world.ctl} split web shop v1=50 v2=50")
    await tour.call("PUT", "/listeners/web/routes/shop/split", {"v1": 50, "v2": 50})
    after = await tour.answers("/", 20)
    split = await tour.call("GET", "/listeners/web/routes/shop/split")
    tour.saw(
        f"split moved: now {json.dumps(split)}; of 20 requests v2 answered {after['v2']} "
        f"(before: {before['v2']})"
    )


async def _fault_and_rollback(tour: Tour) -> None:
    admin = tour.world.admin
    tour.command(
        "curl -s -X PATCH -H 'content-type: application/json' -d '{\"percent\": 100}' "
        f"http://{admin}/faults/v2-errors"
    )
    counted = await tour.counter("listener.web.fault.aborts_injected")
    await tour.call("PATCH", "/faults/v2-errors", {"percent": 100})
    seen = await tour.answers("/", 20)
    now = await tour.counter("listener.web.fault.aborts_injected")
    tour.saw(
        f"fault on: of 20 requests {seen['503']} got 503 (all of v2's share), "
        f"{seen['v1']} went to v1; fault counted: "
        f"listener.web.fault.aborts_injected {counted} -> {now}"
    )
    directory = tour.world.directory
    tour.command(f"{tour.world.ctl} rollout start --file {directory}/rollout.yaml")
    view = await _watch_rollout(tour, "canary")
    breach = view.get("breach") or {}
    tour.saw(
        f"rollout canary {view['state']}: gate {breach.get('gate')} breached "
        f"({breach.get('value', 0):.2f} > {breach.get('limit')}), v2 back to {view['weight']}%"
    )
    await tour.call("DELETE", "/rollouts/canary")
    tour.command(
        "curl -s -X PATCH -H 'content-type: application/json' -d '{\"percent\": 0}' "
        f"http://{admin}/faults/v2-errors"
    )
    await tour.call("PATCH", "/faults/v2-errors", {"percent": 0})
    tour.saw("fault off")


async def _rollout(tour: Tour) -> None:
    tour.command(
        f"{tour.world.ctl} rollout start --file {tour.world.directory}/rollout.yaml   # again"
    )
    view = await _watch_rollout(tour, "canary")
    tour.saw(f"rollout canary {view['state']}: v2 at {view['weight']}%")


async def _watch_rollout(tour: Tour, name: str) -> dict[str, Any]:
    """Start the demo's rollout and narrate each move of its split until it finishes,
    sending requests meanwhile (its gates judge the canary's own)."""
    await tour.call("POST", "/rollouts", ROLLOUT_SPEC)
    weight = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_load, tour)
        with trio.move_on_after(ROLLOUT_PATIENCE):
            while True:
                view: dict[str, Any] = await tour.call("GET", f"/rollouts/{name}")
                if view["weight"] != weight:
                    weight = view["weight"]
                    tour.saw(
                        f"split moved: v2 at {weight}% (step {view['step'] + 1}, {view['state']})"
                    )
                if view["state"] not in ("running", "paused"):
                    break
                await trio.sleep(0.2)
        nursery.cancel_scope.cancel()
    return view


async def _load(tour: Tour) -> None:
    while True:
        await tour.answers("/", 5)
        await trio.sleep(0.02)


async def _ejection(tour: Tour) -> None:
    seen = await tour.answers("/api/orders", 10)
    tour.command(f"curl -s http://{tour.world.listener('web')}/api/orders   # 10 times")
    tour.saw(f"cluster api answered: {_shares(seen)}")
    victim = tour.world.upstreams["api-2"]
    victim.scope.cancel()
    tour.say(f"\n(the tour kills upstream api-2 at {victim.address}: its port now refuses)")
    tour.command(f"curl -s http://{tour.world.listener('web')}/api/orders   # 10 times")
    seen = await tour.answers("/api/orders", 10)
    tour.saw(f"answered: {_shares(seen)} (connect failures on api-2 retried on api-1)")
    tour.command(f"{tour.world.ctl} clusters   # or GET /clusters/api/health")
    ejection = None
    with trio.move_on_after(EJECTION_PATIENCE):
        while ejection is None:
            health = await tour.call("GET", "/clusters/api/health")
            for endpoint in health["endpoints"]:
                found = endpoint.get("ejection") or {}
                if endpoint["address"] == str(victim.address) and found.get("ejected"):
                    ejection = found
            if ejection is None:
                await tour.answers("/api/orders", 2)
                await trio.sleep(0.1)
    if ejection is None:
        tour.saw("api-2 was not ejected (yet)")
    else:
        tour.saw(
            f"api-2 ejected by outlier detection ({ejection.get('reason')}); api-1 serves alone"
        )


async def _toxic(tour: Tour) -> None:
    db = tour.world.listener("db")
    tour.command(f"curl -s -o /dev/null -w '%{{time_total}} s\\n' http://{db}/")
    slow = await _timed_get(f"http://{db}/")
    tour.saw(f"{slow * 1000:.0f} ms through the tcp proxy db ({DB_LATENCY_MS} ms latency toxic)")
    tour.command(f"curl -s -X DELETE http://{tour.world.toxiproxy}/proxies/db/toxics/{DB_TOXIC}")
    response = await tour.toxiproxy.delete(f"/proxies/db/toxics/{DB_TOXIC}")
    response.raise_for_status()
    fast = await _timed_get(f"http://{db}/")
    tour.saw(f"toxic removed through Toxiproxy's API: {fast * 1000:.0f} ms now")


async def _timed_get(url: str) -> float:
    """Seconds for one request on a new connection."""
    async with httpx.AsyncClient(timeout=10) as client:
        started = time.monotonic()
        response = await client.get(url)
        response.raise_for_status()
        return time.monotonic() - started


async def _tls(tour: Tour) -> None:
    edge = tour.world.listener("edge")
    ca = tour.world.ca
    tour.command(f"curl -s --cacert {ca} https://localhost:{edge.port}/api")
    context = ssl.create_default_context(cafile=str(ca))
    async with httpx.AsyncClient(verify=context, timeout=10) as client:
        response = await client.get(f"https://localhost:{edge.port}/api")
    tour.saw(
        f"TLS from the demo's CA: {response.status_code} from "
        f"{response.headers.get('x-upstream')} over {response.http_version}"
    )
