"""Toxiproxy's toxics as the config's ``Toxic``: their JSON, defaults and checks.

Theory of operation: a toxic in a Toxiproxy body is a ``ToxicWrapper`` (name, type,
stream, toxicity) around a typed attributes struct chosen by ``type``. ``toxic_from``
decodes one as Toxiproxy's ``AddToxicJson`` does, in its order of checks (the body, the
stream, the default name ``<type>_<stream>``, the type, a name already taken, the
attributes), and builds the config's ``Toxic``; ``toxic_json`` writes one back in
Toxiproxy's field order, with only its type's attributes.

Where Toxiproxy accepts an attribute and then crashes or stalls (a ``bandwidth`` rate
of 0 or below, a ``slicer`` with ``average_size`` 0 or below), ``check_hazards``
answers 400 in its error format instead (as does the config's validation for a slicer
whose ``size_variation`` is not below its ``average_size``: Toxiproxy can panic on it).
Other values Toxiproxy accepts are accepted, but the config holds none below 0 and no
toxicity outside 0-1, so ``clamped`` stores each as the value Toxiproxy treats it as
(a negative ``latency``, ``jitter``, ``delay``, ``timeout``, ``bytes`` or
``size_variation`` acts as 0 there; a toxicity above 1 as 1, below 0 as 0), and the
answer shows the stored value. (Toxiproxy echoes them as sent. One case behaves
slightly differently: a negative latency with a larger jitter, whose delays Toxiproxy
draws around the negative mean and clips at 0.)

Beyond Toxiproxy (its users' requests): ``slow_open`` (``delay`` ms before the upstream
connection is made), ``shared`` on ``bandwidth`` (one rate for all the listener's
connections), and ``source`` on any toxic (client addresses or networks it applies
to). They are written back only when set, so a Toxiproxy client sees its own shapes.
"""

from __future__ import annotations

import struct
from collections.abc import Collection, Mapping
from typing import Any, Final, cast, get_args

import attrs

from admin.toxiproxy.decode import GoType, decode_struct
from admin.toxiproxy.errors import ToxiproxyError
from gateway.config import Toxic, ToxicAttributes
from gateway.config.model import ToxicType


@attrs.frozen
class ToxicKind:
    """A toxic type as Toxiproxy declares it: its Go struct and attribute fields."""

    struct: str
    #: JSON name -> Go type, in the struct's field order (the order they are written)
    fields: Mapping[str, GoType]
    #: triogate's own attributes: accepted, and written back only when not the default
    extra: Mapping[str, GoType] = attrs.field(factory=dict)


KINDS: Final[Mapping[str, ToxicKind]] = {
    "latency": ToxicKind("LatencyToxic", {"latency": "int64", "jitter": "int64"}),
    "bandwidth": ToxicKind("BandwidthToxic", {"rate": "int64"}, {"shared": "bool"}),
    "slow_close": ToxicKind("SlowCloseToxic", {"delay": "int64"}),
    "timeout": ToxicKind("TimeoutToxic", {"timeout": "int64"}),
    "reset_peer": ToxicKind("ResetToxic", {"timeout": "int64"}),
    "slicer": ToxicKind(
        "SlicerToxic", {"average_size": "int", "size_variation": "int", "delay": "int"}
    ),
    "limit_data": ToxicKind("LimitDataToxic", {"bytes": "int64"}),
    "noop": ToxicKind("NoopToxic", {}),
    "slow_open": ToxicKind("SlowOpenToxic", {"delay": "int64"}),
}
assert set(KINDS) <= set(get_args(ToxicType))

#: the wrapper's own fields (``attributes`` is decoded once the type is known)
_WRAPPER: Final[Mapping[str, GoType]] = {
    "name": "string",
    "type": "string",
    "stream": "string",
    "toxicity": "float32",
    "source": "[]string",
}
STREAMS: Final = ("upstream", "downstream")


def toxic_from(value: Any, taken: Collection[str], *, top_type: str) -> Toxic:
    """A new toxic from a create body; ``ToxiproxyError`` as Toxiproxy answers it.

    ``taken``: the names of the proxy's toxics (both streams).
    """
    wrapper = decode_struct(
        value,
        _WRAPPER,
        "ToxicWrapper",
        {"name": "", "type": "", "stream": "downstream", "toxicity": 1.0, "source": []},
        top_type=top_type,
    )
    stream = wrapper["stream"].lower()
    if stream not in STREAMS:
        raise ToxiproxyError(400, "stream was invalid, can be either upstream or downstream")
    name = wrapper["name"] or f"{wrapper['type']}_{wrapper['stream']}"
    kind = KINDS.get(wrapper["type"])
    if kind is None:
        raise ToxiproxyError(400, "invalid toxic type")
    if name in taken:
        raise ToxiproxyError(409, "toxic already exists")
    attributes = _attributes(kind, _field(value, "attributes"), ToxicAttributes())
    check_hazards(wrapper["type"], attributes)
    return clamped(
        Toxic(
            name=name,
            type=cast(ToxicType, wrapper["type"]),
            stream="upstream" if stream == "upstream" else "downstream",
            toxicity=_float32(wrapper["toxicity"]),
            attributes=attributes,
            source=tuple(wrapper["source"]),
        )
    )


