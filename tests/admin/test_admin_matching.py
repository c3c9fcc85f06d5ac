"""Routes with the richer match, a sticky split and a mirror through the admin API:
created, changed and refused whole (422 naming each field; the config untouched)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.admin.admin_support import AdminSetup, issue_locs
from tests.conftest import wait_until

CANARY: dict[str, Any] = {
    "name": "canary",
    "match": {
        "regex": "/v[0-9]+/.*",
        "methods": ["GET"],
        "headers": [{"name": "x-canary", "exact": "1"}, {"name": "x-debug", "absent": True}],
        "query": [{"name": "beta", "present": True}],
    },
    "cluster": "b",
}


async def upstream_of(setup: AdminSetup, path: str, **headers: str) -> str:
    r = await setup.web.get(path, headers=headers)
    assert r.status_code == 200, r.text
    return r.headers["x-upstream"]


async def test_a_route_with_every_match_kind_is_created_read_and_patched(
    setup: AdminSetup,
) -> None:
    r = await setup.admin.post("/listeners/web/routes?before=main", json=CANARY)
    assert r.status_code == 201, r.text
    match = r.json()["match"]
    assert match["regex"] == "/v[0-9]+/.*" and match["methods"] == ["GET"]
    assert match["headers"][1] == {
        "name": "x-debug",
        "exact": None,
        "prefix": None,
        "regex": None,
        "present": False,
        "absent": True,
        "invert": False,
    }
    assert await upstream_of(setup, "/v2/x?beta", **{"x-canary": "1"}) == "b"
    assert await upstream_of(setup, "/v2/x?beta", **{"x-canary": "1", "x-debug": "1"}) == "a"
    assert await upstream_of(setup, "/v2/x", **{"x-canary": "1"}) == "a"
    assert await upstream_of(setup, "/vx/x?beta", **{"x-canary": "1"}) == "a"
    # a merge patch replaces the header list: now any x-canary but "0"
    patch = {"match": {"headers": [{"name": "x-canary", "exact": "0", "invert": True}]}}
    r = await setup.admin.patch("/listeners/web/routes/canary", json=patch)
    assert r.status_code == 200, r.text
    assert await upstream_of(setup, "/v2/x?beta", **{"x-debug": "1"}) == "b"
    assert await upstream_of(setup, "/v2/x?beta", **{"x-canary": "0"}) == "a"


async def test_a_sticky_split_is_set_through_the_route_and_the_split_knob(
    setup: AdminSetup,
) -> None:
    r = await setup.admin.put("/listeners/web/routes/main/split", json={"a": 50, "b": 50})
    assert r.status_code == 200, r.text
    r = await setup.admin.patch(
        "/listeners/web/routes/main", json={"split_key": {"header": "x-user"}}
    )
    assert r.status_code == 200, r.text
    assert r.json()["split_key"] == {"header": "x-user", "cookie": None}
    seen = {u: await upstream_of(setup, "/", **{"x-user": f"u{u}"}) for u in range(40)}
    assert set(seen.values()) == {"a", "b"}
    for u, cluster in seen.items():
        assert await upstream_of(setup, "/", **{"x-user": f"u{u}"}) == cluster


@pytest.mark.parametrize(
    ("route", "locs"),
    [
        ({"match": {"regex": "(a+)+"}}, ["match.regex"]),
        ({"match": {"regex": "/(x)\\1"}}, ["match.regex"]),
        ({"match": {"regex": "/x", "prefix": "/x"}}, ["match"]),
        ({"match": {"prefix": "/x", "methods": ["get"]}}, ["match.methods[0]"]),
        (
            {
                "match": {
                    "prefix": "/x",
                    "headers": [{"name": "x-a", "exact": "1", "present": True}],
                }
            },
            ["match.headers[0]"],
        ),
        (
            {"match": {"prefix": "/x", "headers": [{"name": "bad name", "present": True}]}},
            ["match.headers[0].name"],
        ),
        (
            {"match": {"prefix": "/x", "headers": [{"name": "x-a", "regex": "(a|aa)+"}]}},
            ["match.headers[0].regex"],
        ),
        (
            {"match": {"prefix": "/x", "headers": [{"name": "x-a", "exakt": "1"}]}},
            ["match.headers[0].exakt"],
        ),
        ({"match": {"prefix": "/x", "query": [{"name": "q"}]}}, ["match.query[0]"]),
        (
            {"match": {"prefix": "/x", "query": [{"name": "q", "regex": "a++"}]}},
            ["match.query[0].regex"],
        ),
        ({"match": {"prefix": "/x"}, "split_key": {"header": "x-user"}}, ["split_key"]),
        ({"match": {"prefix": "/x"}, "mirror": {"cluster": "ghost"}}, ["mirror.cluster"]),
        (
            {"match": {"prefix": "/x"}, "mirror": {"cluster": "c", "percent": 101}},
            ["mirror.percent"],
        ),
        ({"match": {"prefix": "/x"}, "mirror": {"percent": 10}}, ["mirror.cluster"]),
        (
            {
                "match": {"prefix": "/x"},
                "cluster": None,
                "split": [{"cluster": "a", "weight": 1}, {"cluster": "b", "weight": 1}],
                "split_key": {"header": "x-user", "cookie": "uid"},
            },
            ["split_key"],
        ),
    ],
)
async def test_a_bad_route_is_refused_naming_the_field_and_nothing_changes(
    setup: AdminSetup, route: dict[str, Any], locs: list[str]
) -> None:
    before, etag = await setup.config()
    body = {"name": "bad", "cluster": "b", **route}
    r = await setup.admin.post("/listeners/web/routes?before=main", json=body)
    assert sorted(issue_locs(r)) == sorted(f"listeners[0].routes[0].{loc}" for loc in locs)
    assert await setup.config() == (before, etag)
    assert await upstream_of(setup, "/x") == "a"


async def test_insert_before_a_route_that_does_not_exist_is_a_404(setup: AdminSetup) -> None:
    before = await setup.config()
    r = await setup.admin.post(
        "/listeners/web/routes?before=ghost", json={"match": {"prefix": "/x"}, "cluster": "b"}
    )
    assert r.status_code == 404 and "no route 'ghost' to insert before" in r.text
    assert await setup.config() == before


async def test_a_mirror_is_set_through_the_admin_api(setup: AdminSetup) -> None:
    r = await setup.admin.patch(
        "/listeners/web/routes/main", json={"mirror": {"cluster": "b", "percent": 100}}
    )
    assert r.status_code == 200, r.text
    assert r.json()["mirror"] == {"cluster": "b", "percent": 100.0}
    for i in range(5):
        assert await upstream_of(setup, f"/m/{i}") == "a"  # the answer is the real one's
    stats = setup.gateway.stats.listener("web")
    await wait_until(lambda: stats.mirror_rq_sent == 5)


async def test_match_text_outside_ascii_is_taken_as_utf_8(setup: AdminSetup) -> None:
    route = {
        "name": "zurich",
        "match": {
            "prefix": "/caf%C3%A9",  # what a client sends for /café
            "headers": [{"name": "x-city", "exact": "Zürich"}],
            "query": [{"name": "€", "present": True}],
        },
        "cluster": "b",
    }
    r = await setup.admin.post("/listeners/web/routes?before=main", json=route)
    assert r.status_code == 201, r.text
    zurich = {"x-city": "Zürich".encode()}
    assert (await setup.web.get("/café?€", headers=zurich)).headers["x-upstream"] == "a"
    route["match"]["query"] = [{"name": "%E2%82%AC", "present": True}]  # as sent
    assert (await setup.admin.put("/listeners/web/routes/zurich", json=route)).status_code == 200
    assert (await setup.web.get("/café?€", headers=zurich)).headers["x-upstream"] == "b"
    assert (await setup.web.get("/café?€", headers={"x-city": "Zurich"})).headers[
        "x-upstream"
    ] == "a"
