"""The examples of the README and ``docs/*.md``, found and run: the rules of this file.

Every fenced block is read with markdown-it (CommonMark, so a fence inside a list item
is found like any other); its info string's first word says what it is:

- ``sh``, ``shell``, ``bash``: shell commands, run with ``bash`` (``set -euo pipefail``)
  in the document's work directory. ``console``: the lines starting with ``$ `` are the
  commands, the others their output (not compared).
- ``yaml``, ``yml``: a config file, checked with ``triogate validate``.
- ``python``, ``py``: run with this interpreter; a block defining ``test_*`` functions is
  run with pytest instead (so the ``triogate`` fixture of an example is the real one).
- anything else (``text``, ``json``, a diagram with no info string): not an example.

An indented code block (four spaces, no fence) is refused: it cannot say what it is, so
fence it with an info string.

An HTML comment on the line before a fence changes what is done with it:

- ``<!-- example: skip (REASON) -->``: not run; the test is reported skipped with REASON.
  For what cannot run here (an install, a command that serves until Ctrl-C): never
  silent, and a reason is required.
- ``<!-- example: fragment -->`` (yaml): part of a config; completed before validation
  (a bare ``routes`` list goes into a listener, a cluster it names and does not define
  gets a stub).
- ``<!-- example: file PATH -->``: the block's text is written to PATH (relative) in the
  work directory before the document's examples run (a rollout spec ``ctl ... --file``
  reads; ``mypkg/filters.py``, which a config's filter factory imports: ``triogate
  validate`` runs there, so the package imports).
- ``<!-- example: background -->`` (shell): started and left running until the
  document's last example is done (``triogate demo``), once what it serves accepts
  connections (the demo's ports, else the addresses the block writes).

Shell and Python examples run against a real gateway on loopback, on ports free on
this machine. A document with a ``background`` block brings its own (the demo): every
loopback address the document writes gets a free port up front, and ``triogate demo``
is given them (``--port``, ``--admin-port``... from its options; a demo run in the
foreground, ``--tour``, gets free ports that nothing else uses). Any other document
runs against EXAMPLE_GATEWAY below, which the test starts with an upstream process per
endpoint. Either way the addresses written in a block (``127.0.0.1:8080``, also
``localhost:8080``; the admin API's ``127.0.0.1:9901``) are replaced by the real ones
before it runs, and ``$TRIOGATE_ADMIN`` points ``triogate ctl`` at the admin API, so a
reader's commands run as written. ``curl`` fails on an HTTP error status
(``--fail-with-body``), unless the example shows the status itself (``-i``, ``-I``,
``-v``, ``-w``): an example the gateway refuses fails.

The blocks of one document run in order and share its gateway and work directory, so
an example may use what an earlier one made. Running one block alone runs the blocks
before it first. A config file's TLS files (a ``cert``/``key`` pair, a ``ca``) are made
in the work directory when the config names them and they are not there; so is a
proxy-wasm module (``wasm: {path}``) whose file name is one ``tests/wasm`` builds
(``tests/wasm/build/*.wasm``: the AssemblyScript SDK's published example and ours).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import attrs
from markdown_it import MarkdownIt

REPO = Path(__file__).resolve().parents[2]

#: the gateway the examples of a document run against, as the document writes its
#: addresses (each listener and endpoint address is replaced by a real one at start)
EXAMPLE_GATEWAY: dict[str, Any] = {
    "admin": {"address": "127.0.0.1:9901"},
    "listeners": [
        {
            "name": "web",
            "address": "127.0.0.1:8080",
            "routes": [
                {
                    "name": "canary",
                    "match": {"prefix": "/", "headers": [{"name": "x-canary", "exact": "1"}]},
                    "cluster": "v2",
                },
                {"name": "main", "match": {"prefix": "/"}, "cluster": "v1"},
            ],
        }
    ],
    "clusters": [
        {"name": "v1", "endpoints": [{"address": "127.0.0.1:9001"}]},
        {"name": "v2", "endpoints": [{"address": "127.0.0.1:9002"}]},
    ],
}

SHELL = frozenset({"sh", "shell", "bash", "console"})
CONFIG = frozenset({"yaml", "yml"})
PYTHON = frozenset({"python", "py"})

_MARKER = re.compile(
    r"^<!--\s*example:\s*(?P<kind>skip|fragment|file|background)\b(?P<rest>.*?)-->\s*$"
)


class ExampleError(ValueError):
    """A document's code block that the runner cannot take as it is written."""