def toxic_updated(toxic: Toxic, value: Any) -> Toxic:
    """``toxic`` with an update body applied: its ``attributes`` merged over the current
    ones, and its ``toxicity``; name, type and stream in the body are ignored."""
    kind = KINDS[toxic.type]
    wrapper = decode_struct(
        value,
        {"toxicity": "float32"},
        "struct { Attributes interface {}; Toxicity float32 }",
        {"toxicity": toxic.toxicity},
    )
    attributes = _attributes(kind, _field(value, "attributes"), toxic.attributes)
    check_hazards(toxic.type, attributes)
    return clamped(
        attrs.evolve(toxic, toxicity=_float32(wrapper["toxicity"]), attributes=attributes)
    )


#: attributes whose negative values Toxiproxy treats as 0
_NOT_NEGATIVE: Final = ("latency", "jitter", "delay", "timeout", "bytes", "size_variation")


def clamped(toxic: Toxic) -> Toxic:
    """``toxic`` with each value the config cannot hold replaced by the one Toxiproxy
    treats it as: negative attributes 0, toxicity within 0-1."""
    changes: dict[str, Any] = {
        name: 0 for name in _NOT_NEGATIVE if getattr(toxic.attributes, name) < 0
    }
    toxicity = min(1.0, max(0.0, toxic.toxicity))
    if not changes and toxicity == toxic.toxicity:
        return toxic
    return attrs.evolve(
        toxic, toxicity=toxicity, attributes=attrs.evolve(toxic.attributes, **changes)
    )


def check_hazards(type_: str, attributes: ToxicAttributes) -> None:
    """400 where Toxiproxy would crash or stall on these attributes."""
    if type_ == "bandwidth" and attributes.rate <= 0:
        raise ToxiproxyError(
            400,
            "bandwidth rate must be greater than 0 (Toxiproxy stalls on 0 and crashes "
            "on a negative rate)",
        )
    if type_ == "slicer" and attributes.average_size <= 0:
        raise ToxiproxyError(
            400, "slicer average_size must be greater than 0 (Toxiproxy crashes on it)"
        )


def toxic_json(toxic: Toxic) -> dict[str, Any]:
    """A toxic as Toxiproxy writes it (its field order; only its type's attributes)."""
    kind = KINDS.get(toxic.type, KINDS["noop"])
    attributes = {name: getattr(toxic.attributes, name) for name in kind.fields}
    defaults = ToxicAttributes()
    for name in kind.extra:
        if getattr(toxic.attributes, name) != getattr(defaults, name):
            attributes[name] = getattr(toxic.attributes, name)
    out: dict[str, Any] = {
        "attributes": attributes,
        "name": toxic.name,
        "type": toxic.type,
        "stream": toxic.stream,
        "toxicity": go_number(toxic.toxicity),
    }
    if toxic.source:
        out["source"] = list(toxic.source)
    return out


def chain_order(toxics: tuple[Toxic, ...]) -> list[Toxic]:
    """Toxiproxy's listing order: upstream toxics first, then downstream, each in order."""
    return [t for t in toxics if t.stream == "upstream"] + [
        t for t in toxics if t.stream == "downstream"
    ]


def _field(value: Any, name: str) -> Any:
    """The raw value of ``name`` in a JSON object (Go's case-insensitive match), or None."""
    if not isinstance(value, dict):
        return None
    if name in value:
        return value[name]
    for key, item in value.items():
        if key.lower() == name:
            return item
    return None


def _attributes(kind: ToxicKind, value: Any, current: ToxicAttributes) -> ToxicAttributes:
    fields = {**kind.fields, **kind.extra}
    merged = decode_struct(
        value,
        fields,
        f"{kind.struct}.attributes",
        {name: getattr(current, name) for name in fields},
    )
    return attrs.evolve(current, **merged)


def _float32(value: float) -> float:
    """``value`` rounded to a float32, then written with the fewest digits that give it
    back (Go marshals a float32 so: 0.1 stays 0.1, 1 is written 1)."""
    try:
        single = struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:
        raise ToxiproxyError(
            400,
            f"bad request body: json: cannot unmarshal number {value} into Go value "
            "of type float32",
        ) from None
    for digits in range(1, 10):
        shortest = float(f"{single:.{digits}g}")
        if struct.pack("f", shortest) == struct.pack("f", single):
            return shortest
    return float(single)


def go_number(value: float) -> int | float:
    """A float32 as Go's JSON writes it: a whole number without ``.0``."""
    return int(value) if value.is_integer() and abs(value) < 1e21 else value


__all__ = [
    "KINDS",
    "STREAMS",
    "ToxicKind",
    "chain_order",
    "check_hazards",
    "go_number",
    "toxic_from",
    "toxic_json",
    "toxic_updated",
]
