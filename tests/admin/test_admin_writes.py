"""Refused writes change nothing; stale writers get 412; the guard; the data plane is not the API."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import trio

from gateway.app import Gateway
from tests.admin.admin_support import AdminSetup, issue_locs

INVALID_WRITES: list[tuple[str, str, Any, set[str]]] = [
    # (method, path, body, the locs the 422 must name)
    (
        "PUT",
        "/listeners/web/routes/main/split",
        {"nope": 1},
        {"listeners[0].routes[0].split[0].cluster"},
    ),
    (
        "PUT",
        "/listeners/web/routes/main/split",
        {"a": -1, "b": 2},
        {"listeners[0].routes[0].split[0].weight"},
    ),
    ("PUT", "/listeners/web/routes/main/split", {"a": 0, "b": 0}, {"listeners[0].routes[0].split"}),
    (
        "PUT",
        "/listeners/web/routes/main/split",
        {"a": "ten"},
        {"listeners[0].routes[0].split[0].weight"},
    ),
    ("PUT", "/listeners/web/routes/main/split", [1], {"listeners[0].routes[0].split[0]"}),
    ("PUT", "/listeners/web/routes/main/split", "a", {"listeners[0].routes[0].split"}),
    ("POST", "/clusters/a/endpoints", {"address": "no-port"}, {"clusters[0].endpoints[1].address"}),
    (
        "POST",
        "/clusters/a/endpoints",
        {"address": "127.0.0.1:70000"},
        {"clusters[0].endpoints[1].address"},
    ),
    (
        "POST",
        "/clusters",
        {"name": "d", "endpoints": [{"address": "127.0.0.1:1"}, {"address": "x", "weight": "w"}]},
        {"clusters[3].endpoints[1].address", "clusters[3].endpoints[1].weight"},
    ),
    ("POST", "/clusters", {"name": "d", "colour": "red"}, {"clusters[3].colour"}),
    ("POST", "/clusters", {"endpoints": []}, {"clusters[3].name"}),
    ("POST", "/clusters", [], {"clusters[3]"}),
    ("PATCH", "/clusters/b", {"lb_policy": "fastest"}, {"clusters[1].lb_policy"}),
    ("PATCH", "/clusters/b", {"name": "renamed"}, {"clusters[1]"}),
    ("PATCH", "/clusters/a/endpoints/{a}", {"weight": -3}, {"clusters[0].endpoints[0].weight"}),
    ("PATCH", "/clusters/a/endpoints/{a}", {"state": "sleepy"}, {"clusters[0].endpoints[0].state"}),
    ("DELETE", "/clusters/a", None, {"listeners[0].routes[0].cluster"}),
    (
        "POST",
        "/listeners/web/routes",
        {"match": {"prefix": "/x", "path": "/x"}, "cluster": "ghost"},
        {"listeners[0].routes[1].match", "listeners[0].routes[1].cluster"},
    ),
    (
        "POST",
        "/listeners/web/routes",
        {"match": {"prefix": "x"}, "cluster": "a"},
        {"listeners[0].routes[1].match.prefix"},
    ),
    ("PATCH", "/listeners/web/routes/main", {"timeout": -1}, {"listeners[0].routes[0].timeout"}),
    ("PATCH", "/listeners/web", {"address": "localhost"}, {"listeners[0].address"}),
    (
        "POST",
        "/listeners",
        {"name": "tcp", "address": "127.0.0.1:0", "protocol": "tcp"},
        {"listeners[1].cluster"},
    ),
    ("PUT", "/config", {"listeners": "none"}, {"listeners"}),
    ("PUT", "/config", {"admin": {"address": "0.0.0.0:9901"}}, {"admin"}),
]


@pytest.mark.parametrize(("method", "path", "body", "locs"), INVALID_WRITES)
async def test_invalid_write_is_422_and_changes_nothing(
    setup: AdminSetup, method: str, path: str, body: Any, locs: set[str]
) -> None:
    before = await setup.config()
    path = path.format(a=setup.upstreams["a"])
    r = await setup.admin.request(method, path, json=body)
    assert set(issue_locs(r)) == locs
    assert await setup.config() == before
    assert setup.gateway.control.version == 1
    assert (await setup.web.get("/")).headers["x-upstream"] == "a"


REFUSED_REQUESTS: list[tuple[str, str, dict[str, Any], int, str]] = [
    # (method, path, httpx arguments, status, a word the answer must contain)
    ("POST", "/clusters", {"content": b"{not json"}, 400, "not valid JSON"),
    ("POST", "/clusters", {"content": b""}, 400, "body is required"),
    ("POST", "/clusters", {"content": b"\xff\xfe"}, 400, "UTF-8"),
    ("POST", "/clusters", {"content": b"[" * 200_000 + b"]" * 200_000}, 400, "nested deeper"),
    (
        "PATCH",
        "/clusters/a",
        {"content": b'{"pool": {"idle_timeout": 1e999}}'},
        400,
        "out of range",
    ),
    ("PATCH", "/clusters/a", {"content": b'{"pool": {"idle_timeout": NaN}}'}, 400, "NaN"),
    (
        "PATCH",
        "/clusters/a",
        {"content": b'{"pool": {"max_idle": 1%s}}' % (b"0" * 5000)},
        400,
        "JSON",
    ),
    ("PATCH", "/clusters/a", {"content": b'{"a":' * 40 + b"1" + b"}" * 40}, 400, "nested deeper"),
    (
        "POST",
        "/clusters",
        {"content": b"{}", "headers": {"content-type": "text/plain"}},
        415,
        "text/plain",
    ),
    ("PUT", "/config", {"data": {"a": "b"}}, 415, "application/x-www-form-urlencoded"),
    ("GET", "/clusters/nope", {}, 404, "no cluster 'nope'"),
    ("GET", "/clusters/a/endpoints/1.2.3.4:5", {}, 404, "no endpoint"),
    ("GET", "/clusters/a/endpoints/garbage", {}, 404, "no endpoint"),
    ("DELETE", "/listeners/nope", {}, 404, "no listener 'nope'"),
    ("PUT", "/listeners/nope/routes/0/split", {"json": {"a": 1}}, 404, "no listener"),
    ("GET", "/listeners/web/routes/7", {}, 404, "no route '7'"),
    ("GET", "/nothing-here", {}, 404, "Not Found"),
    ("POST", "/clusters", {"json": {"name": "a"}}, 409, "already exists"),
    ("PUT", "/config", {"json": {}, "headers": {"if-match": "soon"}}, 400, "If-Match"),
]


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "word"), REFUSED_REQUESTS)
async def test_refused_request_names_the_problem(
    setup: AdminSetup, method: str, path: str, kwargs: dict[str, Any], status: int, word: str
) -> None:
    before = await setup.config()
    if "json" not in kwargs and "data" not in kwargs:
        kwargs = {
            **kwargs,
            "headers": {"content-type": "application/json", **kwargs.get("headers", {})},
        }
    r = await setup.admin.request(method, path, **kwargs)
    assert r.status_code == status, r.text
    assert word in r.json()["detail"]
    assert await setup.config() == before


async def test_oversized_body_is_413(setup: AdminSetup) -> None:
    # a raw socket: the answer comes before the body is all sent, which httpx takes badly
    assert setup.gateway.admin_address is not None
    address = setup.gateway.admin_address
    size = 2 << 20
    stream = await trio.open_tcp_stream(address.host, address.port)
    async with stream:
        head = (
            f"POST /clusters HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            f"Content-Length: {size}\r\n\r\n"
        ).encode()

        async def send_body() -> None:
            try:
                await stream.send_all(head + b"[" * size)
            except trio.BrokenResourceError:
                pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_body)
            answer = b""
            while b"larger" not in answer:
                piece = await stream.receive_some(65536)
                assert piece, answer
                answer += piece
            nursery.cancel_scope.cancel()
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert setup.gateway.control.version == 1


async def test_stale_if_match_is_412_for_all_but_one(setup: AdminSetup) -> None:
    _, etag = await setup.config()
    statuses: list[int] = []

    async def write(i: int) -> None:
        r = await setup.admin.put(
            "/listeners/web/routes/main/split", json={"a": i, "b": 1}, headers={"If-Match": etag}
        )
        statuses.append(r.status_code)
        if r.status_code == 412:
            assert r.headers["etag"] == '"2"'

    async with trio.open_nursery() as nursery:
        for i in range(12):
            nursery.start_soon(write, i)
    assert sorted(statuses) == [200] + [412] * 11
    assert setup.gateway.control.version == 2
    # a writer who read the new version goes through; W/ and bare forms are understood
    for n, header in enumerate(('W/"2"', "3", "*")):
        r = await setup.admin.patch(
            "/clusters/b", json={"pool": {"max_idle": n}}, headers={"If-Match": header}
        )
        assert r.status_code == 200, r.text


async def test_data_plane_listener_is_not_the_admin_api(setup: AdminSetup) -> None:
    for path in ("/config", "/ready", "/openapi.json"):
        r = await setup.web.get(path)
        assert r.headers["x-upstream"] == "a" and r.json()["path"] == path
    r = await setup.web.post("/drain", json={"grace": 0})
    assert r.headers["x-upstream"] == "a"
    assert setup.gateway.control.draining is False


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("localhost", True),
        ("localhost:1234", True),
        ("127.0.0.1", True),
        ("[::1]:80", True),
        ("evil.example", False),
        ("evil.example:{port}", False),
        ("127.0.0.1.nip.io:{port}", False),
        ("10.0.0.1:{port}", False),
        ("", False),
    ],
)
async def test_host_must_be_the_admin_address_or_localhost(
    setup: AdminSetup, host: str, allowed: bool
) -> None:
    assert setup.gateway.admin_address is not None
    host = host.format(port=setup.gateway.admin_address.port)
    r = await setup.admin.get("/config", headers={"Host": host})
    assert r.status_code == (200 if allowed else 403), r.text
    r = await setup.admin.post("/drain", json={}, headers={"Host": host})
    assert r.status_code == (202 if allowed else 403)
    assert setup.gateway.control.draining is allowed


async def test_api_key_is_required_on_every_request(
    start_admin: Callable[..., Awaitable[Gateway]], caplog: pytest.LogCaptureFixture
) -> None:
    key = "k3y-that-must-not-leak"
    gateway = await start_admin(api_key=key)
    async with httpx.AsyncClient(base_url=f"http://{gateway.admin_address}") as client:
        # (/, /docs and /openapi.json are the same for every gateway: no key needed,
        # test_admin_index.py)
        for path in ("/config", "/ready", "/status", "/clusters/a"):
            r = await client.get(path)
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
            assert key not in r.text
        for headers in (
            {"Authorization": "Bearer wrong"},
            {"X-API-Key": key[:-1]},
            {"X-API-Key": key + "x"},
            {"Authorization": key},
            {"Authorization": f"Basic {key}"},
        ):
            assert (await client.get("/config", headers=headers)).status_code == 401
        r = await client.post("/drain", json={})
        assert r.status_code == 401 and gateway.control.draining is False
        assert (await client.get("/config", headers={"Authorization": f"Bearer {key}"})).is_success
        assert (await client.get("/config", headers={"Authorization": f"bearer {key}"})).is_success
        assert (await client.get("/config", headers={"X-API-Key": key})).is_success
        r = await client.put("/clusters/a/endpoints/x", json={}, headers={"X-API-Key": key})
        assert r.status_code == 404
    assert key not in caplog.text
