"""The admin API explains itself: ``GET /`` lists the resources, ``/docs`` works offline,
and error bodies say what to do next (``hint``)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from html.parser import HTMLParser

import httpx
import pytest

from admin.routes.index import prefers_html
from gateway.app import Gateway
from tests.admin.admin_support import AdminSetup

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"

#: the top-level resources the README's admin section documents
DOCUMENTED = {
    "/config",
    "/listeners",
    "/clusters",
    "/faults",
    "/rollouts",
    "/stats",
    "/stats/prometheus",
    "/stats/clusters",
    "/stats/workers",
    "/stats/reset",
    "/events",
    "/ready",
    "/status",
    "/drain",
    "/fleet",
    "/dashboard",
    "/dashboard/data",
    "/docs",
    "/openapi.json",
}


async def test_the_index_lists_every_resource_with_a_working_link(setup: AdminSetup) -> None:
    r = await setup.admin.get("/")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    index = r.json()
    assert (index["docs"], index["openapi"], index["dashboard"]) == (
        "/docs",
        "/openapi.json",
        "/dashboard",
    )
    assert index["api_key_required"] is False
    listed = {resource["href"]: resource for resource in index["resources"]}
    assert listed.keys() >= DOCUMENTED, DOCUMENTED - listed.keys()
    assert all(resource["description"] for resource in listed.values())
    # the parameterised paths sit under the resource they start with
    assert "/clusters/{cluster}/health" in listed["/clusters"]["paths"]
    assert "/listeners/{listener}/routes/{route}/split" in listed["/listeners"]["paths"]
    for href, resource in listed.items():
        answer = await setup.admin.get(href)
        # POST-only resources (/drain) answer 405, which names what they take
        assert answer.status_code != 404, (href, answer.text)
        if "GET" in resource["methods"]:
            assert answer.status_code == 200, (href, answer.text)


async def test_a_browser_gets_an_html_index_of_the_same_links(setup: AdminSetup) -> None:
    listed = (await setup.admin.get("/")).json()["resources"]
    r = await setup.admin.get("/", headers={"Accept": BROWSER_ACCEPT})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.headers["vary"] == "Accept"
    links = _references(r.text)
    assert {res["href"] for res in listed if "GET" in res["methods"]} <= links
    assert not _foreign(r.text)


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        (None, False),
        ("*/*", False),  # curl
        ("application/json", False),
        (BROWSER_ACCEPT, True),
        ("text/html", True),
        ("text/html;q=0.5, application/json", False),
        ("application/json;q=0.5, text/*", True),
        ("text/html;q=0", False),
    ],
)
def test_content_negotiation(accept: str | None, html: bool) -> None:
    assert prefers_html(accept) is html


async def test_docs_are_served_from_the_gateway_itself(setup: AdminSetup) -> None:
    admin = setup.admin
    r = await admin.get("/docs")
    assert r.status_code == 200 and "swagger-ui" in r.text
    assert not _foreign(r.text), _foreign(r.text)
    assets = _references(r.text) | set(re.findall(r"url: '([^']+)'", r.text))
    assert {"/openapi.json", "/docs/static/swagger-ui-bundle.js"} <= assets
    for asset in assets:
        answer = await admin.get(asset)
        assert answer.status_code == 200 and answer.content, asset
    assert (await admin.get("/redoc")).status_code == 404  # one docs page: Swagger UI's


async def test_the_explaining_pages_need_no_key_and_everything_else_does(
    start_admin: Callable[..., Awaitable[Gateway]],
) -> None:
    key = "s3cret-key"
    gateway = await start_admin(api_key=key)
    async with httpx.AsyncClient(base_url=f"http://{gateway.admin_address}") as client:
        index = (await client.get("/")).json()
        assert index["api_key_required"] is True and "X-API-Key" in index["api_key_hint"]
        docs = await client.get("/docs")
        assert docs.status_code == 200
        for asset in _references(docs.text):
            assert (await client.get(asset)).status_code == 200, asset
        schema = (await client.get("/openapi.json")).json()
        # Swagger UI's Authorize offers both ways the guard takes the key
        assert set(schema["components"]["securitySchemes"]) == {"bearer", "apiKey"}
        assert schema["components"]["securitySchemes"]["apiKey"]["name"] == "X-API-Key"
        for resource in index["resources"]:
            href = resource["href"]
            if href in ("/docs", "/openapi.json") or "GET" not in resource["methods"]:
                continue
            r = await client.get(href)
            assert r.status_code == 401, href
            assert "X-API-Key" in r.json()["hint"] and key not in r.text
            assert (await client.get(href, headers={"X-API-Key": key})).status_code == 200
        # a write to a public path still needs the key
        r = await client.post("/", json={})
        assert r.status_code == 401


# -- hints in error bodies --------------------------------------------------------------


async def test_an_unknown_item_points_at_its_list(setup: AdminSetup) -> None:
    r = await setup.admin.get("/clusters/nope")
    assert r.status_code == 404
    assert r.json() == {"detail": "no cluster 'nope'", "hint": "GET /clusters lists what there is"}
    r = await setup.admin.get("/listeners/web/routes/nope")
    assert r.json()["hint"] == "GET /listeners/web/routes lists what there is"
    r = await setup.admin.get("/clusters/nope/health")
    assert r.json()["hint"] == "GET /clusters lists what there is"
    r = await setup.admin.get("/events", params={"cluster": "nope"})
    assert r.json()["hint"] == "GET /clusters lists what there is"


async def test_an_unknown_path_suggests_the_closest_and_the_index(setup: AdminSetup) -> None:
    r = await setup.admin.get("/cluster")
    assert r.status_code == 404
    body = r.json()
    assert body["detail"] == "Not Found"
    assert body["hint"].startswith("did you mean /clusters? GET / lists every resource")


async def test_a_stale_if_match_says_to_read_again(setup: AdminSetup) -> None:
    _, etag = await setup.config()
    r = await setup.admin.patch("/clusters/a", json={}, headers={"If-Match": '"999"'})
    assert r.status_code == 412
    body = r.json()
    assert body["detail"].startswith("config version is")
    assert f"If-Match: {etag}" in body["hint"] and "GET" in body["hint"]


async def test_a_refused_write_names_the_field_and_triogate_validate(setup: AdminSetup) -> None:
    r = await setup.admin.patch("/clusters/a", json={"endpoints": [{"address": "nope"}]})
    assert r.status_code == 422
    body = r.json()
    assert body["detail"][0]["loc"] == "clusters[0].endpoints[0].address"
    assert "triogate validate FILE" in body["hint"]


async def test_a_rollout_conflict_names_the_commands_its_state_takes(setup: AdminSetup) -> None:
    spec = {"name": "r", "listener": "web", "route": "main", "stable": "a", "canary": "b"}
    assert (await setup.admin.post("/rollouts", json=spec)).status_code == 201
    r = await setup.admin.post("/rollouts/r/resume", json={})
    assert r.status_code == 409
    assert r.json()["detail"] == "rollout 'r' is running: it cannot resume"
    assert r.json()["hint"] == (
        "a running rollout takes POST /rollouts/r/pause, POST /rollouts/r/abort, "
        "POST /rollouts/r/promote"
    )
    assert (await setup.admin.post("/rollouts/r/abort", json={})).status_code == 200
    r = await setup.admin.post("/rollouts/r/pause", json={})
    assert r.status_code == 409 and "DELETE /rollouts/r" in r.json()["hint"]


def test_etcd_unreachable_says_writes_resume_when_it_is_back() -> None:
    from starlette.requests import Request

    from admin.errors import hint_for
    from gateway import StoreUnavailable

    request = Request({"type": "http", "method": "PUT", "path": "/config", "headers": []})
    hint = hint_for(request, StoreUnavailable("etcd unreachable (connection refused)"))
    assert hint is not None and "etcd" in hint and "resume once etcd is back" in hint


# -- helpers ------------------------------------------------------------------------------


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src") and value:
                self.refs.add(value)


def _references(page: str) -> set[str]:
    """Every href and src of a page."""
    parser = _Refs()
    parser.feed(page)
    return parser.refs


def _foreign(page: str) -> list[str]:
    """Every absolute URL in a page (all of them are to another host: the page's own
    links are paths)."""
    return re.findall(r"https?://[^\s\"'<>]+", page)
