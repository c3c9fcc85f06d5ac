"""``config_store``: the file store by default; an etcd store's settings, each bad one
refused naming its field; the shared document leaves out each node's own sections."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trustme

from gateway.config import Config, StoreConfig, config_from_data, config_from_text
from gateway.control.store import config_of_document, fleet_document
from gateway.errors import ConfigError

ETCD = {"type": "etcd", "endpoints": ["http://127.0.0.1:2379"], "prefix": "/triogate/prod"}


def issues_of(store: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_from_data({"config_store": store})
    return [str(i) for i in info.value.issues]


def test_the_default_is_the_file_store() -> None:
    assert config_from_data({}).config_store == StoreConfig(type="file")


def test_the_issue_example_loads(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("client")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "client.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "client.key"))
    config = config_from_text(
        f"""\
config_store:
  type: etcd
  endpoints: [https://127.0.0.1:2379]
  prefix: /triogate/prod
  dial_timeout: 2
  tls: {{ca: {tmp_path}/ca.pem, cert: {tmp_path}/client.pem, key: {tmp_path}/client.key}}
  username_env: ETCD_USER
  password_env: ETCD_PASSWORD
"""
    )
    store = config.config_store
    assert (store.type, store.endpoints, store.prefix) == (
        "etcd",
        ("https://127.0.0.1:2379",),
        "/triogate/prod",
    )
    assert store.tls is not None and store.tls.key == f"{tmp_path}/client.key"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"endpoints": []}, "config_store.endpoints: is required for type 'etcd'"),
        ({"endpoints": ["127.0.0.1:2379"]}, "config_store.endpoints[0]: must be http://"),
        ({"endpoints": ["http://a:1", "ftp://b:2"]}, "config_store.endpoints[1]: must be http://"),
        (
            {"endpoints": ["http://127.0.0.1"]},
            "config_store.endpoints[0]: 'http://127.0.0.1' names no port",
        ),
        (
            {"endpoints": ["http://127.0.0.1:99999"]},
            "config_store.endpoints[0]: 'http://127.0.0.1:99999' is not a URL",
        ),
        (
            {"endpoints": ["http://127.0.0.1:2379/v3"]},
            "config_store.endpoints[0]: 'http://127.0.0.1:2379/v3': a client URL has no path",
        ),
        ({"prefix": "triogate"}, "config_store.prefix: must be a key path"),
        ({"prefix": "/triogate/"}, "config_store.prefix: must be a key path"),
        ({"prefix": "/"}, "config_store.prefix: must be a key path"),
        ({"dial_timeout": 0}, "config_store.dial_timeout: must be a positive number"),
        ({"dial_timeout": "soon"}, "config_store.dial_timeout"),
        ({"username_env": "U"}, "config_store.password_env: is required with the other"),
        ({"password_env": "P"}, "config_store.username_env: is required with the other"),
        (
            {"tls": {"ca": "/nonexistent/ca.pem"}},
            "config_store.endpoints[0]: must be https:// when tls is set",
        ),
        ({"type": "consul"}, "config_store.type"),
        ({"watch": True}, "config_store.watch"),
    ],
)
def test_each_bad_etcd_setting_is_named(change: dict[str, object], expected: str) -> None:
    issues = issues_of({**ETCD, **change})
    assert any(issue.startswith(expected) for issue in issues), issues


def test_tls_files_are_checked(tmp_path: Path) -> None:
    https = {**ETCD, "endpoints": ["https://127.0.0.1:2379"]}
    issues = issues_of({**https, "tls": {"ca": str(tmp_path / "missing.pem")}})
    assert any(i.startswith("config_store.tls.ca: ") for i in issues), issues
    issues = issues_of({**https, "tls": {"cert": str(tmp_path / "c.pem")}})
    assert "config_store.tls.key: is required with the other of the pair" in issues


def test_etcd_settings_do_not_apply_to_the_file_store() -> None:
    issues = issues_of({"type": "file", "endpoints": ["http://127.0.0.1:2379"]})
    assert issues == ["config_store.endpoints: does not apply to type 'file'"]


def test_the_fleet_document_leaves_out_each_nodes_own_sections() -> None:
    mine = config_from_data(
        {"admin": {"address": "127.0.0.1:9901"}, "config_store": ETCD, "max_active_faults": 7}
    )
    document = fleet_document(mine)
    data = json.loads(document)
    assert "admin" not in data and "config_store" not in data
    assert data["max_active_faults"] == 7
    # another node reads it with its own admin and config_store
    theirs = config_from_data({"admin": {"address": "127.0.0.1:9902"}, "config_store": ETCD})
    read = config_of_document(document, theirs)
    assert read.admin == theirs.admin and read.config_store == theirs.config_store
    assert read.max_active_faults == 7
    assert isinstance(read, Config)


def test_a_document_that_is_not_a_config_is_refused() -> None:
    with pytest.raises(ConfigError):
        config_of_document(b"[1, 2]", Config())
    with pytest.raises(ConfigError) as info:
        config_of_document(b'{"listeners": 3}', Config())
    assert any(i.path == "listeners" for i in info.value.issues)
