"""Route matching end to end: each match kind, the first match winning across kinds, a
header canary, through real clients (httpx, curl) and real upstreams on loopback."""

from __future__ import annotations

import shutil
from typing import Any

import httpx
import pytest
import trio

from gateway.app import Gateway
from tests.conftest import StartGateway, StartUpstream, simple_config

#: first match wins: each route below is listed before the ones it must beat
ROUTES: list[dict[str, Any]] = [
    {"match": {"regex": "/v[0-9]+/users/[^/]+"}, "cluster": "regex"},
    {"match": {"path": "/api/exact"}, "cluster": "exact"},
    {"match": {"prefix": "/api", "methods": ["POST", "PUT"]}, "cluster": "writes"},
    {
        "match": {"prefix": "/api", "headers": [{"name": "x-canary", "exact": "1"}]},
        "cluster": "canary",
    },
    {
        "match": {"prefix": "/api", "headers": [{"name": "x-beta", "present": True}]},
        "cluster": "beta",
    },
    {
        "match": {"prefix": "/api", "headers": [{"name": "x-env", "regex": "st[a-z]+"}]},
        "cluster": "env",
    },
    {
        "match": {"prefix": "/api", "headers": [{"name": "x-tenant", "prefix": "acme-"}]},
        "cluster": "tenant",
    },
    {
        "match": {
            "prefix": "/api",
            "headers": [{"name": "x-region", "exact": "eu", "invert": True}],
        },
        "cluster": "not_eu",
    },
    {"match": {"prefix": "/api"}, "cluster": "api"},
    {"match": {"prefix": "/q", "query": [{"name": "debug", "present": True}]}, "cluster": "debug"},
    {"match": {"prefix": "/q", "query": [{"name": "v", "exact": "2"}]}, "cluster": "v2"},
    {"match": {"prefix": "/q", "query": [{"name": "id", "regex": "[0-9]+"}]}, "cluster": "numeric"},
    {
        "match": {"prefix": "/", "headers": [{"name": "x-session", "absent": True}]},
        "cluster": "anonymous",
    },
    {"match": {"prefix": "/"}, "cluster": "default"},
]

CASES = [
    # (method, path, headers, the cluster that must answer)
    ("GET", "/v2/users/alice", {}, "regex"),
    ("GET", "/v2/users/alice/", {}, "anonymous"),  # a regex matches the whole path
    ("GET", "/v2/users/alice?x=1", {}, "regex"),  # without the query string
    ("POST", "/api/exact", {}, "exact"),  # the exact path is listed before the writes
    ("POST", "/api/orders", {}, "writes"),
    ("GET", "/api/orders", {"x-canary": "1"}, "canary"),
    ("GET", "/api/orders", {"x-canary": "0", "x-region": "eu"}, "api"),
    ("GET", "/api/orders", {"x-beta": "", "x-region": "eu"}, "beta"),  # present, even empty
    ("GET", "/api/orders", {"x-env": "staging", "x-region": "eu"}, "env"),
    ("GET", "/api/orders", {"x-env": "stagingX1", "x-region": "eu"}, "api"),
    ("GET", "/api/orders", {"x-tenant": "acme-eu", "x-region": "eu"}, "tenant"),
    ("GET", "/api/orders", {"x-region": "us"}, "not_eu"),
    ("GET", "/api/orders", {}, "not_eu"),  # inverted: a missing header is "not eu"
    ("GET", "/api/orders", {"x-region": "eu"}, "api"),
    ("PUT", "/api/orders", {"x-canary": "1"}, "writes"),  # listed before the canary
    ("GET", "/q?debug", {}, "debug"),
    ("GET", "/q?a=1&v=2", {}, "v2"),
    ("GET", "/q?v=3&id=42", {}, "numeric"),
    ("GET", "/q?id=42x", {"x-session": "s"}, "default"),
    ("GET", "/other", {}, "anonymous"),
    ("GET", "/other", {"x-session": "s"}, "default"),
]


async def matching_gateway(start_upstream: StartUpstream, start_gateway: StartGateway) -> Gateway:
    names = [route["cluster"] for route in ROUTES]
    ups = {name: [await start_upstream(name)] for name in names}
    return await start_gateway(simple_config(ups, routes=ROUTES))


async def test_each_match_kind_and_the_first_match_wins_across_kinds(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    gw = await matching_gateway(start_upstream, start_gateway)
    base = f"http://{gw.listener_address('web')}"
    async with httpx.AsyncClient(base_url=base) as client:
        for method, path, headers, expected in CASES:
            r = await client.request(method, path, headers=headers)
            assert r.status_code == 200, (method, path, r.text)
            assert r.headers["x-upstream"] == expected, (method, path, headers)


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
async def test_curl_sees_the_same_routes(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    gw = await matching_gateway(start_upstream, start_gateway)
    base = f"http://{gw.listener_address('web')}"
    for method, path, headers, expected in CASES[:8]:
        args = ["curl", "-s", "-o", "/dev/null", "-D", "-", "-X", method, base + path]
        for name, value in headers.items():
            # curl drops a header given an empty value unless it is written "name;"
            args += ["-H", f"{name}: {value}" if value else f"{name};"]
        done = await trio.run_process(args, capture_stdout=True)
        head = done.stdout.decode("latin-1").lower()
        assert f"x-upstream: {expected}\r\n" in head, (method, path, head)


async def test_no_route_is_a_404(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    routes = [{"match": {"path": "/only", "methods": ["GET"]}, "cluster": "a"}]
    gw = await start_gateway(simple_config({"a": [await start_upstream("a")]}, routes=routes))
    async with httpx.AsyncClient(base_url=f"http://{gw.listener_address('web')}") as client:
        assert (await client.get("/only")).status_code == 200
        assert (await client.post("/only")).status_code == 404
        assert (await client.get("/only/more")).status_code == 404


async def test_a_header_canary_is_a_route_before_the_default(
    start_upstream: StartUpstream, start_gateway: StartGateway
) -> None:
    """The README's header canary: ``x-canary: 1`` goes to v2, everything else to v1."""
    routes = [
        {
            "name": "canary",
            "match": {"prefix": "/", "headers": [{"name": "x-canary", "exact": "1"}]},
            "cluster": "v2",
        },
        {"name": "main", "match": {"prefix": "/"}, "cluster": "v1"},
    ]
    ups = {"v1": [await start_upstream("v1")], "v2": [await start_upstream("v2")]}
    gw = await start_gateway(simple_config(ups, routes=routes))
    async with httpx.AsyncClient(base_url=f"http://{gw.listener_address('web')}") as client:
        seen = [
            (
                await client.get(f"/page/{i}", headers={"x-canary": "1"} if i % 3 == 0 else {})
            ).headers["x-upstream"]
            for i in range(30)
        ]
    assert seen == ["v2" if i % 3 == 0 else "v1" for i in range(30)]
