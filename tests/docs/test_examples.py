"""Every shell, YAML and Python example of the README and ``docs/*.md`` runs here.

One test per example, in document order (``README.md:306`` is the block whose fence
opens on line 306); the rules of what runs and how are in ``tests/docs/examples.py``.
A block marked ``<!-- example: skip (REASON) -->`` is reported skipped with REASON.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
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
    demo_ports,
    documents,
    parse,
    shell_script,
    substitute,
    tls_files,
    wasm_paths,
    with_demo_ports,
    written_ports,
)

#: seconds one example may take (pytest-timeout stops a test at 120)
EXAMPLE_TIMEOUT = 90.0
#: seconds the gateway and its upstreams may take to start
START_TIMEOUT = 30.0
UPSTREAM_PROGRAM = REPO / "tests" / "upstream_process.py"
#: the proxy-wasm modules ``tests/wasm`` builds (``npm run build``, in .ci/run)
WASM_BUILD = REPO / "tests" / "wasm" / "build"
_ADMIN_LINE = re.compile(r"admin API: http://(\S+)/")
_UPSTREAM_LINE = re.compile(r"listening on (\S+)")

#: curl as the examples are run: an HTTP error status fails the example, unless the
#: example shows the status itself (-i, -I, -v, -w)
_SHELL_PRELUDE = """\
set -euo pipefail
curl() {
    local arg
    for arg in "$@"; do
        if [[ $arg == --include || $arg == --head || $arg == --verbose || $arg == --write-out
              || ($arg == -[!-]* && $arg == *[iIvw]*) ]]; then
            command curl --silent --show-error --max-time 20 "$@"
            return
        fi
    done
    command curl --fail-with-body --silent --show-error --max-time 20 "$@"
}
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


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def _free_port() -> int:
    """A loopback port free now (the OS's pick; handed to a command that binds it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _accepts(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def _wait_for_line(
    process: subprocess.Popen[str], log: Path, pattern: re.Pattern[str], what: str
) -> str:
    """The first match of ``pattern`` in what the process has written to ``log``."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        found = pattern.search(log.read_text())
        if found:
            return found[1]
        if process.poll() is not None:
            break
        time.sleep(0.02)
    raise ExampleFailed(f"{what} did not start:\n{log.read_text()}")


class ExampleFailed(AssertionError):
    """An example that exited non-zero (the message has its output)."""


