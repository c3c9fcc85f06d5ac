"""``/listeners/{name}/toxics``: list, get, create, replace, patch, delete, applied live;
a bad toxic is a 422 naming each field by its path, and nothing is applied."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from gateway.config import Address
from tests.admin.admin_support import AdminSetup, admin_config, issue_locs
from tests.conftest import StartGateway, StartUpstream

LATENCY = {"name": "lag", "type": "latency", "attributes": {"latency": 300}}


async def timed_get(web: httpx.AsyncClient) -> float:
    start = trio.current_time()
    # a new connection each time: an HTTP listener's toxics act on connections that
    # start while it has some
    r = await web.get("/", headers={"connection": "close"})
    assert r.status_code == 200
    return trio.current_time() - start


async def test_a_toxic_through_its_lifecycle(setup: AdminSetup) -> None:
    admin, web = setup.admin, setup.web
    assert (await admin.get("/listeners/web/toxics")).json() == []
    r = await admin.post("/listeners/web/toxics", json=LATENCY)
    assert r.status_code == 201, r.text
    assert r.headers["location"] == "/listeners/web/toxics/lag"
    assert r.json()["stream"] == "downstream" and r.json()["toxicity"] == 1.0
    assert r.json()["attributes"]["latency"] == 300
    assert await timed_get(web) >= 0.3
    etag = r.headers["etag"]

    r = await admin.patch("/listeners/web/toxics/lag", json={"attributes": {"latency": 0}})
    assert r.status_code == 200, r.text
    assert r.headers["etag"] != etag
    assert (await admin.get("/listeners/web/toxics/lag")).json()["attributes"]["latency"] == 0
    assert await timed_get(web) < 0.25

    r = await admin.put(
        "/listeners/web/toxics/lag",
        json={"name": "lag", "type": "latency", "stream": "upstream", "toxicity": 0},
    )
    assert r.status_code == 200, r.text
    assert r.json()["stream"] == "upstream"

    r = await admin.post("/listeners/web/toxics", json={**LATENCY, "stream": "upstream"})
    assert r.status_code == 409
    assert (await admin.delete("/listeners/web/toxics/lag")).status_code == 204
    assert (await admin.get("/listeners/web/toxics/lag")).status_code == 404
    assert (await admin.get("/listeners/ghost/toxics")).status_code == 404
    config, _ = await setup.config()
    assert config["listeners"][0]["toxics"] == []


BAD_TOXICS: list[tuple[dict[str, Any], set[str]]] = [
    (
        {"name": "s", "type": "slicer", "attributes": {"average_size": 0}},
        {"listeners[0].toxics[0].attributes.average_size"},
    ),
    (
        {"name": "s", "type": "slicer", "attributes": {"average_size": 10, "size_variation": 10}},
        {"listeners[0].toxics[0].attributes.size_variation"},
    ),
    (
        {"name": "b", "type": "bandwidth", "attributes": {"rate": -1}},
        {"listeners[0].toxics[0].attributes.rate"},
    ),
    (
        {"name": "b", "type": "bandwidth", "attributes": {"rate": 0}},
        {"listeners[0].toxics[0].attributes.rate"},
    ),
    (
        {"name": "l", "type": "latency", "attributes": {"latency": -5, "jitter": -1}},
        {"listeners[0].toxics[0].attributes.latency", "listeners[0].toxics[0].attributes.jitter"},
    ),
    (
        {"name": "t", "type": "timeout", "attributes": {"timeout": -1}},
        {"listeners[0].toxics[0].attributes.timeout"},
    ),
    ({"name": "l", "type": "latency", "toxicity": 1.5}, {"listeners[0].toxics[0].toxicity"}),
    ({"name": "p", "type": "packet_loss"}, {"listeners[0].toxics[0].type"}),
    ({"name": "l", "type": "latency", "source": ["nowhere"]}, {"listeners[0].toxics[0].source[0]"}),
    ({"name": "l", "type": "warp"}, {"listeners[0].toxics[0].type"}),
    ({"name": "l", "type": "latency", "stream": "sideways"}, {"listeners[0].toxics[0].stream"}),
]


@pytest.mark.parametrize(("body", "locs"), BAD_TOXICS)
async def test_a_bad_toxic_is_422_by_path_and_changes_nothing(
    setup: AdminSetup, body: dict[str, Any], locs: set[str]
) -> None:
    before = await setup.config()
    r = await setup.admin.post("/listeners/web/toxics", json=body)
    assert set(issue_locs(r)) == locs
    assert await setup.config() == before
    assert setup.gateway.control.version == 1
    assert setup.gateway.control.listeners["web"].config.toxics == ()
    assert (await setup.web.get("/")).status_code == 200


async def test_a_bad_patch_is_422_and_the_toxic_stays(setup: AdminSetup) -> None:
    r = await setup.admin.post(
        "/listeners/web/toxics",
        json={"name": "cut", "type": "slicer", "attributes": {"average_size": 8}},
    )
    assert r.status_code == 201, r.text
    before = await setup.config()
    r = await setup.admin.patch(
        "/listeners/web/toxics/cut", json={"attributes": {"average_size": -1}}
    )
    assert issue_locs(r) == ["listeners[0].toxics[0].attributes.average_size"]
    assert await setup.config() == before


async def test_toxic_names_are_unique_per_listener_across_streams(setup: AdminSetup) -> None:
    config, etag = await setup.config()
    toxics = [
        {"name": "same", "type": "latency", "stream": "upstream"},
        {"name": "same", "type": "latency", "stream": "downstream"},
    ]
    config["listeners"][0]["toxics"] = toxics
    r = await setup.admin.put("/config", json=config, headers={"If-Match": etag})
    assert issue_locs(r) == ["listeners[0].toxics"]


async def test_toxics_are_persisted(
    start_upstream: StartUpstream, start_gateway: StartGateway, tmp_path: Path
) -> None:
    upstreams: dict[str, Address] = {"a": await start_upstream("a")}
    state = tmp_path / "gateway.state.json"
    gw = await start_gateway(admin_config(upstreams), admin=True, state_path=state)
    async with httpx.AsyncClient(base_url=f"http://{gw.admin_address}") as admin:
        r = await admin.post("/listeners/web/toxics", json=LATENCY)
        assert r.status_code == 201, r.text
    saved = json.loads(state.read_text())
    [toxic] = saved["listeners"][0]["toxics"]
    assert (toxic["name"], toxic["attributes"]["latency"]) == ("lag", 300)
