"""Edits of the config as pure functions: find an item by its URL key, build the next config.

Theory of operation: every resource of the admin API is an item of a keyed list
somewhere in the ``Config`` (listeners, a listener's routes, a cluster's endpoints...).
A ``Collection`` says where such a list is (its field on the parent value), what its
items are (the model class ``structure`` builds) and how an item is named in a URL. A
``Chain`` of ``(collection, key)`` pairs leads from the config to one item; ``locate``
turns it into a ``Loc``, the fields and indices to walk, and from a ``Loc`` come both
the item and its path in the config (``clusters[0].endpoints[1]``), which is where body
errors are reported, so the user sees them where the file would have them.

The ``*_change`` functions return a ``Change`` for ``ControlPlane.apply``: it runs inside
the control plane actor against the config current at that instant, so a key resolved
there cannot go stale before the write lands. A change raises ``ItemNotFound``,
``ItemExists`` or ``ConfigError``; the actor hands the error back to the caller.

Nothing here knows HTTP: a new resource is a new ``Collection``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs

from gateway import ConfigError, ConfigIssue, GatewayError
from gateway.config import Address, Config, structure, unstructure

Change = Callable[[Config], Config]
#: fields and indices walked from the config to a value; index None for a plain field
Loc = tuple[tuple[str, int | None], ...]


class EditError(GatewayError):
    """An edit names something it cannot: a missing item, or a key already taken."""


class ItemNotFound(EditError):
    status_hint = 404

    def __init__(
        self, message: str, *, key: str | None = None, listed_at: str | None = None
    ) -> None:
        super().__init__(message)
        #: the key from the URL's path that names nothing (where the list is found from)
        self.key = key
        #: the URL listing what there is, when the key came from elsewhere (a query)
        self.listed_at = listed_at


class ItemExists(EditError):
    status_hint = 409


def _by_name(item: Any) -> str | None:
    name = getattr(item, "name", None)
    return name if isinstance(name, str) else None


@attrs.frozen
class Collection:
    """A keyed list inside the config: ``field`` of the parent value, items of ``item_type``."""

    noun: str
    field: str
    item_type: type[Any]
    #: an item's key in URLs; None if it has none (then only its index names it)
    key_of: Callable[[Any], str | None] = _by_name
    #: the canonical form of a key from a URL (e.g. an address written another way)
    normalize: Callable[[str], str] = str
    #: whether a decimal key may name an item by its position
    by_index: bool = False

    def find(self, items: Sequence[Any], key: str) -> int | None:
        """The index of the item named ``key``: by key first, then by position."""
        try:
            wanted = self.normalize(key)
        except ValueError:
            return None
        for i, item in enumerate(items):
            if self.key_of(item) == wanted:
                return i
        if self.by_index and key.isdecimal() and int(key) < len(items):
            return int(key)
        return None

    def url_key(self, item: Any, index: int) -> str:
        key = self.key_of(item)
        return key if key is not None else str(index)


def endpoint_key(text: str) -> str:
    """An endpoint's address in its canonical spelling (``ValueError`` if it does not parse)."""
    return str(Address.parse(text))


Chain = Sequence[tuple[Collection, str]]


def path_of(loc: Loc) -> str:
    """The config path of ``loc``, as ``ConfigIssue`` paths are written."""
    parts: list[str] = []
    for field, index in loc:
        parts.append(f".{field}" if parts else field)
        if index is not None:
            parts.append(f"[{index}]")
    return "".join(parts)


def get_at(root: Any, loc: Loc) -> Any:
    value = root
    for field, index in loc:
        value = getattr(value, field)
        if index is not None:
            value = value[index]
    return value


_DELETE = object()


def _put(root: Any, loc: Loc, value: Any) -> Any:
    (field, index), rest = loc[0], loc[1:]
    current = getattr(root, field)
    if index is None:
        child = value if not rest else _put(current, rest, value)
        return attrs.evolve(root, **{field: child})
    items = list(current)
    if not rest and value is _DELETE:
        del items[index]
    elif index == len(items):
        items.append(value)
    else:
        items[index] = value if not rest else _put(items[index], rest, value)
    return attrs.evolve(root, **{field: tuple(items)})