class DocumentRun:
    """A document's work directory, its gateway and how far its examples have run.

    The gateway is the runner's (EXAMPLE_GATEWAY, started at the first shell or Python
    example) unless the document starts its own in a ``background`` block (``triogate
    demo``): then every loopback address the document writes gets a free port up front.
    """

    def __init__(self, examples: list[Example], directory: Path) -> None:
        self.examples = examples
        self.directory = directory
        self.processes: list[subprocess.Popen[str]] = []
        #: documented port -> the real address; empty until a gateway has its ports
        self.addresses: dict[int, str] = {}
        #: ``triogate demo``'s port options, with the ports given to it
        self.demo: dict[str, int] = {}
        self.done: set[int] = set()
        self._ca: trustme.CA | None = None
        self.own_gateway = any(example.background for example in examples)
        self.gateway_started = False
        if self.own_gateway:
            self._assign_ports()
        elif any("triogate demo" in example.text for example in examples):
            # a demo run in the foreground (``--tour``): ports of its own, none taken
            self.demo = {flag: _free_port() for flag in demo_ports()}
        for example in examples:
            if example.file is not None:
                target = directory / example.file
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(substitute(example.text, self.addresses))

    # -- the gateway ---------------------------------------------------------------------

    def _assign_ports(self) -> None:
        defaults = demo_ports()
        written = written_ports(example.text for example in self.examples)
        for port in sorted(written | set(defaults.values())):
            self.addresses[port] = f"127.0.0.1:{_free_port()}"
        self.demo = {flag: _port(self.addresses[port]) for flag, port in defaults.items()}

    def _spawn(self, argv: list[str], log: Path) -> subprocess.Popen[str]:
        """Start ``argv`` with its output to ``log`` (a file: a pipe left unread would
        stop it once full)."""
        with log.open("w") as output:
            process = subprocess.Popen(
                argv,
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                text=True,
                env=self._env(),
                start_new_session=True,  # its whole group is stopped with it
            )
        self.processes.append(process)
        return process

    def start_gateway(self) -> None:
        """``triogate run`` of EXAMPLE_GATEWAY on free ports, an upstream per endpoint."""
        self.gateway_started = True
        config = json.loads(json.dumps(EXAMPLE_GATEWAY))
        for cluster in config["clusters"]:
            for endpoint in cluster["endpoints"]:
                argv = [sys.executable, str(UPSTREAM_PROGRAM), "--name", cluster["name"]]
                log = self.directory / f"upstream-{cluster['name']}.log"
                upstream = self._spawn([*argv, "--port", "0"], log)
                real = _wait_for_line(upstream, log, _UPSTREAM_LINE, f"upstream {cluster['name']}")
                self.addresses[_port(endpoint["address"])] = real
                endpoint["address"] = real
        documented_admin = _port(config["admin"]["address"])
        config["admin"]["address"] = "127.0.0.1:0"
        documented = {lst["name"]: _port(lst["address"]) for lst in config["listeners"]}
        for listener in config["listeners"]:
            listener["address"] = "127.0.0.1:0"
        path = self.directory / "example-gateway.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        argv = [sys.executable, "-m", "triogate.cli", "run", "--no-state", path.name]
        log = self.directory / "example-gateway.log"
        admin = _wait_for_line(self._spawn(argv, log), log, _ADMIN_LINE, "the example gateway")
        self.addresses[documented_admin] = admin
        status = httpx.get(f"http://{admin}/status", timeout=10).json()
        for name, port in documented.items():
            self.addresses[port] = status["listeners"][name]["address"]

    def close(self) -> None:
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.processes.clear()

    # -- the examples --------------------------------------------------------------------

    def run_through(self, example: Example) -> None:
        """Run ``example``, after the runnable examples before it that have not run."""
        for earlier in self.examples:
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
            return  # written when the document's run began
        if example.language == "config":
            self.validate(example)
            return
        if not self.gateway_started and not self.own_gateway:
            self.start_gateway()
        if example.background:
            self.background(example)
        elif example.language == "shell":
            self.shell(example)
        else:
            self.python(example)

    def _env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
        }
        admin = self.addresses.get(_port(EXAMPLE_GATEWAY["admin"]["address"]))
        if admin is not None:
            env["TRIOGATE_ADMIN"] = f"http://{admin}"
        return env

    def _command(self, argv: list[str], example: Example, script: str | None = None) -> None:
        """Run ``argv`` (``script`` on its stdin) to its end; ExampleFailed unless it exits 0
        within EXAMPLE_TIMEOUT (then its whole process group is killed)."""
        process = subprocess.Popen(
            argv,
            cwd=self.directory,
            env=self._env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            stdout, stderr = process.communicate(script or "", timeout=EXAMPLE_TIMEOUT)
            outcome = f"exited {process.returncode}"
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            outcome = f"still ran after {EXAMPLE_TIMEOUT:.0f} s"
        if process.returncode != 0:
            raise ExampleFailed(
                f"{example.id} {outcome}\n--- ran ---\n{script or ' '.join(argv)}\n"
                f"--- stdout ---\n{stdout}--- stderr ---\n{stderr}"
            )

    def _script(self, example: Example) -> str:
        script = substitute(shell_script(example), self.addresses)
        return _SHELL_PRELUDE + with_demo_ports(script, self.demo)

    def shell(self, example: Example) -> None:
        self._command(["bash"], example, self._script(example))

    def background(self, example: Example) -> None:
        """Start the block for the rest of the document; wait until what it serves (the
        demo's ports, else the addresses the block writes) accepts connections."""
        path = self.directory / f"background_{example.line}.sh"
        path.write_text(self._script(example))
        log = self.directory / f"background_{example.line}.log"
        process = self._spawn(["bash", path.name], log)
        if "triogate demo" in example.text:
            waits = [f"127.0.0.1:{port}" for port in self.demo.values()]
        else:
            waits = [self.addresses[port] for port in written_ports([example.text])]
        deadline = time.monotonic() + START_TIMEOUT
        for address in waits:
            while not _accepts(address):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise ExampleFailed(
                        f"{example.id} (in the background) did not serve {address}\n"
                        f"--- ran ---\n{path.read_text()}\n--- output ---\n{log.read_text()}"
                    )
                time.sleep(0.05)

    def python(self, example: Example) -> None:
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
        self._place_wasm_modules(data)
        path = self.directory / f"example_{example.line}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False) if example.fragment else example.text)
        self._command([sys.executable, "-m", "triogate.cli", "validate", path.name], example)

    def _place_wasm_modules(self, data: Any) -> None:
        for name in wasm_paths(data):
            target = self.directory / name
            built = WASM_BUILD / Path(name).name
            if target.exists() or not built.exists():
                continue  # (not built: validation says which file is missing)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(built, target)

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


@pytest.fixture(scope="module")
def document_runs() -> Iterator[dict[str, DocumentRun]]:
    """The current document's run (one at a time: the previous document's gateway stops
    when the next document starts, the last one's with this module)."""
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
        document_runs.clear()
        examples = [other for other in EXAMPLES if other.document == example.document]
        directory = tmp_path_factory.mktemp(re.sub(r"\W", "-", example.document))
        run = DocumentRun(examples, directory)
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
    try:
        document_run.run_through(example)
    except ExampleFailed as e:
        failure = str(e)
    else:
        return
    pytest.fail(failure, pytrace=False)
