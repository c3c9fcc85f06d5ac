"""A cluster actor's outlier detection without sockets: the outcome buffer the data path
fills (bounded, drops counted), what the actor does with it (ejects, publishes, counts),
ejections handed to a worker's actor, and nothing at all when the feature is off."""

from __future__ import annotations

import json

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given

from gateway.cluster.actor import ClusterHandle, HealthVerdicts, OutcomesReported, run_cluster
from gateway.cluster.outcomes import OUTCOMES_WAITING, OutcomeBuffer
from gateway.config import Cluster, Config, structure, unstructure
from gateway.errors import ConfigError, PoolExhausted, UpstreamConnectError, UpstreamResetError
from gateway.observe.events import EventLog
from gateway.observe.stats import ClusterStats
from gateway.proxy.outcome import TCP_CONNECTED, charge_attempt, charge_connected
from policies.outlier import OutlierConfig
from policies.retry import Failure
from tests.conftest import wait_until
from tests.strategies import outlier_configs

A, B, C = "127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"


def _cluster(**outlier_detection: object) -> Cluster:
    return structure(
        Cluster,
        {
            "name": "api",
            "endpoints": [{"address": A}, {"address": B}, {"address": C}],
            "outlier_detection": {
                "consecutive_5xx": 3,
                "base_ejection_time": 0.2,
                "max_ejection_percent": 34,
                **outlier_detection,
            },
        },
    )


def test_the_buffer_is_bounded_and_counts_what_it_drops() -> None:
    buffer = OutcomeBuffer(capacity=2)
    buffer.add(A, 200)
    buffer.add(B, Failure.CONNECT)
    buffer.add(C, 503)
    assert len(buffer) == 2 and buffer.dropped == 1
    assert buffer.take() == [(A, 200), (B, Failure.CONNECT)]
    assert buffer.take() == [] and buffer.take_dropped() == 1 and buffer.take_dropped() == 0
    buffer.add(C, 503)  # room again after a take
    assert buffer.take() == [(C, 503)]


def test_a_run_of_failures_at_the_threshold_wakes_the_detector_once() -> None:
    buffer = OutcomeBuffer()
    inbox, waiting = trio.open_memory_channel[object](1)
    buffer.wake_at, buffer.inbox = 3, inbox
    for result in (502, Failure.RESET):
        buffer.add("a", result)
    buffer.add("b", 503)  # another endpoint's run is its own
    with pytest.raises(trio.WouldBlock):
        waiting.receive_nowait()
    assert buffer.suspects == set()
    buffer.add("a", Failure.CONNECT)  # the third in a row
    assert waiting.receive_nowait() is OUTCOMES_WAITING
    assert buffer.suspects == {"a"}  # avoided by new attempts until the detector judges
    buffer.add("a", 500)  # the run goes on: no second wake-up before a take
    with pytest.raises(trio.WouldBlock):
        waiting.receive_nowait()
    buffer.add("b", 200)  # a success ends b's run
    for _ in range(3):
        buffer.add("b", 504)
    buffer.add("c", 502)
    assert waiting.receive_nowait() is OUTCOMES_WAITING
    inbox.send_nowait("something else")  # the inbox full: a wake-up is dropped, counted
    for _ in range(3):
        buffer.add("c", 502)
    assert (buffer.wakes_dropped, len(buffer.take())) == (1, 13)  # nothing lost
    assert buffer.suspects == set()  # the take hands them to the detector
    assert waiting.receive_nowait() == "something else"
    buffer.add("a", 502)  # a's run goes on after the take: judged again at once
    assert waiting.receive_nowait() is OUTCOMES_WAITING and buffer.suspects == {"a"}


def test_charge_attempt_reports_each_attempt_only_with_a_buffer() -> None:
    stats = ClusterStats("api")
    endpoint = stats.endpoint(A)
    charge_attempt(stats, endpoint, 503, 1.0)  # off: nothing kept anywhere
    assert stats.outcomes is None
    stats.outcomes = buffer = OutcomeBuffer()
    charge_attempt(stats, endpoint, 200, 1.0)
    charge_attempt(stats, endpoint, 0)  # cut short by the client: nobody's fault
    charge_attempt(stats, endpoint, UpstreamConnectError("refused"))
    charge_attempt(stats, endpoint, UpstreamResetError("reset"))
    charge_attempt(stats, endpoint, PoolExhausted("full"))  # the gateway's limit: not reported
    charge_attempt(stats, endpoint, UpstreamConnectError("refused"), request=False)  # tcp
    charge_connected(stats, endpoint)  # tcp: connected, a success
    assert buffer.take() == [
        (A, 200),
        (A, Failure.CONNECT),
        (A, Failure.RESET),
        (A, Failure.CONNECT),
        (A, TCP_CONNECTED),
    ]


