"""Reading a config from YAML or JSON text or files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gateway.config.model import Address, AdminConfig, Cluster, Config, Listener
from gateway.config.structure import structure
from gateway.config.validate import check, ensure_valid
from gateway.errors import ConfigError, ConfigIssue


def config_from_data(data: Any) -> Config:
    """Structure and validate plain data; raise ``ConfigError`` listing every problem.

    Problems of shape (a wrong type, an unknown field) and of meaning (an unknown
    cluster, a duplicate name) are reported together: items that fail to structure are
    stood in for by placeholders so the whole-config checks still run on the rest.
    """
    if data is None:
        data = {}
    try:
        return ensure_valid(structure(Config, data))
    except ConfigError as e:
        shape_issues = list(e.issues)
        if not isinstance(data, dict) or any(i.path.startswith("version") for i in shape_issues):
            raise
    best_effort = _best_effort(data, shape_issues)
    semantic = [] if best_effort is None else check(best_effort)
    seen = {i.path for i in shape_issues}
    raise ConfigError(shape_issues + [i for i in semantic if i.path not in seen])


def _best_effort(data: dict[str, Any], shape_issues: list[ConfigIssue]) -> Config | None:
    """The config with each item that failed to structure replaced by a placeholder."""
    parts: dict[str, Any] = {}
    for key, cls in (("listeners", Listener), ("clusters", Cluster)):
        items = data.get(key, [])
        if not isinstance(items, list):
            return None
        built = []
        for i, raw in enumerate(items):
            try:
                built.append(structure(cls, raw, f"{key}[{i}]"))
            except ConfigError:
                name = raw.get("name") if isinstance(raw, dict) else None
                name = name if isinstance(name, str) and name else f"#{i}"
                if cls is Cluster:
                    built.append(Cluster(name=name))
                else:
                    built.append(Listener(name=name, address=Address("0.0.0.0", 0)))
        parts[key] = tuple(built)
    try:
        admin = structure(AdminConfig, data.get("admin", {}), "admin")
    except ConfigError:
        admin = AdminConfig()
    return Config(listeners=parts["listeners"], clusters=parts["clusters"], admin=admin)


def config_from_text(text: str, *, source: str = "<config>") -> Config:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise ConfigError([ConfigIssue("", f"{where}: not valid YAML: {e}")]) from None
    return config_from_data(data)


def load_config(path: str | Path) -> Config:
    """Load and validate a YAML (or JSON) config file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([ConfigIssue("", f"cannot read {p}: {e.strerror}")]) from None
    return config_from_text(text, source=str(p))
