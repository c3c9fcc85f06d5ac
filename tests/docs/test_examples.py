"""Every shell, YAML and Python example of the README and ``docs/*.md`` runs here.

One test per example, in document order (``README.md:306`` is the block whose fence
opens on line 306); the rules of what runs and how are in ``tests/docs/examples.py``.
A block marked ``<!-- example: skip (REASON) -->`` is reported skipped with REASON.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
import yaml

from tests.docs.examples import (
    EXAMPLE_GATEWAY,
    REPO,
    Example,
    ExampleError,
    complete_fragment,
    documents,
    parse,
    shell_script,
    substitute,
    tls_files,
)

#: seconds one example may take
EXAMPLE_TIMEOUT = 60.0
#: seconds the gateway and its upstreams may take to start
START_TIMEOUT = 30.0
UPSTREAM_PROGRAM = REPO / "tests" / "upstream_process.py"
_ADMIN_LINE = re.compile(r"admin API: http://(\S+)/")
_UPSTREAM_LINE = re.compile(r"listening on (\S+)")

#: curl as the examples are run: an HTTP error status fails the example
_SHELL_PRELUDE = """\
set -euo pipefail
curl() { command curl --fail-with-body --silent --show-error --max-time 20 "$@"; }
"""


def _collect() -> tuple[list[Example], list[str]]:
    examples: list[Example] = []
    problems: list[str] = []
    for path in documents():
        try:
            examples += parse(path)
        except ExampleError as e:
            problems += str(e).splitlines()
    return examples, problems


EXAMPLES, PROBLEMS = _collect()


def _read_line(process: subprocess.Popen[str], pattern: re.Pattern[str], what: str) -> str:
    """The first match of ``pattern`` in the process's output (the rest is left unread
    unless it fails)."""
    assert process.stdout is not None
    seen: list[str] = []
    for line in process.stdout:
        seen.append(line.rstrip())
        found = pattern.search(line)
        if found:
            return found[1]
    process.wait(timeout=5)
    raise AssertionError(f"{what} did not start: " + " | ".join(seen[-10:]))


class ExampleFailed(AssertionError):
    """An example that exited non-zero (the message has its output)."""


class DocumentRun:
    """A document's work directory, its gateway (started on first need) and how far its
    examples have run."""

    def __init__(self, document: str, directory: Path) -> None:
        self.document = document
        self.directory = directory
        self.processes: list[subprocess.Popen[str]] = []
        #: documented address -> real one; empty until the gateway runs
        self.addresses: dict[str, str] = {}
        self.done: set[int] = set()
        self._ca: trustme.CA | None = None

    # -- the gateway ---------------------------------------------------------------------

    def _spawn(self, *args: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, *args],
            cwd=self.directory,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.processes.append(process)
        return process

    def start_gateway(self) -> None:
        """``triogate run`` of EXAMPLE_GATEWAY on free ports, an upstream per endpoint."""
        config = json.loads(json.dumps(EXAMPLE_GATEWAY))
        for cluster in config["clusters"]:
            for endpoint in cluster["endpoints"]:
                upstream = self._spawn(
                    str(UPSTREAM_PROGRAM), "--name", cluster["name"], "--port", "0"
                )
                real = _read_line(upstream, _UPSTREAM_LINE, f"upstream {cluster['name']}")
                self.addresses[endpoint["address"]] = real
                endpoint["address"] = real
        documented_admin = config["admin"]["address"]
        config["admin"]["address"] = "127.0.0.1:0"
        documented = {lst["name"]: lst["address"] for lst in config["listeners"]}
        for listener in config["listeners"]:
            listener["address"] = "127.0.0.1:0"
        path = self.directory / "example-gateway.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        gateway = self._spawn("-m", "triogate.cli", "run", "--no-state", str(path))
        admin = _read_line(gateway, _ADMIN_LINE, "the example gateway")
        self.addresses[documented_admin] = admin
        status = httpx.get(f"http://{admin}/status", timeout=10).json()
        for name, address in documented.items():
            self.addresses[address] = status["listeners"][name]["address"]

    def close(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()

    # -- the examples --------------------------------------------------------------------

    def run_through(self, examples: list[Example], example: Example) -> None:
        """Run ``example``, after the runnable examples before it that have not run.

        The document's ``file`` blocks are written first, wherever they stand."""
        if not self.done:
            for block in examples:
                if block.file is not None:
                    (self.directory / block.file).write_text(block.text)
        for earlier in examples:
            if earlier.line >= example.line:
                break
            if earlier.line not in self.done and earlier.skip is None:
                self.done.add(earlier.line)
                try:
                    self.run(earlier)
                except ExampleFailed as e:
                    raise ExampleFailed(f"{earlier.id}, which this one follows: {e}") from e
        self.done.add(example.line)
        self.run(example)

    def run(self, example: Example) -> None:
        if example.file is not None:
            pass  # written before the first example ran
        elif example.language == "config":
            self.validate(example)
        elif example.language == "shell":
            self.shell(example)
        else:
            self.python(example)

    def _command(self, argv: list[str], example: Example, **kwargs: Any) -> None:
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
        }
        admin = self.addresses.get(EXAMPLE_GATEWAY["admin"]["address"])
        if admin is not None:
            env["TRIOGATE_ADMIN"] = f"http://{admin}"
        done = subprocess.run(
            argv,
            cwd=self.directory,
            env=env,
            capture_output=True,
            text=True,
            timeout=EXAMPLE_TIMEOUT,
            check=False,
            **kwargs,
        )
        if done.returncode != 0:
            raise ExampleFailed(
                f"{example.id} exited {done.returncode}\n"
                f"--- ran ---\n{kwargs.get('input') or ' '.join(argv)}\n"
                f"--- stdout ---\n{done.stdout}--- stderr ---\n{done.stderr}"
            )

    def shell(self, example: Example) -> None:
        if not self.addresses:
            self.start_gateway()
        script = _SHELL_PRELUDE + substitute(shell_script(example), self.addresses)
        self._command(["bash"], example, input=script)

    def python(self, example: Example) -> None:
        if not self.addresses:
            self.start_gateway()
        source = substitute(example.text, self.addresses)
        if re.search(r"^def test_", source, re.MULTILINE):
            path = self.directory / f"test_example_{example.line}.py"
            path.write_text(source)
            argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", path.name]
        else:
            path = self.directory / f"example_{example.line}.py"
            path.write_text(source)
            argv = [sys.executable, path.name]
        self._command(argv, example)

    def validate(self, example: Example) -> None:
        data = yaml.safe_load(example.text)
        if example.fragment:
            data = complete_fragment(data)
        self._make_tls_files(data)
        path = self.directory / f"example_{example.line}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False) if example.fragment else example.text)
        self._command([sys.executable, "-m", "triogate.cli", "validate", path.name], example)

    def _make_tls_files(self, data: Any) -> None:
        for first, key in tls_files(data):
            target = self.directory / first
            if target.exists():
                continue
            if self._ca is None:
                self._ca = trustme.CA()
            if key is None:
                self._ca.cert_pem.write_to_path(str(target))
                continue
            leaf = self._ca.issue_cert("localhost", "example.com", "*.example.com")
            leaf.cert_chain_pems[0].write_to_path(str(target))
            leaf.private_key_pem.write_to_path(str(self.directory / key))


