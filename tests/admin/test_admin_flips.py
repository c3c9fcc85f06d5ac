"""A route's split flipped again and again under steady traffic: nothing fails, nothing strays."""

from __future__ import annotations

import math

import attrs
import httpx
import trio

from tests.admin.admin_support import AdminSetup
from tests.conftest import wait_until

#: each version sends everything to one cluster, so a stray request is unmistakable
SPLITS = ({"a": 1, "b": 0, "c": 0}, {"a": 0, "b": 1, "c": 0}, {"a": 0, "b": 0, "c": 1})
#: writes of the split, each followed by traffic before the next
FLIPS = 60


@attrs.frozen
class Flip:
    """A version, the clusters it sends to, and when its write was sent and acknowledged."""

    version: int
    clusters: frozenset[str]
    sent: float
    acked: float


@attrs.frozen
class Served:
    started: float
    ended: float
    status: int
    upstream: str | None


def valid_clusters(flips: list[Flip], started: float, ended: float) -> set[str]:
    """Clusters of every version that may have been in force at some instant of [started, ended].

    Version ``flips[i]`` takes effect somewhere in ``[sent, acked]`` of its own write and
    stays until somewhere in ``[sent, acked]`` of the next one.
    """
    valid: set[str] = set()
    for i, flip in enumerate(flips):
        until = flips[i + 1].acked if i + 1 < len(flips) else math.inf
        if flip.sent <= ended and until >= started:
            valid |= flip.clusters
    return valid


async def test_flipping_split_drops_nothing(setup: AdminSetup) -> None:
    flips = [Flip(1, frozenset({"a"}), -math.inf, -math.inf)]
    served: list[Served] = []

    async def flipper() -> None:
        for n in range(1, FLIPS + 1):
            weights = SPLITS[n % len(SPLITS)]
            sent = trio.current_time()
            r = await setup.admin.put("/listeners/web/routes/main/split", json=weights)
            acked = trio.current_time()
            assert r.status_code == 200, r.text
            live = frozenset(c for c, w in weights.items() if w > 0)
            flips.append(Flip(int(r.headers["etag"].strip('"')), live, sent, acked))
            # the next flip only once a request begun under this version was answered
            await wait_until(lambda t=acked: any(s.started >= t for s in reversed(served)))

    async def client(i: int, stop: trio.Event) -> None:
        paths = ["/", f"/delay/{5 + 10 * i}"]
        async with httpx.AsyncClient(base_url=str(setup.web.base_url)) as web:
            n = 0
            while not stop.is_set():
                n += 1
                started = trio.current_time()
                try:
                    r = await web.get(paths[n % 2])
                    status, upstream = r.status_code, r.headers.get("x-upstream")
                except httpx.HTTPError as e:
                    status, upstream = 0, repr(e)
                served.append(Served(started, trio.current_time(), status, upstream))

    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        for i in range(4):
            nursery.start_soon(client, i, stop)
        await flipper()
        stop.set()

    versions = [f.version for f in flips]
    assert versions == list(range(1, FLIPS + 2)), "every write made exactly one version"
    failed = [s for s in served if s.status != 200]
    strayed = [s for s in served if s.upstream not in valid_clusters(flips, s.started, s.ended)]
    print(
        f"\n{FLIPS} flips, {len(served)} requests, {len(failed)} failed, "
        f"{len(strayed)} served by a cluster not valid for them"
    )
    assert failed == []
    assert strayed == []
    assert {s.upstream for s in served} == {"a", "b", "c"}
