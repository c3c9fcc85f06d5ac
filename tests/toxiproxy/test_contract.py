"""Toxiproxy's REST contract (shared/toxiproxy-contract.md) against ``triogate toxiproxy``:
status codes, headers, bodies byte for byte, error formats, defaults, populate and reset."""

from __future__ import annotations

import json
import re
import socket

import httpx
import pytest

from tests.toxiproxy.conftest import connect, round_trip

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def create(api: httpx.Client, name: str, upstream: str, **extra: object) -> httpx.Response:
    return api.post(
        "/proxies", json={"name": name, "listen": "127.0.0.1:0", "upstream": upstream, **extra}
    )


def assert_error(response: httpx.Response, status: int, message: str) -> None:
    assert response.status_code == status
    assert response.headers["content-type"] == TEXT
    assert response.headers["x-content-type-options"] == "nosniff"
    assert (
        response.content
        == json.dumps({"error": message, "status": status}, separators=(",", ":")).encode() + b"\n"
    )


def test_version(api: httpx.Client) -> None:
    response = api.get("/version")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json;charset=utf-8"
    assert re.fullmatch(rb'\{"version": "2\.12\.0\+triogate\.[0-9.]+"\}\n', response.content)


def test_create_answers_201_with_the_bound_address(api: httpx.Client, echo: str) -> None:
    response = create(api, "db", echo)
    assert response.status_code == 201
    assert response.headers["content-type"] == JSON
    assert re.fullmatch(r"[0-9a-v]{20}", response.headers["x-toxiproxy-request-id"])
    body = response.json()
    host, _, port = body["listen"].rpartition(":")
    assert host == "127.0.0.1" and int(port) > 0
    assert response.content == (
        b'{"name":"db","listen":"'
        + body["listen"].encode()
        + b'","upstream":"'
        + echo.encode()
        + b'","enabled":true,"Logger":{},"toxics":[]}'
    )
    assert round_trip(body["listen"])[0] == b"ping"
    assert api.get("/proxies/db").json() == body
    assert api.get("/proxies").json() == {"db": body}


def test_proxy_errors(api: httpx.Client, echo: str) -> None:
    assert create(api, "db", echo).status_code == 201
    assert_error(create(api, "db", echo), 409, "proxy already exists")
    assert_error(api.post("/proxies", json={"upstream": echo}), 400, "missing required field: name")
    assert_error(api.post("/proxies", json={"name": "x"}), 400, "missing required field: upstream")
    assert_error(api.post("/proxies", content=b""), 400, "bad request body: EOF")
    assert_error(
        api.post("/proxies", json={"name": 5, "upstream": echo}),
        400,
        "bad request body: json: cannot unmarshal number 5 into Go struct field Proxy.name of type string",
    )
    assert_error(api.get("/proxies/nope"), 404, "proxy not found")
    assert_error(api.delete("/proxies/nope"), 404, "proxy not found")
    assert_error(api.get("/proxies/nope/toxics"), 404, "proxy not found")
    # trailing garbage after the first JSON value is ignored, unknown keys too
    response = api.post(
        "/proxies", content=b'{"name":"g","upstream":"' + echo.encode() + b'","x":1} junk'
    )
    assert response.status_code == 201


def test_router_answers(api: httpx.Client) -> None:
    response = api.get("/nope")
    assert (response.status_code, response.content, response.headers["content-type"]) == (
        404,
        b"404 page not found\n",
        TEXT,
    )
    assert "x-toxiproxy-request-id" not in response.headers
    assert api.get("/proxies/").status_code == 404
    response = api.put("/proxies")
    assert response.status_code == 405
    assert response.content == b""
    assert "content-type" not in response.headers
    assert api.get("/metrics").status_code == 404  # no --proxy-metrics


def test_browser_user_agent_is_refused(api: httpx.Client) -> None:
    browser = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64)"}
    response = api.get("/proxies", headers=browser)
    assert response.status_code == 403
    assert response.content == b"User agent not allowed\n"
    assert response.headers["content-type"] == TEXT
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "x-toxiproxy-request-id" in response.headers
    assert api.post("/reset", headers=browser).status_code == 403
    # the blocker runs only on matched routes
    assert api.get("/nope", headers=browser).status_code == 404
    assert api.put("/proxies", headers=browser).status_code == 405
    assert api.get("/proxies", headers={"User-Agent": "mozilla/5.0"}).status_code == 200


def test_delete_answers_204_and_frees_the_name(api: httpx.Client, echo: str) -> None:
    listen = create(api, "db", echo).json()["listen"]
    response = api.delete("/proxies/db")
    assert response.status_code == 204
    assert response.content == b""
    assert api.get("/proxies").json() == {}
    with pytest.raises(OSError):
        connect(listen).close()
    assert create(api, "db", echo).status_code == 201


