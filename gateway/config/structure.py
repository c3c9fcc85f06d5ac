"""Plain data (YAML, JSON) to and from the attrs config model, with every error by path.

``structure(cls, data)`` walks the model's type hints and collects *all* problems as
``ConfigIssue(path, message)`` instead of stopping at the first, so a user fixes a file
in one pass. ``unstructure`` is its inverse (used for ``GET /config`` and the state
file); ``json_schema`` describes the same shapes for OpenAPI. One walker per direction
keeps the three in step with ``model.py``.
"""

from __future__ import annotations

import difflib
import functools
import math
import types
import typing
from typing import Any, Literal, TypeVar, get_args, get_origin

import attrs

from gateway.config.model import Address
from gateway.errors import ConfigError, ConfigIssue
from policies.errors import InvalidSetting

T = TypeVar("T")
_NoneType = type(None)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if tp is Address:
        return "'host:port' string"
    if attrs.has(tp):
        return "mapping"
    if origin is tuple or origin is dict:
        return "list" if origin is tuple else "mapping"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    return {int: "integer", float: "number", str: "string", bool: "boolean"}.get(tp, str(tp))


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _structure(tp: Any, data: Any, path: str, issues: list[ConfigIssue]) -> Any:
    origin = get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in get_args(tp) if a is not _NoneType]
        if data is None and len(args) < len(get_args(tp)):
            return None
        return _structure(args[0], data, path, issues)
    if tp is Address:
        try:
            return Address.parse(data)
        except ValueError as e:
            issues.append(ConfigIssue(path, str(e)))
            return None
    if attrs.has(tp):
        return _structure_attrs(tp, data, path, issues)
    if origin is tuple:
        if not isinstance(data, list | tuple):
            issues.append(ConfigIssue(path, f"must be a list, not {type(data).__name__}"))
            return ()
        (item_tp, _ellipsis) = get_args(tp)
        return tuple(_structure(item_tp, v, _join(path, i), issues) for i, v in enumerate(data))
    if origin is dict:
        key_tp, val_tp = get_args(tp)
        if not isinstance(data, dict):
            issues.append(ConfigIssue(path, "must be a mapping"))
            return {}
        return {
            _structure(key_tp, k, path, issues): _structure(val_tp, v, _join(path, str(k)), issues)
            for k, v in data.items()
        }
    if origin is Literal:
        if data not in get_args(tp):
            issues.append(ConfigIssue(path, f"must be {_type_name(tp)}, not {data!r}"))
        return data
    if tp is float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            issues.append(ConfigIssue(path, f"must be a number, not {data!r}"))
            return 0.0
        if not math.isfinite(data):
            issues.append(ConfigIssue(path, f"must be a finite number, not {data!r}"))
            return 0.0
        return float(data)
    if tp is int or tp is str or tp is bool:
        if isinstance(data, bool) is not (tp is bool) or not isinstance(data, tp):
            issues.append(ConfigIssue(path, f"must be {_type_name(tp)}, not {data!r}"))
        return data
    if tp is Any:
        return data
    raise TypeError(f"structure: unsupported type {tp!r}")  # a bug in model.py, not in input


def _structure_attrs(cls: Any, data: Any, path: str, issues: list[ConfigIssue]) -> Any:
    if not isinstance(data, dict):
        issues.append(ConfigIssue(path, f"must be a mapping, not {type(data).__name__}"))
        return None
    hints = _hints(cls)
    fields = attrs.fields_dict(cls)
    names = [name for name, field in fields.items() if field.init]
    #: required fields a misspelt key was meant for: its issue says so, not "is required"
    meant: set[str] = set()
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), names, n=1)
            message = f"unknown field (did you mean {close[0]!r}?)" if close else "unknown field"
            meant.update(name for name in close if name not in data)
            issues.append(ConfigIssue(_join(path, str(key)), message))
    kwargs: dict[str, Any] = {}
    before = len(issues)
    missing = False
    for name, field in fields.items():
        if not field.init:
            continue
        if name in data:
            kwargs[name] = _structure(hints[name], data[name], _join(path, name), issues)
        elif field.default is attrs.NOTHING:
            missing = True
            if name not in meant:
                issues.append(ConfigIssue(_join(path, name), "is required"))
    if len(issues) > before or missing:
        return None
    try:
        return cls(**kwargs)
    except InvalidSetting as e:  # a policy's settings name the field they refuse
        issues.append(ConfigIssue(_join(path, e.field), e.reason))
        return None
    except ValueError as e:  # a model's own validation (e.g. BalancerOptions ranges)
        issues.append(ConfigIssue(path, str(e)))
        return None


def structure(cls: type[T], data: Any, path: str = "") -> T:
    """Build ``cls`` from plain data; raise ``ConfigError`` listing every problem."""
    issues: list[ConfigIssue] = []
    value = _structure(cls, data, path, issues)
    if issues:
        raise ConfigError(issues)
    return typing.cast(T, value)


def unstructure(value: Any) -> Any:
    """The plain-data form of a model value; fields left at their default are kept."""
    if isinstance(value, Address):
        return str(value)
    if attrs.has(type(value)):
        return {f.name: unstructure(getattr(value, f.name)) for f in attrs.fields(type(value))}
    if isinstance(value, tuple | list):
        return [unstructure(v) for v in value]
    if isinstance(value, dict):
        return {k: unstructure(v) for k, v in value.items()}
    return value


def json_schema(tp: Any, defs: dict[str, Any], *, ref_prefix: str = "#/components/schemas/") -> Any:
    """A JSON Schema for ``tp``; attrs classes go into ``defs`` and are referenced."""
    origin = get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        options = [json_schema(a, defs, ref_prefix=ref_prefix) for a in get_args(tp)]
        return {"anyOf": options}
    if tp is _NoneType:
        return {"type": "null"}
    if tp is Address:
        return {"type": "string", "pattern": r"^(\[[0-9a-fA-F:.]+\]|[^:\[\]]+):[0-9]{1,5}$"}
    if attrs.has(tp):
        name = tp.__name__
        if name not in defs:
            defs[name] = {}  # placeholder: breaks recursion
            props = {}
            required = []
            hints = _hints(tp)
            for f in attrs.fields(tp):
                if not f.init:
                    continue
                props[f.name] = json_schema(hints[f.name], defs, ref_prefix=ref_prefix)
                if f.default is attrs.NOTHING:
                    required.append(f.name)
            schema: dict[str, Any] = {
                "type": "object",
                "properties": props,
                "additionalProperties": False,
            }
            if tp.__doc__:
                schema["description"] = tp.__doc__.strip().splitlines()[0]
            if required:
                schema["required"] = required
            defs[name] = schema
        return {"$ref": ref_prefix + name}
    if origin is tuple:
        return {"type": "array", "items": json_schema(get_args(tp)[0], defs, ref_prefix=ref_prefix)}
    if origin is dict:
        return {
            "type": "object",
            "additionalProperties": json_schema(get_args(tp)[1], defs, ref_prefix=ref_prefix),
        }
    if origin is Literal:
        return {"enum": list(get_args(tp))}
    simple: dict[Any, str] = {int: "integer", float: "number", str: "string", bool: "boolean"}
    if tp in simple:
        return {"type": simple[tp]}
    return {}
