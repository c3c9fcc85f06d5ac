"""Modules for the proxy-wasm host's tests: our WAT filters (``filters/``), the
AssemblyScript SDK's published example and our own filters on that SDK (``assembly/``),
built by ``build.js`` (``npm ci && npm run build`` here, as ``.ci/run`` does). Without node or the installed SDK the AssemblyScript tests are
skipped, except in CI (``CI`` set), where they fail."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.filters.wasm import DictMetricsSink, LogLevel, WasmFilterHost, WasmLimits

HERE = Path(__file__).parent
FILTERS = HERE / "filters"
BUILD = HERE / "build"
NODE = shutil.which("node")


def filter_path(name: str) -> Path:
    return FILTERS / f"{name}.wat"


class Logs(list[tuple[LogLevel, str]]):
    """A module's log lines, as the host gave them."""

    def __call__(self, level: LogLevel, message: str) -> None:
        self.append((level, message))

    def messages(self) -> list[str]:
        return [message for _, message in self]


@pytest.fixture
def logs() -> Logs:
    return Logs()


@pytest.fixture
def metrics() -> DictMetricsSink:
    return DictMetricsSink()


LoadFilter = Callable[..., WasmFilterHost]


@pytest.fixture
def load(logs: Logs, metrics: DictMetricsSink) -> LoadFilter:
    """``load(name, config=b"", **kwargs)``: one of ``filters/*.wat``, with the test's log
    and metrics sink."""

    def load_filter(name: str, config: bytes = b"", **kwargs: object) -> WasmFilterHost:
        kwargs.setdefault("limits", WasmLimits(max_memory_mb=4, max_ms_per_call=200))
        return WasmFilterHost.load(filter_path(name), config, metrics=metrics, log=logs, **kwargs)

    return load_filter


@pytest.fixture(scope="session")
def assemblyscript_build() -> Path:
    """``build/``, with the AssemblyScript example built (built here when it is missing)."""
    wanted = [BUILD / "add_header.wasm"]
    wanted += [BUILD / f"{source.stem}.wasm" for source in (HERE / "assembly").glob("*.ts")]
    installed = (HERE / "node_modules" / "@solo-io" / "proxy-runtime").is_dir()
    if not all(map(Path.exists, wanted)) and NODE is not None and installed:
        subprocess.run([NODE, str(HERE / "build.js")], cwd=HERE, check=True, timeout=300)
    if not all(map(Path.exists, wanted)):
        if os.environ.get("CI"):
            pytest.fail(
                "the AssemblyScript example is not built (npm ci && npm run build in tests/wasm)"
            )
        pytest.skip("node and the AssemblyScript SDK (npm ci in tests/wasm) are needed")
    return BUILD
