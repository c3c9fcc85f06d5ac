"""``/faults``: list, get, create, replace, patch, delete while traffic flows; a bad fault
is a 422 naming each field by its path, and the running config is untouched."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config import Address
from tests.admin.admin_support import AdminSetup, admin_config, issue_locs
from tests.conftest import StartGateway, StartUpstream

ABORT = {"status": 503}


async def test_a_fault_through_its_lifecycle(setup: AdminSetup) -> None:
    admin, web = setup.admin, setup.web
    assert (await admin.get("/faults")).json() == []
    r = await admin.post("/faults", json={"name": "broken", "listener": "web", "abort": ABORT})
    assert r.status_code == 201, r.text
    assert r.headers["location"] == "/faults/broken"
    assert r.json()["percent"] == 100.0 and r.json()["abort"]["status"] == 503
    assert (await web.get("/")).status_code == 503
    etag = r.headers["etag"]

    r = await admin.patch("/faults/broken", json={"abort": {"status": 429}})
    assert r.status_code == 200, r.text
    assert r.headers["etag"] != etag
    assert (await web.get("/")).status_code == 429

    r = await admin.put("/faults/broken", json={"name": "broken", "percent": 0, "abort": ABORT})
    assert r.status_code == 200, r.text
    assert (await web.get("/")).status_code == 200
    assert [f["name"] for f in (await admin.get("/faults")).json()] == ["broken"]
    assert (await admin.get("/faults/broken")).json()["percent"] == 0

    r = await admin.post("/faults", json={"name": "broken", "abort": ABORT})
    assert r.status_code == 409
    assert (await admin.delete("/faults/broken")).status_code == 204
    assert (await admin.get("/faults/broken")).status_code == 404
    assert (await admin.get("/config")).json()["faults"] == []


async def test_a_stale_if_match_changes_nothing(setup: AdminSetup) -> None:
    before = await setup.config()
    r = await setup.admin.post(
        "/faults", json={"name": "late", "abort": ABORT}, headers={"If-Match": '"7"'}
    )
    assert r.status_code == 412
    assert await setup.config() == before


BAD_FAULTS: list[tuple[dict[str, Any], set[str]]] = [
    ({"name": "x", "percent": 150, "abort": ABORT}, {"faults[0].percent"}),
    ({"name": "x", "first_n": -1, "abort": ABORT}, {"faults[0].first_n"}),
    ({"name": "x", "listener": "nope", "abort": ABORT}, {"faults[0].listener"}),
    ({"name": "x", "listener": "web", "route": "ghost", "abort": ABORT}, {"faults[0].route"}),
    ({"name": "x", "route": "main", "abort": ABORT}, {"faults[0].route"}),
    ({"name": "x", "cluster": "ghost", "abort": ABORT}, {"faults[0].cluster"}),
    ({"name": "x", "abort": {"status": 503, "reset": True}}, {"faults[0].abort"}),
    ({"name": "x", "abort": {"status": 99}}, {"faults[0].abort.status"}),
    ({"name": "x", "abort": {"truncate": 1.5}}, {"faults[0].abort.truncate"}),
    ({"name": "x", "abort": {"explode": True}}, {"faults[0].abort.explode"}),
    ({"name": "x", "delay": {"uniform": [0.5, 0.1]}}, {"faults[0].delay.uniform"}),
    ({"name": "x", "delay": {"fixed": 1, "uniform": [0, 1]}}, {"faults[0].delay"}),
    ({"name": "x", "delay": {"fixed": "slow"}}, {"faults[0].delay.fixed"}),
    (
        {"name": "x", "delay": {"lognormal": {"median": -1, "sigma": 1}}},
        {"faults[0].delay.lognormal.median"},
    ),
    (
        {"name": "x", "abort": ABORT, "match": {"headers": [{"name": "a", "regex": "(a)\\1"}]}},
        {"faults[0].match.headers[0].regex"},
    ),
    (
        {"name": "x", "abort": ABORT, "match": {"headers": [{"name": "a", "regex": "("}]}},
        {"faults[0].match.headers[0].regex"},
    ),
    (
        {
            "name": "x",
            "abort": ABORT,
            "match": {"headers": [{"name": "a", "exact": "1", "present": True}]},
        },
        {"faults[0].match.headers[0]"},
    ),
    ({"name": "x", "response_rate_kbps": -1}, {"faults[0].response_rate_kbps"}),
    ({"name": "x"}, {"faults[0]"}),
    ({"name": "x", "abort": ABORT, "speed": 1}, {"faults[0].speed"}),
    ({"abort": ABORT}, {"faults[0].name"}),
]


@pytest.mark.parametrize(("body", "locs"), BAD_FAULTS)
async def test_a_bad_fault_is_422_by_path_and_changes_nothing(
    setup: AdminSetup, body: dict[str, Any], locs: set[str]
) -> None:
    before = await setup.config()
    r = await setup.admin.post("/faults", json=body)
    assert set(issue_locs(r)) == locs
    assert await setup.config() == before
    assert setup.gateway.control.version == 1
    assert (await setup.web.get("/")).status_code == 200


async def test_grpc_status_must_be_a_grpc_error(setup: AdminSetup) -> None:
    r = await setup.admin.post("/faults", json={"name": "grpc", "abort": {"grpc_status": 0}})
    [issue] = r.json()["detail"]
    assert issue["loc"] == "faults[0].abort.grpc_status"
    assert "1-16" in issue["msg"]
    r = await setup.admin.post("/faults", json={"name": "grpc", "abort": {"grpc_status": 14}})
    assert r.status_code in (200, 201), r.text


async def test_max_active_faults_is_checked_with_the_config(setup: AdminSetup) -> None:
    config, etag = await setup.config()
    r = await setup.admin.put("/config", json={**config, "max_active_faults": -1})
    assert issue_locs(r) == ["max_active_faults"]
    assert await setup.config() == (config, etag)


async def test_a_fault_is_persisted(
    start_upstream: StartUpstream, start_gateway: StartGateway, tmp_path: Path
) -> None:
    upstreams: dict[str, Address] = {"a": await start_upstream("a")}
    state = tmp_path / "gateway.state.json"
    gw = await start_gateway(admin_config(upstreams), admin=True, state_path=state)
    async with httpx.AsyncClient(base_url=f"http://{gw.admin_address}") as admin:
        r = await admin.post("/faults", json={"name": "kept", "delay": {"fixed": 0.1}})
        assert r.status_code == 201, r.text
    saved = json.loads(state.read_text())
    assert [(f["name"], f["delay"]["fixed"]) for f in saved["faults"]] == [("kept", 0.1)]