async def test_a_cluster_without_outlier_detection_has_no_buffer(nursery: trio.Nursery) -> None:
    stats = ClusterStats("api")
    cluster = attrs.evolve(_cluster(), outlier_detection=None)
    handle = ClusterHandle(cluster, stats=stats)
    await nursery.start(run_cluster, handle)
    assert handle.outcomes is None and stats.outcomes is None
    # turned on by a change, and off again
    await handle.reconfigure(_cluster())
    assert handle.outcomes is not None and stats.outcomes is handle.outcomes
    await handle.reconfigure(cluster)
    assert handle.outcomes is None and stats.outcomes is None


async def test_results_in_the_buffer_eject_and_the_time_returns(nursery: trio.Nursery) -> None:
    stats, events = ClusterStats("api"), EventLog()
    handle = ClusterHandle(_cluster(), stats=stats, events=events)
    await nursery.start(run_cluster, handle)
    buffer = stats.outcomes
    assert buffer is not None
    for _ in range(3):
        buffer.add(B, 500)
    await wait_until(lambda: handle.ejected == {B})
    assert {s.key: str(s.health) for s in handle.snapshot.all_endpoints} == {
        A: "healthy",
        B: "/failed_outlier_check",
        C: "healthy",
    }
    picked = {r.key for r in (handle.snapshot.pick(1.0) for _ in range(20)) if r}
    assert picked == {A, C}
    assert handle.ejections[B].times_ejected == 1
    assert stats.outlier_detection_ejections_active == 1
    assert stats.outlier_detection_ejections_enforced_consecutive_5xx == 1
    # the cap: one of three; C's failures overflow
    await handle.inbox.send(OutcomesReported(tuple((C, Failure.CONNECT) for _ in range(5))))
    await wait_until(lambda: stats.outlier_detection_ejections_overflow > 0)
    assert handle.ejected == {B}
    await wait_until(lambda: handle.ejected == frozenset(), within=3)
    assert stats.outlier_detection_ejections_active == 0
    assert [(e.kind, e.endpoint, e.new) for e in events.recent()] == [
        ("ejection", B, "ejected"),
        ("ejection", B, "serving"),
    ]


async def test_a_worker_actor_serves_the_ejections_it_is_given(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    stats = ClusterStats("api")
    handle = ClusterHandle(_cluster(), stats=stats, detect_outliers=False)
    await nursery.start(run_cluster, handle)
    buffer = stats.outcomes
    assert buffer is not None  # it keeps the results, for the primary
    for _ in range(5):
        buffer.add(B, 500)
    await handle.inbox.send(HealthVerdicts({}, frozenset({C})))
    await wait_until(lambda: handle.ejected == {C})
    assert {s.key for s in handle.snapshot.all_endpoints if not s.health.healthy} == {C}
    await trio.sleep(1)  # (virtual time) a detecting actor would have taken the buffer
    assert len(buffer) == 5 and handle.ejected == {C}


def test_outlier_detection_round_trips_and_errors_name_the_field() -> None:
    config = Config(clusters=(_cluster(),), version=1)
    assert structure(Config, json.loads(json.dumps(unstructure(config)))) == config
    assert config.clusters[0].outlier_detection == OutlierConfig(
        consecutive_5xx=3, base_ejection_time=0.2, max_ejection_percent=34
    )
    data = {"clusters": [{"name": "api", "outlier_detection": {"max_ejection_percent": 101}}]}
    with pytest.raises(ConfigError) as caught:
        structure(Config, data)
    assert [i.path for i in caught.value.issues] == [
        "clusters[0].outlier_detection.max_ejection_percent"
    ]


@given(outlier_detection=outlier_configs())
def test_any_outlier_detection_round_trips_through_json(outlier_detection: OutlierConfig) -> None:
    # as the state file and the admin API carry it
    cluster = Cluster("api", endpoints=(), outlier_detection=outlier_detection)
    config = Config(clusters=(cluster,), version=1)
    assert structure(Config, json.loads(json.dumps(unstructure(config)))) == config
