"""Validation of the TLS settings: files that exist and load, a key matching its
certificate, names, ``allowed_sans``; each error names its field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config import Address
from gateway.config.load import config_from_data
from gateway.errors import ConfigError
from tests.conftest import simple_config
from tests.gateway.tls_support import Pki


def issues_of(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        config_from_data(data)
    return {issue.path: issue.message for issue in caught.value.issues}


def listener_tls(pki: Pki, **tls: Any) -> dict[str, Any]:
    config = simple_config({"api": [Address("127.0.0.1", 1)]})
    config["listeners"][0]["tls"] = tls
    return config


def test_a_valid_tls_config_loads(pki: Pki) -> None:
    cert, key = pki.issue("server", "localhost")
    config = config_from_data(
        listener_tls(
            pki,
            certificates=[{"cert": cert, "key": key, "server_names": ["*.example.com"]}],
            client_auth={"ca": pki.ca_file, "allowed_sans": ["spiffe://td/ns/a", "a.example.com"]},
            forward_client_cert="sanitize_set",
        )
    )
    assert config.listeners[0].tls is not None


def test_errors_name_the_field(pki: Pki, tmp_path: Path) -> None:
    cert, key = pki.issue("server", "localhost")
    _, other_key = pki.issue("other", "localhost")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    issues = issues_of(
        listener_tls(
            pki,
            certificates=[
                {"cert": cert, "key": key},
                {"cert": cert, "key": other_key},
                {"cert": str(garbage), "key": key},
                {"cert": cert, "key": str(tmp_path / "missing.key"), "server_names": ["bad name"]},
            ],
            client_auth={"ca": str(garbage), "allowed_sans": ["not a san"]},
        )
    )
    assert "not the key" in issues["listeners[0].tls.certificates[1].key"]
    assert "does not load" in issues["listeners[0].tls.certificates[2].cert"]
    assert "cannot read" in issues["listeners[0].tls.certificates[3].key"]
    assert "listeners[0].tls.certificates[3].server_names[0]" in issues
    assert "listeners[0].tls.client_auth.ca" in issues
    assert "listeners[0].tls.client_auth.allowed_sans[0]" in issues
    assert "listeners[0].tls.certificates[0].key" not in issues


def test_cluster_tls_checks(pki: Pki) -> None:
    cert, key = pki.issue("client", "gateway.internal")
    config = simple_config({"api": [Address("127.0.0.1", 1)]})
    config["clusters"][0]["tls"] = {
        "ca": pki.ca_file,
        "cert": cert,
        "key": key,
        "sni": "api.internal",
    }
    assert config_from_data(config).clusters[0].tls is not None
    config["clusters"][0]["tls"] = {"cert": cert, "sni": "not a name"}
    config["clusters"][0]["protocol"] = "http2"
    issues = issues_of(config)
    assert "clusters[0].tls.cert" in issues
    assert "clusters[0].tls.sni" in issues
    assert "clusters[0].protocol" not in issues  # HTTP/2 over TLS: h2 by ALPN


def test_a_grpc_health_check_over_tls_needs_an_http2_cluster(pki: Pki) -> None:
    config = simple_config({"api": [Address("127.0.0.1", 1)]})
    config["clusters"][0]["tls"] = {"ca": pki.ca_file}
    config["clusters"][0]["health_check"] = {"type": "grpc"}
    assert "protocol: http2" in issues_of(config)["clusters[0].health_check.type"]
    config["clusters"][0]["protocol"] = "http2"  # h2 offered by ALPN: the check can speak it
    assert config_from_data(config).clusters[0].health_check is not None
    del config["clusters"][0]["tls"]
    config["clusters"][0]["protocol"] = "http1"
    assert config_from_data(config).clusters[0].health_check is not None  # cleartext: fine


def test_http2_limits_are_checked() -> None:
    config = simple_config({"api": [Address("127.0.0.1", 1)]})
    config["clusters"][0]["http2"] = {"max_concurrent_streams": 0, "initial_stream_window_kb": 0}
    config["listeners"][0]["http2"] = {"max_header_list_kb": 0}
    issues = issues_of(config)
    assert "clusters[0].http2.max_concurrent_streams" in issues
    assert "clusters[0].http2.initial_stream_window_kb" in issues
    assert "listeners[0].http2.max_header_list_kb" in issues
    config["clusters"][0]["http2"] = {"max_concurrent_streams": 1}
    del config["listeners"][0]["http2"]
    assert config_from_data(config).clusters[0].http2.max_concurrent_streams == 1
