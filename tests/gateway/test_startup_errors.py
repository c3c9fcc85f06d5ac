"""``triogate run`` refuses to start with one line on stderr saying what is wrong and what
to do, no traceback: exit 1 when the machine refuses (a state file it cannot use, a port
in use, etcd unreachable), 2 when the config is wrong (as click's usage errors)."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme

from tests.gateway.test_config import run_cli

# nothing here gets as far as binding: the ports are never used
CONFIG = """
admin: {{address: "127.0.0.1:0", state_file: "{state}"}}
listeners:
  - name: web
    address: "127.0.0.1:0"
    routes: [{{match: {{prefix: /}}, cluster: web}}]
clusters:
  - name: web
    endpoints: [{{address: "127.0.0.1:9"}}]
"""


def _state_under_a_file(tmp: Path) -> tuple[Path, str]:
    (tmp / "plain-file").write_text("not a folder\n")
    return tmp / "plain-file" / "gateway.state.json", "is not a folder"


def _state_is_a_folder(tmp: Path) -> tuple[Path, str]:
    (tmp / "state.json").mkdir()
    return tmp / "state.json", "cannot read the state file"


def _state_not_utf8(tmp: Path) -> tuple[Path, str]:
    (tmp / "state.json").write_bytes(b'{"version": "\xff\xfe"}')
    return tmp / "state.json", "cannot read the state file"


def _state_folder_missing(tmp: Path) -> tuple[Path, str]:
    return tmp / "no-such-folder" / "state.json", "is not a folder"


@pytest.mark.parametrize(
    "make", [_state_under_a_file, _state_is_a_folder, _state_not_utf8, _state_folder_missing]
)
def test_an_unusable_state_file_is_one_line_and_exit_1(
    tmp_path: Path, make: Callable[[Path], tuple[Path, str]]
) -> None:
    state, reason = make(tmp_path)
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG.format(state=state))
    failed = run_cli("run", str(config))
    assert failed.returncode == 1, failed.stderr
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1, failed.stderr
    assert lines[0].startswith("triogate: ") and reason in lines[0] and str(state) in lines[0]
    assert "listener web" not in failed.stdout


# -- the errors a newcomer meets: one line on stderr saying what is wrong and what to do --

NEWCOMER = """
admin: {{address: "{admin}"}}
listeners:
  - name: web
    address: "{listen}"
{tls}    routes: [{{match: {{prefix: /}}, cluster: {route_to}}}]
clusters:
  - name: web
    endpoints: [{{address: "127.0.0.1:9"}}]
  - name: api
    endpoints: [{{address: "127.0.0.1:9"}}]
{extra}"""


def _newcomer(tmp: Path, **fields: str) -> Path:
    values = {"admin": "127.0.0.1:0", "listen": "127.0.0.1:0", "tls": "", "route_to": "web"}
    values["extra"] = ""
    config = tmp / "gateway.yaml"
    config.write_text(NEWCOMER.format(**{**values, **fields}))
    return config


def _one_line(failed: subprocess.CompletedProcess[str], status: int) -> str:
    """The one line ``triogate`` printed on stderr, having exited with ``status``."""
    assert failed.returncode == status, failed.stderr
    assert "Traceback" not in failed.stderr
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1, failed.stderr
    assert lines[0].startswith("triogate: ")
    return lines[0]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize("which", ["listener", "admin"])
def test_a_port_in_use(tmp_path: Path, which: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = f"127.0.0.1:{busy.getsockname()[1]}"
        config = _newcomer(tmp_path, **{"listen" if which == "listener" else "admin": taken})
        line = _one_line(run_cli("run", "--no-state", str(config)), 1)
    who = "listener 'web'" if which == "listener" else "admin API (admin.address)"
    assert line == (
        f"triogate: {who}: cannot bind {taken}: Address already in use; another process "
        "listens there: stop it, or change the address (port 0 takes any free port)"
    )


def test_a_misspelt_key_suggests_the_right_one(tmp_path: Path) -> None:
    config = _newcomer(tmp_path)
    config.write_text(config.read_text().replace("    address:", "    adress:", 1))
    line = _one_line(run_cli("run", "--no-state", str(config)), 2)
    assert line == (
        f"triogate: {config}: listeners[0].adress: unknown field (did you mean 'address'?); "
        f"then check the file with: triogate validate {config}"
    )


def test_a_route_to_an_unknown_cluster_names_the_known_ones(tmp_path: Path) -> None:
    config = _newcomer(tmp_path, route_to="wbe")
    line = _one_line(run_cli("run", "--no-state", str(config)), 2)
    assert (
        "listeners[0].routes[0].cluster: unknown cluster 'wbe' "
        "(did you mean 'web'? the clusters: api, web)"
    ) in line
    assert line.endswith(f"triogate validate {config}")


def test_a_certificate_whose_key_does_not_match(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert, other = ca.issue_cert("localhost"), ca.issue_cert("localhost")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    other.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    tls = (
        f'    tls: {{certificates: [{{cert: "{tmp_path / "cert.pem"}", '
        f'key: "{tmp_path / "key.pem"}"}}]}}\n'
    )
    line = _one_line(run_cli("run", "--no-state", str(_newcomer(tmp_path, tls=tls))), 2)
    assert "listeners[0].tls.certificates[0].key" in line
    assert f"not the key of {tmp_path / 'cert.pem'}" in line
    assert "point key at the private key this certificate was issued with" in line


def test_etcd_unreachable_without_a_cache(tmp_path: Path) -> None:
    store = f'config_store: {{type: etcd, endpoints: ["http://127.0.0.1:{_free_port()}"]}}\n'
    config = _newcomer(tmp_path, extra=store)
    line = _one_line(run_cli("run", "--no-state", str(config)), 1)
    assert line.startswith("triogate: etcd unreachable (")
    assert "no local cache (--no-state)" in line
    assert f"start etcd, or correct config_store.endpoints in {config}, and run again" in line