def put_at(config: Config, loc: Loc, value: Any) -> Config:
    """``config`` with the value at ``loc`` replaced, appended (index = length) or deleted."""
    changed: Config = _put(config, loc, value)
    return changed


def locate(config: Config, chain: Chain) -> Loc:
    """The ``Loc`` of the item ``chain`` names; ``ItemNotFound`` names the first missing link."""
    loc: Loc = ()
    value: Any = config
    for collection, key in chain:
        items = getattr(value, collection.field)
        index = collection.find(items, key)
        if index is None:
            where = f" in {path_of(loc)}" if loc else ""
            raise ItemNotFound(f"no {collection.noun} {key!r}{where}", key=key)
        loc = (*loc, (collection.field, index))
        value = items[index]
    return loc


def _find(config: Config, chain: Chain) -> Loc | None:
    try:
        return locate(config, chain)
    except ItemNotFound:
        return None


def get_item(config: Config, chain: Chain) -> Any:
    return get_at(config, locate(config, chain))


def list_items(config: Config, parent: Chain, collection: Collection) -> tuple[Any, ...]:
    items: tuple[Any, ...] = getattr(get_item(config, parent), collection.field)
    return items


def _structure_item(collection: Collection, body: Any, loc: Loc) -> Any:
    return structure(collection.item_type, body, path_of(loc))


def create_change(
    parent: Chain, collection: Collection, body: Any, *, before: str | None = None
) -> Change:
    """Add a new item built from ``body``: at the end, or just before the item named
    ``before`` (where order matters: routes, the first match winning); ``ItemExists`` if
    its key is taken."""

    def change(config: Config) -> Config:
        parent_loc = locate(config, parent)
        items = getattr(get_at(config, parent_loc), collection.field)
        index = len(items) if before is None else collection.find(items, before)
        if index is None:
            raise ItemNotFound(f"no {collection.noun} {before!r} to insert before")
        loc = (*parent_loc, (collection.field, index))
        item = _structure_item(collection, body, loc)
        key = collection.key_of(item)
        if key is not None and collection.find(items, key) is not None:
            raise ItemExists(f"{collection.noun} {key!r} already exists")
        field_loc = (*parent_loc, (collection.field, None))
        return put_at(config, field_loc, (*items[:index], item, *items[index:]))

    return change


def created_index(items: Sequence[Any], collection: Collection, before: str | None) -> int:
    """Where ``create_change(..., before=before)`` put its item in the new ``items``."""
    if before is None:
        return len(items) - 1
    index = next((i for i, item in enumerate(items) if collection.key_of(item) == before), None)
    # named: the item it went before is one further on; by position: it took that place
    return int(before) if index is None else index - 1


def replace_change(chain: Chain, body: Any) -> Change:
    """Replace the item ``chain`` names with one built from ``body``; its key must stay."""
    collection, key = chain[-1]

    def change(config: Config) -> Config:
        loc = locate(config, chain)
        new = put_at(config, loc, _structure_item(collection, body, loc))
        if _find(new, chain) != loc:
            issue = f"must keep its key {key!r} (delete and create to rename)"
            raise ConfigError([ConfigIssue(path_of(loc), issue)])
        return new

    return change


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch: objects merge, ``null`` removes (back to the default)."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def patch_change(chain: Chain, patch: Any) -> Change:
    """Merge ``patch`` into the item ``chain`` names, then replace it with the result."""

    def change(config: Config) -> Config:
        current = unstructure(get_item(config, chain))
        return replace_change(chain, merge_patch(current, patch))(config)

    return change


def delete_change(chain: Chain) -> Change:
    def change(config: Config) -> Config:
        return put_at(config, locate(config, chain), _DELETE)

    return change


def update_change(chain: Chain, edit: Callable[[Any, str], Any]) -> Change:
    """Replace the item ``chain`` names with ``edit(item, path)``, for small typed calls."""

    def change(config: Config) -> Config:
        loc = locate(config, chain)
        return put_at(config, loc, edit(get_at(config, loc), path_of(loc)))

    return change
