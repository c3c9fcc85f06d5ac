"""``triogate run`` refuses to start on a state file it cannot use: one line, exit 1."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

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
