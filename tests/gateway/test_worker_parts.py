"""The parts of the worker process model that need no process: stats sums, framing, configs."""

from __future__ import annotations

import pickle
import socket

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import Address, Cluster, Config, Discovery, Endpoint, Listener
from gateway.errors import ConfigError, ConfigIssue
from gateway.observe.stats import StatsRegistry
from gateway.observe.stats.export import stats_json
from gateway.observe.stats.merge import absorb, combine, dump, retired, total
from gateway.runtime.link import (
    MAX_FRAME,
    Install,
    Installed,
    LinkClosed,
    Refused,
    Report,
    WorkerLink,
)
from gateway.runtime.workers import resolve_workers, worker_config

# -- stats: dump and absorb ---------------------------------------------------------------


def _worker_registry(requests: list[tuple[int, float]], endpoint: str) -> StatsRegistry:
    """A registry as one worker's data path leaves it after ``requests`` (status, ms)."""
    registry = StatsRegistry()
    listener = registry.listener("web")
    cluster = registry.cluster("api")
    endpoint_stats = cluster.endpoint(endpoint)
    for status, ms in requests:
        listener.downstream_cx_total += 1
        listener.downstream_rq_xx[status // 100] += 1
        listener.downstream_rq_time.record(ms)
        cluster.upstream_rq_xx[status // 100] += 1
        cluster.upstream_rq_time.record(ms)
        endpoint_stats.rq_total += 1
        endpoint_stats.rq_error += status >= 500
    listener.downstream_cx_active = len(requests) % 3
    return registry


requests_strategy = st.lists(
    st.tuples(st.sampled_from([200, 204, 302, 404, 503]), st.floats(0, 100_000)), max_size=40
)


@given(st.lists(requests_strategy, min_size=1, max_size=4))
def test_absorb_sums_every_figure_of_every_worker(
    per_worker: list[list[tuple[int, float]]],
) -> None:
    endpoints = ["10.0.0.1:80", "10.0.0.2:80"]
    workers = [_worker_registry(reqs, endpoints[i % 2]) for i, reqs in enumerate(per_worker)]
    # the oracle: one registry that saw every request itself
    everything = StatsRegistry()
    for i, reqs in enumerate(per_worker):
        one = _worker_registry(reqs, endpoints[i % 2])
        _add_into(everything, one)
    primary = StatsRegistry()
    primary.local_gauges = False
    absorb(primary, [dump(w) for w in workers])
    assert stats_json(primary)["counters"] == stats_json(everything)["counters"]
    assert stats_json(primary)["gauges"] == stats_json(everything)["gauges"]
    merged = primary.listener("web").downstream_rq_time
    expected = everything.listener("web").downstream_rq_time
    assert merged.counts == expected.counts
    assert merged.sum == pytest.approx(expected.sum)
    assert total(dump(workers[0]), "downstream_rq_xx") == len(per_worker[0])


def _add_into(target: StatsRegistry, source: StatsRegistry) -> None:
    absorb(target, [dump(target), dump(source)])


def test_absorb_replaces_rather_than_accumulates() -> None:
    worker = _worker_registry([(200, 1.0)] * 5, "10.0.0.1:80")
    primary = StatsRegistry()
    primary.local_gauges = False
    for _ in range(3):  # every tick and every read absorbs again
        absorb(primary, [dump(worker)])
    assert primary.listener("web").downstream_rq_total == 5
    absorb(primary, [])  # no worker answered: nothing is invented
    assert primary.listener("web").downstream_rq_total == 0


def test_a_dead_workers_figures_keep_their_counters_and_lose_their_gauges() -> None:
    dead = _worker_registry([(200, 1.0)] * 4, "10.0.0.1:80")
    dead.listener("web").downstream_cx_active = 3
    alive = _worker_registry([(503, 2.0)] * 2, "10.0.0.1:80")
    alive.listener("web").downstream_cx_active = 1
    kept = retired(dump(dead))
    assert kept["listeners"]["web"]["downstream_cx_active"] == 0
    both = combine([kept, dump(alive)])
    assert sum(both["listeners"]["web"]["downstream_rq_xx"]) == 6
    assert both["listeners"]["web"]["downstream_cx_active"] == 1
    assert both["clusters"]["api"]["endpoints"]["10.0.0.1:80"]["rq_error"] == 2


def test_a_dump_is_plain_data() -> None:
    data = dump(_worker_registry([(200, 3.0), (503, 7.0)], "10.0.0.1:80"))
    assert pickle.loads(pickle.dumps(data)) == data
    web = data["listeners"]["web"]
    assert web["downstream_rq_xx"][2] == 1 and web["downstream_rq_xx"][5] == 1
    assert data["clusters"]["api"]["endpoints"]["10.0.0.1:80"]["rq_error"] == 1


# -- the link -----------------------------------------------------------------------------


def _pair() -> tuple[WorkerLink, WorkerLink]:
    a, b = socket.socketpair()
    return (
        WorkerLink(trio.SocketStream(trio.socket.from_stdlib_socket(a))),
        WorkerLink(trio.SocketStream(trio.socket.from_stdlib_socket(b))),
    )


async def test_messages_cross_whole_and_in_order() -> None:
    primary, worker = _pair()
    config = Config(listeners=(Listener(name="web", address=Address("127.0.0.1", 0)),))
    big = Installed(7), Report(), Install(config), {"x": "y" * 200_000}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: _send_all(primary, big))
        assert [await worker.receive() for _ in big] == list(big)
    await primary.aclose()
    with pytest.raises(LinkClosed):
        await worker.receive()
    await worker.aclose()


async def _send_all(link: WorkerLink, messages: tuple[object, ...]) -> None:
    for message in messages:
        await link.send(message)


async def test_a_frame_over_the_limit_closes_the_link() -> None:
    primary, worker = _pair()
    await primary.stream.send_all((MAX_FRAME + 1).to_bytes(4, "big"))
    with pytest.raises(LinkClosed, match="over the limit"):
        await worker.receive()
    await primary.aclose()
    await worker.aclose()


async def test_call_is_one_request_and_its_reply() -> None:
    primary, worker = _pair()

    async def answer() -> None:
        assert await worker.receive() == Report()
        await worker.send(Installed(3))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(answer)
        assert await primary.call(Report()) == Installed(3)
    await primary.aclose()
    await worker.aclose()


def test_a_refusal_keeps_the_issues_of_a_config_error() -> None:
    error = ConfigError([ConfigIssue("listeners[0].address", "cannot bind")])
    refused = pickle.loads(pickle.dumps(Refused.of(error)))
    raised = refused.error("worker 1")
    assert isinstance(raised, ConfigError)
    assert [i.path for i in raised.issues] == ["listeners[0].address"]
    assert "worker 1" in str(raised)
    plain = Refused.of(RuntimeError("boom")).error("worker 0")
    assert not isinstance(plain, ConfigError) and "worker 0: boom" in str(plain)


# -- what a worker serves -----------------------------------------------------------------


def test_worker_config_resolves_addresses_and_makes_clusters_static() -> None:
    registered = (Endpoint(Address("10.0.0.9", 80)),)
    config = Config(
        listeners=(Listener(name="web", address=Address("127.0.0.1", 0)),),
        clusters=(
            Cluster(name="fixed", endpoints=(Endpoint(Address("10.0.0.1", 80)),)),
            Cluster(name="found", discovery=Discovery(type="registry")),
        ),
        version=4,
    )
    served = worker_config(
        config, {"web": Address("127.0.0.1", 4321)}, {"found": registered, "fixed": ()}
    )
    assert served.version == 4
    assert served.listeners[0].address == Address("127.0.0.1", 4321)
    fixed, found = served.clusters
    assert fixed == config.clusters[0]  # static clusters are served as configured
    assert found.discovery == Discovery() and found.endpoints == registered


@pytest.mark.parametrize(("value", "count"), [("1", 1), ("3", 3), (2, 2)])
def test_resolve_workers(value: str | int, count: int) -> None:
    assert resolve_workers(value) == count


def test_resolve_workers_auto_and_refusals() -> None:
    assert resolve_workers("auto") >= 1
    for bad in ("0", "-1", "lots"):
        with pytest.raises(ValueError):
            resolve_workers(bad)


def test_filter_counters_are_summed_over_workers() -> None:
    workers = [StatsRegistry(), StatsRegistry()]
    workers[0].filter("web", "http_filter", "audit").error = 2
    workers[1].filter("web", "http_filter", "audit").error = 3
    workers[1].filter("db", "network_filter", "count").error = 1
    primary = StatsRegistry()
    primary.local_gauges = False
    absorb(primary, [dump(w) for w in workers])
    counters = stats_json(primary)["counters"]
    assert counters["listener.web.http_filter.audit.error"] == 5
    assert counters["listener.db.network_filter.count.error"] == 1
