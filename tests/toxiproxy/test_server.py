"""The two ways the Toxiproxy API is served: ``triogate toxiproxy`` (its flags:
``--config``, ``--proxy-metrics``, ``--version``) and ``admin.toxiproxy`` beside the
native admin API in ``triogate run``, where a proxy is a listener both APIs edit."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.toxiproxy import effects
from tests.toxiproxy.conftest import ToxiproxyServer, round_trip, start_toxiproxy, stop


def test_version_flag() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "triogate.cli", "toxiproxy", "-version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert re.fullmatch(r"toxiproxy-server version 2\.12\.0\+triogate\.[0-9.]+\n", done.stdout)


def test_config_file_starts_proxies_with_their_toxics(tmp_path: Path, echo: str) -> None:
    config = tmp_path / "toxiproxy.json"
    config.write_text(
        json.dumps(
            [
                {
                    "name": "slow_db",
                    "listen": "127.0.0.1:0",
                    "upstream": echo,
                    "toxics": [{"type": "latency", "attributes": {"latency": effects.LATENCY_MS}}],
                },
                {"name": "down_db", "listen": "127.0.0.1:0", "upstream": echo, "enabled": False},
            ]
        )
    )
    server = start_toxiproxy("-config", str(config))
    try:
        proxies = httpx.get(f"{server.url}/proxies").json()
        assert set(proxies) == {"slow_db", "down_db"}
        assert [t["name"] for t in proxies["slow_db"]["toxics"]] == ["latency_downstream"]
        assert proxies["down_db"]["enabled"] is False
        effects.assert_latency(proxies["slow_db"]["listen"])  # from the first connection
    finally:
        stop(server)


def test_bad_config_file_is_logged_and_the_server_starts(tmp_path: Path) -> None:
    config = tmp_path / "toxiproxy.json"
    config.write_text('[{"name": "x"}]')
    server = start_toxiproxy("--config", str(config))
    try:
        assert httpx.get(f"{server.url}/proxies").json() == {}
    finally:
        stop(server)


def test_metrics_count_bytes_each_way(echo: str) -> None:
    server = start_toxiproxy("--proxy-metrics")
    try:
        with httpx.Client(base_url=server.url) as api:
            listen = api.post(
                "/proxies", json={"name": "db", "listen": "127.0.0.1:0", "upstream": echo}
            ).json()["listen"]
            assert round_trip(listen, b"x" * 1000)[0] == b"x" * 1000
            response = api.get("/metrics")
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
            lines = response.text.splitlines()
            assert "# TYPE toxiproxy_proxy_received_bytes_total counter" in lines
            labels = f'listener="{listen}",proxy="db",upstream="{echo}"'
            for metric in ("received", "sent"):
                for direction in ("upstream", "downstream"):
                    line = f'toxiproxy_proxy_{metric}_bytes_total{{direction="{direction}",{labels}}} 1000'
                    assert line in lines, response.text
    finally:
        stop(server)


def test_negative_values_are_stored_as_toxiproxy_treats_them(
    toxiproxy: ToxiproxyServer, echo: str
) -> None:
    with httpx.Client(base_url=toxiproxy.url) as api:
        api.post("/proxies", json={"name": "db", "listen": "127.0.0.1:0", "upstream": echo})
        try:
            response = api.post(
                "/proxies/db/toxics",
                json={
                    "type": "latency",
                    "toxicity": 2,
                    "attributes": {"latency": -5, "jitter": -1},
                },
            )
            assert response.status_code == 200
            assert response.json()["attributes"] == {"latency": 0, "jitter": 0}
            assert response.json()["toxicity"] == 1
            response = api.post(
                "/proxies/db/toxics",
                json={"type": "slicer", "attributes": {"average_size": 10, "size_variation": 20}},
            )
            assert response.status_code == 400  # Toxiproxy can panic on it
            assert "size_variation" in response.json()["error"]
        finally:
            api.delete("/proxies/db")


def test_upstream_host_name_is_resolved_per_connection(
    toxiproxy: ToxiproxyServer, echo: str
) -> None:
    port = echo.rpartition(":")[2]
    with httpx.Client(base_url=toxiproxy.url) as api:
        body = api.post(
            "/proxies",
            json={"name": "named", "listen": "localhost:0", "upstream": f"localhost:{port}"},
        ).json()
        try:
            assert body["upstream"] == f"localhost:{port}"
            assert body["listen"].startswith("127.0.0.1:")  # localhost is read as Go reads it
            assert round_trip(body["listen"])[0] == b"ping"
        finally:
            api.delete("/proxies/named")


# -- beside the native admin API -------------------------------------------------------


@pytest.fixture
def gateway_run(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """``triogate -v run`` with ``admin.toxiproxy``; the two APIs' base URLs, read from
    what it prints and logs."""
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "admin: {address: 127.0.0.1:0, toxiproxy: {address: 127.0.0.1:0, proxy_metrics: true}}\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "triogate.cli", "-v", "run", str(config), "--no-state"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    admin = toxiproxy = None
    seen = []
    for line in process.stdout:
        seen.append(line)
        if found := re.search(r"Toxiproxy API on (http://[0-9.:]+)/", line):
            toxiproxy = found.group(1)
        if found := re.search(r"admin API: (http://[0-9.:]+)/", line):
            admin = found.group(1)
        if admin and toxiproxy:
            break
    assert admin and toxiproxy, "".join(seen)
    threading.Thread(target=process.stdout.read, daemon=True).start()
    yield admin, toxiproxy
    process.terminate()
    process.wait(timeout=15)
    process.stdout.close()


def test_a_proxy_is_a_listener_of_the_native_api(gateway_run: tuple[str, str], echo: str) -> None:
    admin, toxiproxy = gateway_run
    with httpx.Client(base_url=toxiproxy) as tp, httpx.Client(base_url=admin) as native:
        listen = tp.post(
            "/proxies", json={"name": "db", "listen": "127.0.0.1:0", "upstream": echo}
        ).json()["listen"]
        tp.post("/proxies/db/toxics", json={"type": "latency", "attributes": {"latency": 100}})
        listener = native.get("/listeners/db").json()
        assert (listener["protocol"], listener["cluster"], listener["address"]) == (
            "tcp",
            "db-upstream",
            "127.0.0.1:0",
        )
        assert listener["toxics"][0]["name"] == "latency_downstream"
        cluster = native.get("/clusters/db-upstream").json()
        assert [e["address"] for e in cluster["endpoints"]] == [echo]
        # edited natively: seen by Toxiproxy's API
        response = native.post(
            "/listeners/db/toxics",
            json={
                "name": "cut",
                "type": "limit_data",
                "stream": "upstream",
                "attributes": {"bytes": 1},
            },
        )
        assert response.status_code == 201, response.text
        assert [t["name"] for t in tp.get("/proxies/db/toxics").json()] == [
            "cut",
            "latency_downstream",
        ]
        response = native.patch("/listeners/db", json={"enabled": False})
        assert response.status_code == 200, response.text
        assert tp.get("/proxies/db").json()["enabled"] is False
        effects.assert_refused(listen)
        assert tp.post("/reset").status_code == 204
        assert native.get("/listeners/db").json()["toxics"] == []
        assert round_trip(listen)[0] == b"ping"
        # deleted through Toxiproxy's API: its upstream cluster goes with it
        assert tp.delete("/proxies/db").status_code == 204
        assert native.get("/clusters/db-upstream").status_code == 404
