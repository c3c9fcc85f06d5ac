"""Durable runtime changes: the running config written atomically beside the config file.

A write goes to a temporary file in the same folder, is flushed and fsynced, then
renamed over the state file (atomic on POSIX), and the folder is fsynced: after a crash
the state file holds either the previous version or the new one, never a mix.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from gateway.config import Config, config_from_data, unstructure
from gateway.errors import ConfigError, ConfigIssue


def default_state_path(config_path: Path) -> Path:
    return config_path.with_name(config_path.name + ".state.json")


def save_state(path: Path, config: Config) -> None:
    data = json.dumps(unstructure(config), indent=1).encode()
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_state(path: Path) -> Config | None:
    """The persisted config, or None when there is none; ``ConfigError`` if it is invalid."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError([ConfigIssue("", f"{path}: not valid JSON: {e}")]) from None
    return config_from_data(data)
