"""File discovery: a JSON or YAML endpoints file, re-read when it is replaced.

Theory of operation: ``run_file_source`` polls the file's identity (device, inode,
size, modification time in ns) every ``discovery.interval`` seconds: portable, and no
inotify dependency. When it changes (an atomic ``rename`` over the file gives a new
inode), the file is read and parsed whole; a good list is reported as
``EndpointsDiscovered``, anything else as ``DiscoveryFailed`` with the reason (which
the cluster actor logs), and the cluster keeps its last good set. An unchanged file is
not read again, so one bad version is counted and logged once.

The file holds a list of endpoints as in the config, or a mapping with an
``endpoints`` key::

    - {address: 10.0.0.1:8080, weight: 2}
    - {address: 10.0.0.2:8080, locality: eu-west-1a}

Every problem is reported by path, e.g. ``endpoints[1].weight: must be 0-10000``. An
empty list is a valid answer (the operator emptied the cluster); an empty *file* is
not: it is what a reader sees halfway through a non-atomic write. Write the file
elsewhere and rename it into place.

Only regular files are read, and at most ``MAX_FILE_BYTES``: the path comes from the
config, and ``/dev/zero`` must not exhaust memory.
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any

import trio
import yaml

from gateway.config import Discovery, Endpoint, check_endpoints, structure
from gateway.discovery.errors import EndpointsFileError
from gateway.discovery.reports import (
    DiscoveryFailed,
    DiscoveryReport,
    EndpointsDiscovered,
    ReportFn,
)
from gateway.errors import ConfigError

MAX_FILE_BYTES = 16 << 20

#: what identifies one version of the file; None when it cannot be stat'ed
Signature = tuple[int, int, int, int] | None


def parse_endpoints(text: str, *, json_only: bool = False) -> tuple[Endpoint, ...]:
    """The endpoints in an endpoints file's text; ``EndpointsFileError`` says what is wrong."""
    if not text.strip():
        raise EndpointsFileError("the file is empty")
    try:
        data: Any = json.loads(text) if json_only else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:
        kind = "JSON" if json_only else "YAML or JSON"
        raise EndpointsFileError(f"not valid {kind}: {e}") from None
    if isinstance(data, dict):
        unknown = sorted(str(k) for k in data if k != "endpoints")
        if unknown or "endpoints" not in data:
            raise EndpointsFileError(
                "a mapping must have one key, 'endpoints'"
                + (f" (unknown: {', '.join(unknown)})" if unknown else "")
            )
        data = data["endpoints"]
    if not isinstance(data, list):
        raise EndpointsFileError(
            f"must be a list of endpoints (or {{endpoints: [...]}}), not {type(data).__name__}"
        )
    try:
        endpoints = structure(tuple[Endpoint, ...], data, "endpoints")
    except ConfigError as e:
        raise EndpointsFileError("; ".join(str(i) for i in e.issues)) from None
    issues = check_endpoints(endpoints, "endpoints")
    if issues:
        raise EndpointsFileError("; ".join(str(i) for i in issues))
    return endpoints


def _signature(path: str) -> Signature:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _read(path: str) -> str:
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise EndpointsFileError("not a regular file")
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise EndpointsFileError(f"larger than {MAX_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise EndpointsFileError(f"not UTF-8: {e}") from None


def load_endpoints_file(path: str) -> tuple[Endpoint, ...]:
    """Read and parse the file at ``path`` (blocking: call it in a thread)."""
    try:
        text = _read(path)
    except OSError as e:
        raise EndpointsFileError(f"cannot read: {e.strerror or e}") from None
    return parse_endpoints(text, json_only=path.endswith(".json"))


async def read_once(discovery: Discovery) -> DiscoveryReport:
    """Read the file now, as the report a source sends."""
    path = discovery.path
    assert path is not None  # validated: file needs a path
    try:
        endpoints = await trio.to_thread.run_sync(load_endpoints_file, path)
    except EndpointsFileError as e:
        return DiscoveryFailed(f"{path}: {e}", discovery)
    return EndpointsDiscovered(endpoints, discovery)


async def run_file_source(discovery: Discovery, report: ReportFn) -> None:
    """Re-read the file whenever it changes, checking every ``interval``; until cancelled."""
    path = discovery.path
    assert path is not None
    seen: Signature | str = "never"
    while True:
        signature = await trio.to_thread.run_sync(_signature, path)
        if signature != seen:
            seen = signature
            if signature is None:
                await report(DiscoveryFailed(f"{path}: missing", discovery))
            else:
                await report(await read_once(discovery))
        await trio.sleep(discovery.interval)