@pytest.fixture(scope="session")
def document_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, DocumentRun]]:
    """Each document's run, made on first use; the previous document's gateway stops
    when the next document starts."""
    runs: dict[str, DocumentRun] = {}
    yield runs
    for run in runs.values():
        run.close()


@pytest.fixture
def document_run(
    request: pytest.FixtureRequest,
    document_runs: dict[str, DocumentRun],
    tmp_path_factory: pytest.TempPathFactory,
) -> DocumentRun:
    example: Example = request.param
    run = document_runs.get(example.document)
    if run is None:
        for other in document_runs.values():
            other.close()
        name = re.sub(r"\W", "-", example.document)
        run = DocumentRun(example.document, tmp_path_factory.mktemp(name))
        document_runs[example.document] = run
    return run


def test_every_code_block_is_an_example_or_says_what_it_is() -> None:
    assert not PROBLEMS, "\n".join(PROBLEMS)
    assert EXAMPLES, "no examples found: the runner reads nothing"


@pytest.mark.parametrize(
    ("example", "document_run"),
    [(example, example) for example in EXAMPLES],
    ids=[example.id for example in EXAMPLES],
    indirect=["document_run"],
)
def test_example(example: Example, document_run: DocumentRun) -> None:
    if example.skip is not None:
        pytest.skip(f"{example.id}: {example.skip}")
    same_document = [other for other in EXAMPLES if other.document == example.document]
    try:
        document_run.run_through(same_document, example)
    except ExampleFailed as e:
        failure = str(e)
    else:
        return
    pytest.fail(failure, pytrace=False)
