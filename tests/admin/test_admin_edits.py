"""The pure parts of the admin API: config edits, merge patch, the Host and key checks."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from admin.edits import (
    ItemExists,
    ItemNotFound,
    create_change,
    delete_change,
    endpoint_key,
    get_item,
    locate,
    merge_patch,
    patch_change,
    path_of,
    replace_change,
)
from admin.guard import Guard, host_allowed, is_json, key_matches
from admin.routes.clusters import CLUSTERS, ENDPOINTS
from admin.routes.listeners import LISTENERS, ROUTES, VIRTUAL_HOSTS
from gateway.config import Address, config_from_data
from gateway.errors import ConfigError

CONFIG = config_from_data(
    {
        "listeners": [
            {
                "name": "web",
                "address": "127.0.0.1:0",
                "virtual_hosts": [
                    {
                        "name": "v",
                        "domains": ["*"],
                        "routes": [
                            {"name": "api", "match": {"prefix": "/api"}, "cluster": "b"},
                            {"match": {"prefix": "/"}, "cluster": "a"},
                        ],
                    }
                ],
            }
        ],
        "clusters": [
            {"name": "a", "endpoints": [{"address": "127.0.0.1:1"}]},
            {"name": "b", "endpoints": [{"address": "[::1]:2"}, {"address": "127.0.0.1:3"}]},
        ],
    }
)


def test_locate_names_the_config_path() -> None:
    chain = [(CLUSTERS, "b"), (ENDPOINTS, "127.0.0.1:3")]
    assert path_of(locate(CONFIG, chain)) == "clusters[1].endpoints[1]"
    assert get_item(CONFIG, chain).address == Address("127.0.0.1", 3)
    # IPv6 endpoints by their canonical spelling; routes by name, or by position
    assert get_item(CONFIG, [(CLUSTERS, "b"), (ENDPOINTS, "[::1]:2")]).address.port == 2
    route_chain = [(LISTENERS, "web"), (VIRTUAL_HOSTS, "v"), (ROUTES, "api")]
    assert path_of(locate(CONFIG, route_chain)) == "listeners[0].virtual_hosts[0].routes[0]"
    assert get_item(CONFIG, [*route_chain[:2], (ROUTES, "1")]).cluster == "a"
    assert get_item(CONFIG, [*route_chain[:2], (ROUTES, "0")]).name == "api"


@pytest.mark.parametrize(
    ("chain", "message"),
    [
        ([(CLUSTERS, "z")], "no cluster 'z'"),
        ([(CLUSTERS, "b"), (ENDPOINTS, "127.0.0.1:9")], "no endpoint '127.0.0.1:9' in clusters[1]"),
        ([(CLUSTERS, "b"), (ENDPOINTS, "not an address")], "no endpoint"),
        ([(LISTENERS, "web"), (VIRTUAL_HOSTS, "v"), (ROUTES, "2")], "no route '2'"),
        ([(LISTENERS, "web"), (ROUTES, "0")], "no route '0' in listeners[0]"),
    ],
)
def test_missing_items_say_where(chain: Any, message: str) -> None:
    with pytest.raises(ItemNotFound, match=message.replace("[", r"\[").replace("]", r"\]")):
        locate(CONFIG, chain)


def test_changes_are_pure_and_land_where_expected() -> None:
    added = create_change([(CLUSTERS, "a")], ENDPOINTS, {"address": "127.0.0.1:7", "weight": 3})(
        CONFIG
    )
    assert [ep.weight for ep in added.clusters[0].endpoints] == [1, 3]
    assert CONFIG.clusters[0].endpoints[0].weight == 1 and len(CONFIG.clusters[0].endpoints) == 1
    chain = [(CLUSTERS, "a"), (ENDPOINTS, "127.0.0.1:7")]
    patched = patch_change(chain, {"state": "draining"})(added)
    assert get_item(patched, chain).state == "draining" and get_item(patched, chain).weight == 3
    reset = patch_change(chain, {"weight": None})(patched)
    assert get_item(reset, chain).weight == 1, "null in a merge patch restores the default"
    assert delete_change(chain)(reset) == CONFIG


def test_create_refuses_a_taken_key_and_reports_body_paths() -> None:
    with pytest.raises(ItemExists):
        create_change([], CLUSTERS, {"name": "a"})(CONFIG)
    with pytest.raises(ConfigError) as e:
        create_change([(CLUSTERS, "b")], ENDPOINTS, {"address": "x", "weight": "w"})(CONFIG)
    assert {i.path for i in e.value.issues} == {
        "clusters[1].endpoints[2].address",
        "clusters[1].endpoints[2].weight",
    }


def test_replace_must_keep_the_key() -> None:
    with pytest.raises(ConfigError) as e:
        replace_change([(CLUSTERS, "a")], {"name": "renamed"})(CONFIG)
    assert e.value.issues[0].path == "clusters[0]"
    # a nameless route is named by position, so giving it a name keeps it findable
    chain = [(LISTENERS, "web"), (VIRTUAL_HOSTS, "v"), (ROUTES, "1")]
    named = replace_change(chain, {"name": "root", "match": {"prefix": "/"}, "cluster": "b"})
    assert get_item(named(CONFIG), chain).name == "root"


def test_endpoint_key_is_canonical() -> None:
    assert endpoint_key("[::1]:80") == "[::1]:80"
    with pytest.raises(ValueError):
        endpoint_key("nope")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(json_values, json_values)
def test_merge_patch_follows_rfc_7396(target: Any, patch: Any) -> None:
    merged = merge_patch(target, patch)
    if not isinstance(patch, dict):
        assert merged == patch
        return
    assert isinstance(merged, dict)
    for key, value in patch.items():
        if value is None:
            assert key not in merged
        elif not isinstance(value, dict):
            assert merged[key] == value
    if isinstance(target, dict):
        for key in target.keys() - patch.keys():
            assert merged[key] == target[key]
    assert merge_patch(merged, patch) == merged, "applying a patch twice changes nothing more"


@pytest.mark.parametrize(
    ("header", "admin", "allowed"),
    [
        ("localhost:9901", "127.0.0.1:9901", True),
        ("LOCALHOST", "127.0.0.1:9901", True),
        ("127.0.0.5:1", "127.0.0.1:9901", True),
        ("[::1]", "[::1]:9901", True),
        ("10.1.2.3:9901", "10.1.2.3:9901", True),
        ("admin.internal", "admin.internal:9901", True),
        ("10.1.2.4:9901", "10.1.2.3:9901", False),
        ("attacker.example", "127.0.0.1:9901", False),
        ("localhost.attacker.example", "127.0.0.1:9901", False),
        ("10.1.2.3:9901", "0.0.0.0:9901", True),
        ("[fe80::1]:9901", "[::]:9901", True),
        ("gw.example:9901", "0.0.0.0:9901", False),
        ("localhost:notaport", "127.0.0.1:9901", False),
        ("[::1", "127.0.0.1:9901", False),
        ("", "127.0.0.1:9901", False),
        (None, "127.0.0.1:9901", False),
    ],
)
def test_host_check(header: str | None, admin: str, allowed: bool) -> None:
    assert host_allowed(header, Address.parse(admin)) is allowed


def test_key_and_media_type_checks() -> None:
    assert key_matches("s3cret", "s3cret")
    assert not key_matches("s3cre", "s3cret") and not key_matches(None, "s3cret")
    assert is_json("application/json; charset=utf-8") and is_json("application/merge-patch+json")
    assert not is_json("text/json") and not is_json(None) and not is_json("application/jsonp")


async def test_guard_covers_websockets() -> None:
    reached: list[str] = []
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["path"])

    async def receive() -> dict[str, Any]:
        raise AssertionError("the guard reads nothing")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    guard = Guard(app, admin_address=lambda: Address("127.0.0.1", 9901), api_key="k")
    for host, key, allowed in [
        (b"evil.example", b"k", False),
        (b"localhost", b"wrong", False),
        (b"localhost", b"k", True),
    ]:
        headers = [(b"host", host), (b"x-api-key", key)]
        scope = {"type": "websocket", "path": "/live", "headers": headers}
        await guard(scope, receive, send)
        assert (sent[-1:] == [{"type": "websocket.close", "code": 1008}]) is not allowed
        sent.clear()
    assert reached == ["/live"]
