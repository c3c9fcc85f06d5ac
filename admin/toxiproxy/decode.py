"""Request bodies read as Toxiproxy's Go server reads them (``encoding/json``).

Theory of operation: Toxiproxy decodes each body with ``json.NewDecoder(body).Decode``
into a typed Go struct, so a compatible server must accept and refuse the same bodies
and say so in the same words:

- one JSON value is read; whatever follows it is ignored; an empty body is ``EOF``;
- object keys match struct fields case-insensitively, unknown keys are ignored, and
  ``null`` leaves a field as it was (its default);
- a value of the wrong JSON type is ``json: cannot unmarshal <kind> into Go struct
  field <Struct>.<path> of type <go type>`` (a number says which: ``number 1.5``); a
  top-level value of the wrong kind is ``... into Go value of type <type>``.

Syntax errors use Go's wording for the common cases (``unexpected EOF``, ``invalid
character 'x' looking for beginning of value``); the position-specific variants Go has
(``after object key``...) are not reproduced. Each error is a ``ToxiproxyError`` 400
with Toxiproxy's ``bad request body: `` prefix.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final, Literal

from admin.toxiproxy.errors import ToxiproxyError

GoType = Literal["string", "bool", "int64", "int", "float32", "[]string"]

_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1


def bad_body(detail: str) -> ToxiproxyError:
    return ToxiproxyError(400, f"bad request body: {detail}")


def read_value(body: bytes) -> Any:
    """The first JSON value of ``body`` (Go's ``Decoder.Decode``); the rest is ignored."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_body("invalid character looking for beginning of value") from None
    start = len(text) - len(text.lstrip(" \t\r\n"))
    if start == len(text):
        raise bad_body("EOF")
    try:
        value, _ = json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError as e:
        if e.pos >= len(text.rstrip(" \t\r\n")):
            raise bad_body("unexpected EOF") from None
        char = text[e.pos]
        raise bad_body(f"invalid character {char!r} looking for beginning of value") from None
    except RecursionError:
        raise bad_body("exceeded max depth") from None
    return value


def kind_of(value: Any) -> str:
    """How Go's decoder names a JSON value in a type error."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return f"number {json.dumps(value)}"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _type_error(value: Any, where: str, go_type: str) -> ToxiproxyError:
    return bad_body(
        f"json: cannot unmarshal {kind_of(value)} into Go struct field {where} of type {go_type}"
    )


def convert(value: Any, go_type: GoType, where: str) -> Any:
    """``value`` as a Go field of ``go_type`` takes it; ``ToxiproxyError`` 400 if it cannot."""
    match go_type:
        case "string":
            if isinstance(value, str):
                return value
        case "bool":
            if isinstance(value, bool):
                return value
        case "int64" | "int":
            if (
                isinstance(value, int)
                and not isinstance(value, bool)
                and _INT64_MIN <= value <= _INT64_MAX
            ):
                return value
        case "float32":
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
        case "[]string":
            if isinstance(value, list):
                return [convert(item, "string", where) for item in value]
    raise _type_error(value, where, go_type)


def decode_struct(
    value: Any,
    fields: Mapping[str, GoType],
    struct: str,
    into: dict[str, Any],
    *,
    top_type: str | None = None,
) -> dict[str, Any]:
    """Decode a JSON object over ``into`` (its defaults, or current values) as Go does.

    ``fields`` maps each field's JSON name to its Go type; ``struct`` names the struct in
    errors (``LatencyToxic.attributes``); ``top_type``, when the object is the whole
    body, names its Go type for a top-level error. Returns ``into``, updated.
    """
    if value is None:
        return into
    if not isinstance(value, dict):
        go_value = top_type if top_type is not None else struct
        raise bad_body(f"json: cannot unmarshal {kind_of(value)} into Go value of type {go_value}")
    folded = {name.lower(): name for name in fields}
    for key, item in value.items():
        name = key if key in fields else folded.get(key.lower())
        if name is None or item is None:
            continue
        into[name] = convert(item, fields[name], f"{struct}.{name}")
    return into
