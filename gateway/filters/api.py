"""What a filter sees and says, whatever it is written in (Python, or a proxy-wasm module).

``HeaderMap`` is a request's or response's header list seen as a mutable, ordered,
case-insensitive multi-map. It edits the list it wraps in place (the proxy core's own
``[(name, value), ...]`` of bytes), so a filter's change is what goes upstream or
downstream, with no copy on the way in or out. Python filters use ``str`` (Latin-1, as
HTTP/1.1 field values are octets); the proxy-wasm host uses the ``*_bytes`` forms.

``LocalReply`` is a filter answering a request itself: the request goes no further
(upstream, or to the filters after it), and the reply goes to the client.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import attrs

__all__ = ["HeaderMap", "LocalReply"]

Fields = list[tuple[bytes, bytes]]


def _b(text: str | bytes) -> bytes:
    return text if isinstance(text, bytes) else text.encode("latin-1")


class HeaderMap:
    """A header list as a case-insensitive multi-map, edited in place."""

    __slots__ = ("fields",)

    def __init__(self, fields: Fields | None = None) -> None:
        #: the wrapped list: names as they came (lower-cased when set here)
        self.fields: Fields = fields if fields is not None else []

    # -- str (Python filters) -----------------------------------------------------------

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``, or ``default``."""
        value = self.get_bytes(_b(name))
        return value.decode("latin-1") if value is not None else default

    def get_all(self, name: str) -> list[str]:
        key = _b(name).lower()
        return [v.decode("latin-1") for n, v in self.fields if n.lower() == key]

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __setitem__(self, name: str, value: str) -> None:
        self.set_bytes(_b(name), _b(value))

    def __delitem__(self, name: str) -> None:
        if not self.remove_bytes(_b(name)):
            raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str | bytes) and self.get_bytes(_b(name)) is not None

    def add(self, name: str, value: str) -> None:
        """Another value of ``name``, after any there are."""
        self.add_bytes(_b(name), _b(value))

    def remove(self, name: str) -> None:
        """Every value of ``name`` (none: nothing happens)."""
        self.remove_bytes(_b(name))

    def items(self) -> list[tuple[str, str]]:
        return [(n.decode("latin-1"), v.decode("latin-1")) for n, v in self.fields]

    def __iter__(self) -> Iterator[str]:
        return iter([n.decode("latin-1") for n, _ in self.fields])

    def __len__(self) -> int:
        return len(self.fields)

    def __repr__(self) -> str:
        return f"HeaderMap({self.items()!r})"

    # -- bytes (the proxy-wasm host, the chain) -------------------------------------------

    def get_bytes(self, name: bytes) -> bytes | None:
        key = name.lower()
        for n, v in self.fields:
            if n == key or n.lower() == key:
                return v
        return None

    def set_bytes(self, name: bytes, value: bytes) -> None:
        """``name`` has ``value`` only: replaces the first, removes the others (proxy-wasm's
        ``replace``, Envoy's ``setCopy``); appended when absent."""
        key = name.lower()
        fields = self.fields
        for i, (n, _) in enumerate(fields):
            if n.lower() == key:
                fields[i] = (key, value)
                fields[i + 1 :] = [f for f in fields[i + 1 :] if f[0].lower() != key]
                return
        fields.append((key, value))

    def add_bytes(self, name: bytes, value: bytes) -> None:
        self.fields.append((name.lower(), value))

    def remove_bytes(self, name: bytes) -> bool:
        """Removes every value of ``name``; returns whether there was one."""
        key = name.lower()
        kept = [f for f in self.fields if f[0].lower() != key]
        removed = len(kept) != len(self.fields)
        self.fields[:] = kept
        return removed

    def replace_all(self, pairs: Sequence[tuple[bytes, bytes]]) -> None:
        """The whole list replaced (proxy-wasm's ``set_header_map_pairs``)."""
        self.fields[:] = [(n.lower(), v) for n, v in pairs]


@attrs.frozen
class LocalReply:
    """A filter's own answer: ``status``, ``body`` and ``headers``; nothing goes upstream."""

    status: int = attrs.field(validator=attrs.validators.instance_of(int))
    body: bytes | str = b""
    headers: Mapping[str, str] | Sequence[tuple[str, str]] = ()

    @status.validator
    def _status(self, _attribute: object, value: int) -> None:
        if not 200 <= value <= 599:
            raise ValueError(f"a local reply's status is 200-599, not {value}")

    def body_bytes(self) -> bytes:
        return _b(self.body)

    def header_fields(self) -> Fields:
        pairs = self.headers.items() if isinstance(self.headers, Mapping) else self.headers
        return [(_b(n).lower(), _b(v)) for n, v in pairs]