@attrs.frozen
class Example:
    """One fenced block of a document, and what to do with it."""

    document: str  # relative to the repository
    line: int  # of the opening fence, from 1
    language: str  # "shell", "config" or "python"
    info: str
    text: str
    skip: str | None = None  # the reason, when marked skip
    fragment: bool = False
    file: str | None = None  # when marked file NAME
    background: bool = False

    @property
    def id(self) -> str:
        return f"{self.document}:{self.line}"


def documents() -> list[Path]:
    """The README and every ``.md`` under ``docs/`` (once the walk-throughs land)."""
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def _language(info: str) -> str | None:
    word = info.split()[0].lower() if info.split() else ""
    if word in SHELL:
        return "shell"
    if word in CONFIG:
        return "config"
    if word in PYTHON:
        return "python"
    return None


def _marker(html: str, where: str) -> dict[str, Any]:
    found = _MARKER.match(html.strip())
    if found is None:
        if re.search(r"<!--\s*example", html):
            raise ExampleError(f"{where}: unknown example marker {html.strip()!r}")
        return {}
    kind, rest = found["kind"], found["rest"].strip()
    if kind == "skip":
        reason = rest.removeprefix("(").removesuffix(")").strip()
        if not reason:
            raise ExampleError(f"{where}: 'example: skip' needs a reason in parentheses")
        return {"skip": reason}
    if kind == "file":
        if not re.fullmatch(r"[\w-][\w.-]*(/[\w-][\w.-]*)*", rest):
            raise ExampleError(f"{where}: 'example: file' needs a relative path (a/b.py)")
        return {"file": rest}
    if kind == "background":
        return {"background": True}
    return {"fragment": True}


def parse(path: Path) -> list[Example]:
    """The examples of one document, in order; raises ExampleError naming each block it
    cannot classify (an indented code block, a marker before no example)."""
    name = path.relative_to(REPO).as_posix()
    tokens = MarkdownIt("commonmark").parse(path.read_text())
    examples: list[Example] = []
    problems: list[str] = []
    pending: tuple[int, dict[str, Any]] | None = None
    for token in tokens:
        line = token.map[0] + 1 if token.map else 0
        if pending is not None and token.type not in ("fence", "html_block"):
            problems.append(f"{name}:{pending[0]}: an example marker not followed by a fence")
            pending = None
        if token.type == "html_block":
            try:
                marker = _marker(token.content, f"{name}:{line}")
            except ExampleError as e:
                problems.append(str(e))
                marker = {}
            pending = (line, marker) if marker else None
        elif token.type == "code_block":
            problems.append(
                f"{name}:{line}: an indented code block; fence it with an info string "
                "(sh, yaml, python, text) so the example runner knows what it is"
            )
        elif token.type == "fence":
            language = _language(token.info)
            marker = pending[1] if pending is not None else {}
            pending = None
            if language is None:
                if marker:
                    problems.append(f"{name}:{line}: an example marker before a non-example")
                continue
            if marker.get("fragment") and language != "config":
                problems.append(f"{name}:{line}: 'example: fragment' is for yaml blocks")
            if marker.get("background") and language != "shell":
                problems.append(f"{name}:{line}: 'example: background' is for shell blocks")
            examples.append(Example(name, line, language, token.info, token.content, **marker))
    if pending is not None:
        problems.append(f"{name}:{pending[0]}: an example marker before no code block")
    if problems:
        raise ExampleError("\n".join(problems))
    return examples


