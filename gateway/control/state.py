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
from gateway.errors import ConfigError, ConfigIssue, StateFileError


def default_state_path(config_path: Path) -> Path:
    return config_path.with_name(config_path.name + ".state.json")


def save_state(path: Path, config: Config) -> None:
    """Write ``config`` to ``path`` atomically; ``StateFileError`` if it cannot be written."""
    data = json.dumps(unstructure(config), indent=1).encode()
    try:
        _write_atomically(path, data)
    except OSError as e:
        raise StateFileError(f"cannot write the state file {path}: {e.strerror or e}") from e


def _write_atomically(path: Path, data: bytes) -> None:
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
    """The persisted config, or None when there is none.

    Raises ``ConfigError`` if it is invalid, ``StateFileError`` if it cannot be read (a
    folder on its path is a file, no permission, not UTF-8).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise StateFileError(f"cannot read the state file {path}: {reason}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError([ConfigIssue("", f"{path}: not valid JSON: {e}")]) from None
    return config_from_data(data)


def check_state_path(path: Path) -> None:
    """``StateFileError`` unless changes can be persisted at ``path`` (checked at start)."""
    folder = path.parent
    if not folder.is_dir():
        raise StateFileError(f"state file {path}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StateFileError(f"state file {path}: {folder} is not writable")
