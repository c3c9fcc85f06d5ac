"""Active health checks of ``type: grpc``: the hand-written ``grpc.health.v1`` messages
against protobuf's own, one check against grpcio's health servicer, and a gateway
marking an endpoint whose servicer says NOT_SERVING unhealthy."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import httpx
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from hypothesis import given
from hypothesis import strategies as st

from gateway.cluster.health import check_endpoint, health_request, serving_status
from gateway.config import Address
from policies.errors import InvalidSetting
from policies.health import HealthCheckConfig
from tests.conftest import StartGateway, simple_config, wait_until
from tests.gateway.grpc_support import channel, in_thread, start_server, unary
from tests.gateway.tls_support import Pki

GRPC_CHECK = HealthCheckConfig(type="grpc", timeout=2.0)


def _framed(message: bytes) -> bytes:
    return b"\x00" + len(message).to_bytes(4, "big") + message


@given(st.text(max_size=300))
def test_the_request_is_protobufs_health_check_request(service: str) -> None:
    expected = health_pb2.HealthCheckRequest(service=service).SerializeToString()
    assert health_request(service) == _framed(expected)


@given(st.integers(0, 2**31 - 1))
def test_the_response_status_is_read_as_protobuf_writes_it(status: int) -> None:
    body = health_pb2.HealthCheckResponse(status=status).SerializeToString()  # type: ignore[arg-type]
    assert serving_status(_framed(body)) == status


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (_framed(b""), 0),  # no field: UNKNOWN
        (_framed(b"\x08\x01"), 1),
        (_framed(b"\x12\x03abc\x08\x02"), 2),  # an unknown field skipped
        (b"", None),
        (b"\x01\x00\x00\x00\x00", None),  # compressed
        (_framed(b"\x08\x01")[:-1], None),  # shorter than its length
        (_framed(b"\x08"), None),  # a varint cut short
        (_framed(b"\x0b\x01"), None),  # a group: not in this message
    ],
)
def test_malformed_responses(body: bytes, status: int | None) -> None:
    assert serving_status(body) == status


def test_service_is_for_grpc_checks_only() -> None:
    assert HealthCheckConfig(type="grpc", service="test.Echo").service == "test.Echo"
    with pytest.raises(InvalidSetting):
        HealthCheckConfig(type="http", service="test.Echo")
    with pytest.raises(InvalidSetting):
        HealthCheckConfig(type="grpc", send="x")


@pytest.fixture
def health_server() -> Iterator[tuple[health.HealthServicer, Address]]:
    servicer = health.HealthServicer()
    handler = grpc.method_handlers_generic_handler("unused.Service", {})
    server, port = start_server(handler)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    servicer.set("test.Echo", health_pb2.HealthCheckResponse.SERVING)
    yield servicer, Address("127.0.0.1", port)
    server.stop(None)


async def test_a_check_against_grpcios_servicer(
    health_server: tuple[health.HealthServicer, Address],
    closed_address: Callable[[], Address],
) -> None:
    servicer, address = health_server
    outcome = await check_endpoint(address, GRPC_CHECK, "api")
    assert (outcome.passed, outcome.detail) == (True, "SERVING")
    service = HealthCheckConfig(type="grpc", service="test.Echo", timeout=2.0)
    assert (await check_endpoint(address, service, "api")).passed
    servicer.set("test.Echo", health_pb2.HealthCheckResponse.NOT_SERVING)
    outcome = await check_endpoint(address, service, "api")
    assert (outcome.passed, outcome.detail) == (False, "NOT_SERVING")
    unknown = HealthCheckConfig(type="grpc", service="no.Such", timeout=2.0)
    outcome = await check_endpoint(address, unknown, "api")
    assert (outcome.passed, outcome.detail) == (False, "grpc-status 5")  # NOT_FOUND
    outcome = await check_endpoint(closed_address(), GRPC_CHECK, "api")
    assert (outcome.passed, outcome.detail) == (False, "connect refused")


async def test_the_gateway_marks_a_not_serving_endpoint_unhealthy(
    start_gateway: StartGateway,
) -> None:
    servers = []
    servicers = []
    for _ in range(2):
        servicer = health.HealthServicer()
        server, port = start_server()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        servicer.set("test.Echo", health_pb2.HealthCheckResponse.SERVING)
        servers.append((server, Address("127.0.0.1", port)))
        servicers.append(servicer)
    try:
        data = simple_config({"api": [address for _, address in servers]})
        data["clusters"][0]["health_check"] = {
            "type": "grpc",
            "service": "test.Echo",
            "interval": 0.05,
            "no_traffic_interval": 0.05,
            "interval_jitter": 0.02,
            "timeout": 1.0,
            "unhealthy_threshold": 2,
            "healthy_threshold": 2,
        }
        gateway = await start_gateway(data, admin=True)
        first, second = (str(address) for _, address in servers)
        async with httpx.AsyncClient(base_url=f"http://{gateway.admin_address}") as admin:

            async def verdicts() -> dict[str, str]:
                r = await admin.get("/clusters/api/health")
                return {e["address"]: e["verdict"] for e in r.json()["endpoints"]}

            await wait_until(lambda: _equal(verdicts(), {first: "healthy", second: "healthy"}))
            servicers[1].set("test.Echo", health_pb2.HealthCheckResponse.NOT_SERVING)
            await wait_until(
                lambda: _equal(verdicts(), {first: "healthy", second: "/failed_active_hc"})
            )
            r = await admin.get("/clusters/api/health")
            [view] = [e for e in r.json()["endpoints"] if e["address"] == second]
            assert view["health_check"]["last"]["detail"] == "NOT_SERVING"
            servicers[1].set("test.Echo", health_pb2.HealthCheckResponse.SERVING)
            await wait_until(lambda: _equal(verdicts(), {first: "healthy", second: "healthy"}))
    finally:
        for server, _ in servers:
            server.stop(None)


async def test_grpc_over_tls_checks_and_calls(start_gateway: StartGateway, pki: Pki) -> None:
    """A ``protocol: http2`` cluster with ``tls``: the check and the calls speak h2 by ALPN
    to a grpcio server that serves TLS only."""
    servicer = health.HealthServicer()
    server, port = start_server(tls=pki.issue("upstream", "api.internal"))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    servicer.set("test.Echo", health_pb2.HealthCheckResponse.SERVING)
    address = Address("127.0.0.1", port)
    try:
        data = simple_config({"api": [address]})
        data["clusters"][0].update(
            protocol="http2",
            tls={"ca": pki.ca_file, "sni": "api.internal"},
            health_check={"type": "grpc", "service": "test.Echo", "interval": 0.05,
                          "no_traffic_interval": 0.05, "timeout": 1.0,
                          "healthy_threshold": 1, "unhealthy_threshold": 1},
        )  # fmt: skip
        gateway = await start_gateway(data, admin=True)
        async with httpx.AsyncClient(base_url=f"http://{gateway.admin_address}") as admin:

            async def verdict() -> str:
                r = await admin.get("/clusters/api/health")
                [endpoint] = r.json()["endpoints"]
                return str(endpoint["verdict"])

            await wait_until(lambda: _equal(verdict(), "healthy"))
            servicer.set("test.Echo", health_pb2.HealthCheckResponse.NOT_SERVING)
            await wait_until(lambda: _equal(verdict(), "/failed_active_hc"))
            servicer.set("test.Echo", health_pb2.HealthCheckResponse.SERVING)
            await wait_until(lambda: _equal(verdict(), "healthy"))
        with channel(gateway.listener_address("web")) as chan:
            replies = await in_thread(lambda: [unary(chan)(b"tls %d" % i) for i in range(5)])
        assert replies == [b"tls %d" % i for i in range(5)]
        assert gateway.stats.cluster("api").ssl_handshake >= 2  # the checks' and the calls'
    finally:
        server.stop(None)


async def _equal(got: object, expected: object) -> bool:
    return await got == expected  # type: ignore[misc]