def shell_script(example: Example) -> str:
    """The commands of a shell example (``console``: only the ``$ `` lines)."""
    if example.info.split()[0].lower() != "console":
        return example.text
    return "".join(line[2:] + "\n" for line in example.text.splitlines() if line.startswith("$ "))


_ADDRESS = re.compile(r"(?<![\w.])(?:127\.0\.0\.1|localhost):(\d+)(?!\d)")


def written_ports(texts: Iterable[str]) -> set[int]:
    """The loopback ports written in ``texts`` (``127.0.0.1:N``, ``localhost:N``; not 0)."""
    return {int(port) for text in texts for port in _ADDRESS.findall(text)} - {0}


def substitute(text: str, addresses: dict[int, str]) -> str:
    """``text`` with each documented loopback address (``127.0.0.1:8080``, also written
    ``localhost:8080``) replaced by the real one, ``addresses[8080]``, in one pass."""
    return _ADDRESS.sub(lambda found: addresses.get(int(found[1]), found[0]), text)


_DEMO = re.compile(r"(?<![\w-])(triogate demo)(?![\w-])")


def demo_ports() -> dict[str, int]:
    """``triogate demo``'s port options and their defaults (``{"--port": 8080, ...}``):
    the ports a reader's demo listens on, as its docs write them."""
    from triogate.cli import demo

    return {
        option.opts[0]: option.default
        for option in demo.params
        if option.name is not None
        and option.name.endswith("port")
        and isinstance(option.default, int)
    }


def with_demo_ports(text: str, ports: dict[str, int]) -> str:
    """``text`` with ``triogate demo`` given each port option (``--port 41234 ...``)."""
    options = " ".join(f"{flag} {port}" for flag, port in ports.items())
    return _DEMO.sub(lambda found: f"{found[1]} {options}", text)


# -- yaml fragments ---------------------------------------------------------------------

_CLUSTER_KEYS = ("cluster", "stable", "canary")


def _named_clusters(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key in _CLUSTER_KEYS and isinstance(item, str):
                yield item
            else:
                yield from _named_clusters(item)
    elif isinstance(value, list):
        for item in value:
            yield from _named_clusters(item)


def complete_fragment(data: Any) -> dict[str, Any]:
    """A whole config around a fragment: a bare ``routes`` list in a listener, and a stub
    cluster for each cluster the fragment names and does not define."""
    if not isinstance(data, dict):
        raise ExampleError("a config fragment must be a mapping")
    config = dict(data)
    if "routes" in config:
        config["listeners"] = [
            *config.get("listeners", []),
            {"name": "fragment", "address": "127.0.0.1:0", "routes": config.pop("routes")},
        ]
    defined = {cluster.get("name") for cluster in config.get("clusters", [])}
    missing = sorted(set(_named_clusters(config)) - defined)
    stubs = [{"name": name, "endpoints": [{"address": "127.0.0.1:1"}]} for name in missing]
    if stubs:
        config["clusters"] = [*config.get("clusters", []), *stubs]
    return config


def wasm_paths(data: Any) -> Iterator[str]:
    """The module files a config's ``wasm`` filters name."""
    if isinstance(data, dict):
        wasm = data.get("wasm")
        if isinstance(wasm, dict) and isinstance(wasm.get("path"), str):
            yield wasm["path"]
        for item in data.values():
            yield from wasm_paths(item)
    elif isinstance(data, list):
        for item in data:
            yield from wasm_paths(item)


def tls_files(data: Any) -> Iterator[tuple[str, str | None]]:
    """The TLS files a config names: ``(cert, key)`` pairs and ``(ca, None)``."""
    if isinstance(data, dict):
        cert, key, ca = data.get("cert"), data.get("key"), data.get("ca")
        if isinstance(cert, str) and isinstance(key, str):
            yield cert, key
        if isinstance(ca, str):
            yield ca, None
        for item in data.values():
            yield from tls_files(item)
    elif isinstance(data, list):
        for item in data:
            yield from tls_files(item)
