"""Field validators for the policies' frozen configs, and a way to collect every problem.

Theory of operation
-------------------
Every config in ``policies/`` is an ``@attrs.frozen`` class whose fields carry
validators from this module. A validator that rejects a value raises
``InvalidSetting(field, reason)``: the field's name and what is wrong with the value
(``"must be > 0, not 0"``), so a config loader can report it at the field's own path
(``clusters[0].breaker.window: must be > 0, not 0``). Rules across fields (say
``max_open_time >= open_time``) live in the class's ``__attrs_post_init__`` and name
the later field.

attrs stops at the first failing validator. ``problems(cls, values)`` runs every
field's validator on its own and then the cross-field rules, so a loader can report
every problem of one config object in one pass. The validators ignore their
``instance`` argument, which is what makes running them one by one possible.

Booleans are rejected where a number is expected: ``True`` is an ``int`` in Python,
never a sensible ``window``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from policies.errors import InvalidSetting

__all__ = [
    "at_least",
    "between",
    "integer_at_least",
    "integer_between",
    "positive",
    "problems",
]

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def positive(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """A finite number > 0 (a duration, mostly)."""
    if not (_is_number(value) and value > 0):  # type: ignore[operator]
        raise InvalidSetting(attribute.name, f"must be a number > 0, not {value!r}")


def at_least(low: float) -> Validator:
    """A finite number >= ``low``."""

    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not (_is_number(value) and value >= low):  # type: ignore[operator]
            raise InvalidSetting(attribute.name, f"must be a number >= {low}, not {value!r}")

    return check


def between(low: float, high: float, *, low_open: bool = False) -> Validator:
    """A finite number in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    shown = f"{'(' if low_open else '['}{low}, {high}]"

    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        ok = _is_number(value) and (
            (low < value if low_open else low <= value)  # type: ignore[operator]
            and value <= high  # type: ignore[operator]
        )
        if not ok:
            raise InvalidSetting(attribute.name, f"must be a number in {shown}, not {value!r}")

    return check


def integer_at_least(low: int) -> Validator:
    """An integer >= ``low``."""

    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not (_is_integer(value) and value >= low):  # type: ignore[operator]
            raise InvalidSetting(attribute.name, f"must be an integer >= {low}, not {value!r}")

    return check


def integer_between(low: int, high: int) -> Validator:
    """An integer in ``[low, high]``."""

    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not (_is_integer(value) and low <= value <= high):  # type: ignore[operator]
            raise InvalidSetting(
                attribute.name, f"must be an integer in [{low}, {high}], not {value!r}"
            )

    return check


def problems(cls: type[Any], values: Mapping[str, Any]) -> list[InvalidSetting]:
    """Every problem of ``cls(**values)``: each field's own, else the cross-field ones.

    Fields missing from ``values`` take their defaults, and keys that name no field are
    left to the loader (it reports them as unknown fields); a field's converter runs before
    its validator, as in construction. An empty list means ``cls(**values)`` constructs.
    """
    found: list[InvalidSetting] = []
    for field in attrs.fields(cls):
        if not field.init or field.validator is None:
            continue
        if field.name in values:
            value = values[field.name]
        elif field.default is attrs.NOTHING or isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
            continue
        else:
            value = field.default
        if callable(field.converter):
            value = field.converter(value)
        try:
            field.validator(None, field, value)
        except InvalidSetting as e:
            found.append(e)
    if not found:
        known = {f.name for f in attrs.fields(cls) if f.init}
        try:
            cls(**{name: value for name, value in values.items() if name in known})
        except InvalidSetting as e:
            found.append(e)
    return found
