"""The config and CLI references in ``docs/``, generated from the code so they cannot drift.

- ``docs/config-reference.md``: every key of the config, from the attrs classes of
  ``gateway.config.model`` (and the policies' settings classes they hold), walked from
  ``Config`` in field order: its type as written in YAML, its default, and its meaning,
  which is the field's ``#:`` comment (the lines starting ``#:`` right above it, as
  Sphinx reads them). A class's docstring introduces its table.
- ``docs/cli-reference.md``: every ``triogate`` command's own ``--help``.

``python -m triogate.reference`` writes both; ``--check`` only compares them with what is
committed and exits 1 naming the stale ones (``tests/test_reference.py`` runs it).
"""

from __future__ import annotations

import ast
import functools
import inspect
import json
import re
import sys
import textwrap
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import attrs
import click

from gateway.config import Address, Config
from gateway.config.model import REBIND
from gateway.config.structure import unstructure

#: where the references are committed
DOCS = Path(__file__).resolve().parents[1] / "docs"
CONFIG_REFERENCE = "config-reference.md"
CLI_REFERENCE = "cli-reference.md"
REGENERATE = "python -m triogate.reference"
#: columns of the CLI help, fixed so the output does not depend on the terminal
HELP_WIDTH = 88


# -- field documentation -------------------------------------------------------------------


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Each field's ``#:`` comment (the comment lines right above it), joined into one line."""
    lines, _ = inspect.getsourcelines(cls)
    tree = ast.parse(textwrap.dedent("".join(lines)))
    definition = tree.body[0]
    assert isinstance(definition, ast.ClassDef)
    docs: dict[str, str] = {}
    for node in definition.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        comment: list[str] = []
        index = node.lineno - 2  # the line above, 0-based
        while index >= 0 and lines[index].strip().startswith("#:"):
            comment.insert(0, lines[index].strip()[2:].strip())
            index -= 1
        if comment:
            docs[node.target.id] = " ".join(comment)
    return docs


def undocumented() -> list[str]:
    """Every config key without a ``#:`` comment, as ``Class.field``."""
    return [
        f"{cls.__name__}.{field.name}"
        for cls in config_classes()
        for field in _fields(cls)
        if field.name not in field_docs(cls)
    ]


# -- the walk ------------------------------------------------------------------------------


def _fields(cls: type) -> list[attrs.Attribute[Any]]:
    return [f for f in attrs.fields(cls) if f.init]


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _classes_in(tp: Any) -> Iterator[type]:
    """The attrs classes a type holds (through lists, mappings and optionals)."""
    if attrs.has(tp) and tp is not Address:
        yield tp
    for arg in get_args(tp):
        yield from _classes_in(arg)


def config_classes() -> list[type]:
    """Every attrs class the config holds, ``Config`` first, each once, depth first in
    field order."""
    order: list[type] = []

    def visit(cls: type) -> None:
        if cls in order:
            return
        order.append(cls)
        for field in _fields(cls):
            for inner in _classes_in(_hints(cls)[field.name]):
                visit(inner)

    visit(Config)
    return order


def _paths() -> dict[type, list[str]]:
    """Where each class appears in a config file (``listeners[].routes[]``)."""
    found: dict[type, list[str]] = {}

    def visit(cls: type, path: str, seen: tuple[type, ...]) -> None:
        found.setdefault(cls, []).append(path)
        for field in _fields(cls):
            tp = _hints(cls)[field.name]
            key = f"{path}.{field.name}" if path else field.name
            for inner in _classes_in(tp):
                if inner not in seen:
                    visit(inner, key + ("[]" if _is_list_of(tp, inner) else ""), (*seen, inner))

    visit(Config, "", (Config,))
    return found


def _is_list_of(tp: Any, cls: type) -> bool:
    origin = get_origin(tp)
    if origin is tuple:
        return get_args(tp)[0] is cls
    if origin in (types.UnionType, typing.Union):
        return any(_is_list_of(arg, cls) for arg in get_args(tp))
    return False


# -- rendering -----------------------------------------------------------------------------


def _anchor(cls: type) -> str:
    return cls.__name__.lower()


def type_text(tp: Any) -> str:
    """A type as a config file writes it, attrs classes linked to their tables."""
    origin = get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in get_args(tp) if a is not type(None)]
        text = " or ".join(type_text(a) for a in args)
        return f"{text} or null" if len(args) < len(get_args(tp)) else text
    if tp is Address:
        return "`host:port`"
    if attrs.has(tp):
        return f"[{tp.__name__}](#{_anchor(tp)})"
    if origin is tuple:
        return f"list of {type_text(get_args(tp)[0])}"
    if origin is dict:
        key, value = get_args(tp)
        return f"mapping of {type_text(key)} to {type_text(value)}"
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in get_args(tp))
    names = {int: "integer", float: "number", str: "string", bool: "boolean", Any: "any"}
    return names.get(tp, f"`{tp}`")


