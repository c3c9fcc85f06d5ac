"""The generated references in ``docs/`` are what the code makes now, and say everything.

When a config field or a command's help changes, these fail until the references are
regenerated: ``python -m triogate.reference`` (then commit ``docs/``).
"""

from __future__ import annotations

from typing import Literal

import attrs

from gateway.config import Address, Config, Listener
from triogate import reference
from triogate.reference import (
    CLI_REFERENCE,
    CONFIG_REFERENCE,
    DOCS,
    REGENERATE,
    config_classes,
    field_docs,
    type_text,
    undocumented,
)


def _stale_message(name: str) -> str:
    return f"docs/{name} differs from what the code makes: run `{REGENERATE}` and commit docs/"


def test_the_config_reference_is_current() -> None:
    committed = (DOCS / CONFIG_REFERENCE).read_text()
    assert committed == reference.config_reference(), _stale_message(CONFIG_REFERENCE)


def test_the_cli_reference_is_current() -> None:
    committed = (DOCS / CLI_REFERENCE).read_text()
    assert committed == reference.cli_reference(), _stale_message(CLI_REFERENCE)


def test_every_config_key_has_a_meaning() -> None:
    missing = undocumented()
    assert missing == [], (
        "config fields without a `#:` comment above them (their meaning in "
        f"docs/{CONFIG_REFERENCE}): {', '.join(missing)}"
    )


def test_every_key_is_in_the_reference() -> None:
    text = reference.config_reference()
    for cls in config_classes():
        section = text.split(f"\n## {cls.__name__}\n", 1)[1].split("\n## ", 1)[0]
        for field in attrs.fields(cls):
            if field.init:
                assert f"| `{field.name}` |" in section, (cls.__name__, field.name)


def test_the_walk_reaches_nested_settings_once_each() -> None:
    classes = config_classes()
    assert classes[0] is Config
    assert len(classes) == len(set(classes))
    names = {cls.__name__ for cls in classes}
    # the policies' settings classes the model holds, two and three levels down
    assert {"OutlierConfig", "RetryBudget", "LognormalDelay", "RolloutEvent"} <= names
    assert Address not in classes  # written as a string


@attrs.frozen
class _Sample:
    #: the first line
    #: and the second
    documented: int = 1
    # a plain comment is not documentation
    undocumented: str = "x"
    multiline: tuple[int, ...] = attrs.field(
        default=(),
    )


def test_field_docs_are_the_hash_colon_comments_right_above() -> None:
    assert field_docs(_Sample) == {"documented": "the first line and the second"}


def test_types_read_as_a_config_file_writes_them() -> None:
    assert type_text(Address) == "`host:port`"
    assert type_text(int | None) == "integer or null"
    assert type_text(tuple[Listener, ...]) == "list of [Listener](#listener)"
    assert type_text(Literal["a", "b"]) == "one of `a`, `b`"
    assert type_text(dict[str, float]) == "mapping of string to number"