def test_update_keeps_the_name_and_moves_the_upstream(api: httpx.Client, echo: str) -> None:
    listen = create(api, "db", echo).json()["listen"]
    response = api.patch("/proxies/db", json={"name": "other", "upstream": "127.0.0.1:1"})
    assert response.status_code == 200
    assert response.json()["name"] == "db"
    assert response.json()["upstream"] == "127.0.0.1:1"
    assert response.json()["listen"] == listen
    assert round_trip(listen)[0] == b""  # the dial fails: connected, then EOF
    assert api.post("/proxies/db", json={"upstream": echo}).status_code == 200  # POST too
    assert round_trip(listen)[0] == b"ping"


def test_bind_failure_is_500_in_gos_words(api: httpx.Client, echo: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        response = api.post(
            "/proxies", json={"name": "db", "listen": f"127.0.0.1:{port}", "upstream": echo}
        )
        assert_error(response, 500, f"listen tcp 127.0.0.1:{port}: bind: address already in use")
    assert api.get("/proxies").json() == {}


def test_toxic_errors_before_the_engine(api: httpx.Client, echo: str) -> None:
    create(api, "db", echo)
    url = "/proxies/db/toxics"
    assert_error(
        api.post(url, json={"type": "latency", "stream": "sideways"}),
        400,
        "stream was invalid, can be either upstream or downstream",
    )
    assert_error(api.post(url, json={"type": "nope"}), 400, "invalid toxic type")
    assert_error(api.post(url, json={}), 400, "invalid toxic type")
    assert_error(
        api.post(url, json={"type": "latency", "attributes": {"latency": "1"}}),
        400,
        "bad request body: json: cannot unmarshal string into Go struct field LatencyToxic.attributes.latency of type int64",
    )
    assert_error(api.post("/proxies/nope/toxics", json={"type": "latency"}), 404, "proxy not found")
    assert_error(api.get("/proxies/db/toxics/nope"), 404, "toxic not found")
    assert_error(api.delete("/proxies/db/toxics/nope"), 404, "toxic not found")
    assert_error(api.patch("/proxies/db/toxics/nope", json={}), 404, "toxic not found")


def test_hazards_are_400_where_toxiproxy_crashes_or_stalls(api: httpx.Client, echo: str) -> None:
    create(api, "db", echo)
    for body in (
        {"type": "bandwidth"},
        {"type": "bandwidth", "attributes": {"rate": -1}},
        {"type": "slicer"},
        {"type": "slicer", "attributes": {"average_size": -5, "size_variation": 10}},
    ):
        response = api.post("/proxies/db/toxics", json=body)
        assert response.status_code == 400, body
        assert response.headers["content-type"] == TEXT
        assert set(response.json()) == {"error", "status"}
    assert api.get("/proxies/db/toxics").json() == []


def test_populate(api: httpx.Client, echo: str) -> None:
    port = free_port()
    entry = {"name": "db", "listen": f"127.0.0.1:{port}", "upstream": echo}
    response = api.post(
        "/populate",
        json=[
            entry,
            {"name": "cache", "listen": "127.0.0.1:0", "upstream": echo, "enabled": False},
        ],
    )
    assert response.status_code == 201
    assert response.headers["content-type"] == JSON
    proxies = response.json()["proxies"]
    assert [p["name"] for p in proxies] == ["db", "cache"]
    assert proxies[0]["listen"] == f"127.0.0.1:{port}"
    assert proxies[1]["enabled"] is False
    assert proxies[1]["listen"] == "127.0.0.1:0"  # not started: shown as given
    # the same again: kept as is (a disabled proxy stays disabled)
    api.patch("/proxies/db", json={"enabled": True})
    again = api.post("/populate", json=[entry]).json()["proxies"]
    assert again == [api.get("/proxies/db").json()]
    # empty: null
    response = api.post("/populate", json=[])
    assert (response.status_code, response.content) == (201, b'{"proxies":null}')
    # a bad entry: nothing is made, the error in application/json with proxies null
    response = api.post("/populate", json=[{"name": "new", "upstream": echo}, {"name": "x"}])
    assert response.status_code == 400
    assert response.headers["content-type"] == JSON
    assert (
        response.content
        == b'{"error":"missing required field: upstream at proxy 2","status":400,"proxies":null}'
    )
    assert "new" not in api.get("/proxies").json()
    response = api.post("/populate", json={"name": "db"})
    assert response.status_code == 400
    assert response.json()["error"].startswith(
        "bad request body: json: cannot unmarshal object into Go value of type []struct"
    )


def test_populate_with_toxics_starts_them_together(api: httpx.Client, echo: str) -> None:
    body = [
        {
            "name": "db",
            "listen": "127.0.0.1:0",
            "upstream": echo,
            "toxics": [{"type": "latency", "attributes": {"latency": 200}}],
        }
    ]
    response = api.post("/populate", json=body)
    assert response.status_code == 201, response.text
    proxy = response.json()["proxies"][0]
    assert proxy["toxics"] == [
        {
            "attributes": {"latency": 200, "jitter": 0},
            "name": "latency_downstream",
            "type": "latency",
            "stream": "downstream",
            "toxicity": 1,
        }
    ]
    got, took = round_trip(proxy["listen"])
    assert got == b"ping" and took >= 0.2


def test_toxic_defaults_order_and_updates(api: httpx.Client, echo: str) -> None:
    create(api, "db", echo)
    url = "/proxies/db/toxics"
    response = api.post(url, json={"type": "latency", "attributes": {"latency": 10}})
    assert response.status_code == 200
    assert (
        response.content
        == b'{"attributes":{"latency":10,"jitter":0},"name":"latency_downstream","type":"latency","stream":"downstream","toxicity":1}'
    )
    response = api.post(
        url,
        json={
            "type": "limit_data",
            "stream": "upstream",
            "toxicity": 0.5,
            "attributes": {"bytes": 9},
        },
    )
    assert response.json() == {
        "attributes": {"bytes": 9},
        "name": "limit_data_upstream",
        "type": "limit_data",
        "stream": "upstream",
        "toxicity": 0.5,
    }
    assert_error(
        api.post(url, json={"type": "timeout", "name": "latency_downstream"}),
        409,
        "toxic already exists",
    )
    assert [t["name"] for t in api.get(url).json()] == ["limit_data_upstream", "latency_downstream"]
    assert [t["name"] for t in api.get("/proxies/db").json()["toxics"]] == [
        "limit_data_upstream",
        "latency_downstream",
    ]
    # update: attributes merged, toxicity kept unless sent; name/type/stream ignored
    response = api.patch(
        f"{url}/latency_downstream",
        json={"attributes": {"jitter": 5}, "type": "timeout", "stream": "upstream"},
    )
    assert response.json() == {
        "attributes": {"latency": 10, "jitter": 5},
        "name": "latency_downstream",
        "type": "latency",
        "stream": "downstream",
        "toxicity": 1,
    }
    assert api.post(f"{url}/latency_downstream", json={"toxicity": 0.25}).json()["toxicity"] == 0.25
    assert api.get(f"{url}/latency_downstream").json()["attributes"] == {"latency": 10, "jitter": 5}
    assert_error(
        api.patch(f"{url}/latency_downstream", json={"attributes": {"latency": 1.5}}),
        400,
        "bad request body: json: cannot unmarshal number 1.5 into Go struct field LatencyToxic.attributes.latency of type int64",
    )
    response = api.delete(f"{url}/latency_downstream")
    assert (response.status_code, response.content) == (204, b"")
    assert [t["name"] for t in api.get(url).json()] == ["limit_data_upstream"]
    # a toxic of each type, with Toxiproxy's attribute sets
    expected = {
        "latency": {"latency": 0, "jitter": 0},
        "bandwidth": {"rate": 5},
        "slow_close": {"delay": 0},
        "timeout": {"timeout": 0},
        "reset_peer": {"timeout": 0},
        "slicer": {"average_size": 5, "size_variation": 0, "delay": 0},
        "limit_data": {"bytes": 0},
        "noop": {},
    }
    for kind, attributes in expected.items():
        sent = {k: v for k, v in attributes.items() if v}
        response = api.post(url, json={"type": kind, "name": f"t-{kind}", "attributes": sent})
        assert response.status_code == 200, response.text
        assert response.json()["attributes"] == attributes
    # a stream as sent names the toxic
    assert (
        api.post(url, json={"type": "latency", "stream": "UPSTREAM"}).json()["name"]
        == "latency_UPSTREAM"
    )


def test_disable_enable_and_reset(api: httpx.Client, echo: str) -> None:
    listen = create(api, "db", echo).json()["listen"]
    api.post("/proxies/db/toxics", json={"type": "latency", "attributes": {"latency": 50}})
    response = api.patch("/proxies/db", json={"enabled": False})
    assert response.status_code == 200
    assert response.json()["enabled"] is False
    assert response.json()["listen"] == listen  # the bound address is kept
    with pytest.raises(ConnectionRefusedError):
        connect(listen).close()
    assert len(api.get("/proxies/db/toxics").json()) == 1  # toxics kept while down
    response = api.post("/reset")
    assert (response.status_code, response.content) == (204, b"")
    proxy = api.get("/proxies/db").json()
    assert (proxy["enabled"], proxy["listen"], proxy["toxics"]) == (True, listen, [])
    assert round_trip(listen)[0] == b"ping"