def default_text(field: attrs.Attribute[Any]) -> str:
    """A field's default as a config file would write it; ``required`` if it has none."""
    default: Any = field.default
    if default is attrs.NOTHING:
        return "required"
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        default = default.factory()
    kind: Any = type(default)
    if attrs.has(kind) and kind is not Address:
        return "its defaults" if default == kind() else _json(unstructure(default))
    return _json(unstructure(default))


def _json(value: Any) -> str:
    return f"`{json.dumps(value)}`"


def _markdown(text: str) -> str:
    """A docstring or comment in Markdown: reST's ``code`` as `code`, one line for tables."""
    return re.sub(r"``([^`]+)``", r"`\1`", text).replace("|", "\\|")


def _class_doc(cls: type) -> str:
    doc = inspect.getdoc(cls) or ""
    if doc.startswith(f"{cls.__name__}("):  # attrs' generated signature: no docstring
        return ""
    return _markdown(doc)


def config_reference() -> str:
    """``docs/config-reference.md``."""
    paths = _paths()
    out = [
        "# Config reference",
        "",
        f"Generated from `gateway/config/model.py` by `{REGENERATE}`; do not edit by hand.",
        "Every key of a config file (YAML or JSON; the admin API takes the same shapes),",
        "with its type, its default and what it does. A list's items and a mapping's keys",
        "are described in the table of their type. A key left out takes its default.",
        "",
    ]
    for cls in config_classes():
        out += [f"## {cls.__name__}", ""]
        where = paths.get(cls, [])
        if cls is not Config and where:
            out += ["At " + ", ".join(f"`{p}`" for p in where) + ".", ""]
        doc = _class_doc(cls)
        if doc:
            out += [doc, ""]
        out += ["| key | type | default | meaning |", "|---|---|---|---|"]
        docs = field_docs(cls)
        for field in _fields(cls):
            meaning = _markdown(docs.get(field.name, ""))
            if field.metadata.get(REBIND):
                meaning += " (a change rebinds the listener's sockets)"
            tp = type_text(_hints(cls)[field.name])
            out.append(f"| `{field.name}` | {tp} | {default_text(field)} | {meaning.strip()} |")
        out.append("")
    return "\n".join(out)


# -- the CLI -------------------------------------------------------------------------------


def _commands(
    command: click.Command, name: str, parent: click.Context | None
) -> Iterator[tuple[str, str]]:
    """Each command's full name and its ``--help``, the group before its commands."""
    context = click.Context(
        command,
        info_name=name,
        parent=parent,
        terminal_width=HELP_WIDTH,
        max_content_width=HELP_WIDTH,
    )
    yield context.command_path, command.get_help(context)
    if isinstance(command, click.Group):
        for sub in command.list_commands(context):
            child = command.get_command(context, sub)
            if child is not None and not child.hidden:
                yield from _commands(child, sub, context)


def cli_reference() -> str:
    """``docs/cli-reference.md``."""
    from triogate.cli import main

    out = [
        "# CLI reference",
        "",
        f"Each command's own `--help`, generated by `{REGENERATE}`; do not edit by hand.",
        "",
    ]
    for path, help_text in _commands(main, "triogate", None):
        out += [f"## {path}", "", "```text", help_text, "```", ""]
    return "\n".join(out)


# -- writing and checking ------------------------------------------------------------------


def references() -> dict[str, str]:
    """Each reference's file name and its text as the code makes it now."""
    return {CONFIG_REFERENCE: config_reference(), CLI_REFERENCE: cli_reference()}


def stale(docs: Path = DOCS) -> list[str]:
    """The references whose committed text differs from what the code makes now."""
    return [
        name
        for name, text in references().items()
        if not (docs / name).exists() or (docs / name).read_text() != text
    ]


@click.command()
@click.option("--check", is_flag=True, help="Only say which references are stale (exit 1).")
@click.option(
    "--docs",
    type=click.Path(file_okay=False, path_type=Path),
    default=DOCS,
    show_default=True,
    help="Where the references live.",
)
def main(check: bool, docs: Path) -> None:
    """Write docs/config-reference.md and docs/cli-reference.md from the code."""
    if check:
        names = stale(docs)
        for name in names:
            click.echo(f"{docs / name} is stale: run `{REGENERATE}`", err=True)
        sys.exit(1 if names else 0)
    docs.mkdir(parents=True, exist_ok=True)
    for name, text in references().items():
        (docs / name).write_text(text)
        click.echo(f"wrote {docs / name}")


if __name__ == "__main__":
    main()
