"""The example runner's own rules: what it finds in a document and how it rewrites it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docs import examples
from tests.docs.examples import (
    ExampleError,
    complete_fragment,
    parse,
    shell_script,
    substitute,
    tls_files,
    wasm_paths,
    with_demo_ports,
    written_ports,
)


def _parse(text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[examples.Example]:
    monkeypatch.setattr(examples, "REPO", tmp_path)
    path = tmp_path / "doc.md"
    path.write_text(text)
    return parse(path)


def test_fences_say_what_they_are(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    found = _parse(
        "```sh\necho hi\n```\n\n```text\nnot run\n```\n\n```\na diagram\n```\n\n"
        "- an item\n\n  ```yaml\n  admin: {}\n  ```\n\n```python\nprint(1)\n```\n",
        tmp_path,
        monkeypatch,
    )
    assert [(e.language, e.line) for e in found] == [("shell", 1), ("config", 15), ("python", 19)]
    assert found[1].text == "admin: {}\n"


def test_markers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    found = _parse(
        "<!-- example: skip (serves until Ctrl-C) -->\n```sh\ntriogate demo\n```\n\n"
        "<!-- example: fragment -->\n```yaml\nroutes: []\n```\n\n"
        "<!-- example: file pkg/spec.yaml -->\n```yaml\nname: x\n```\n\n"
        "<!-- example: background -->\n```sh\ntriogate demo\n```\n\n"
        "```sh\ntrue\n```\n",
        tmp_path,
        monkeypatch,
    )
    assert found[0].skip == "serves until Ctrl-C"
    assert found[1].fragment and found[2].file == "pkg/spec.yaml" and found[3].background
    assert (found[4].skip, found[4].fragment, found[4].file, found[4].background) == (
        None,
        False,
        None,
        False,
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("text\n\n    indented code\n", "an indented code block"),
        ("<!-- example: skip -->\n```sh\ntrue\n```\n", "needs a reason"),
        ("<!-- example: skipped (x) -->\n```sh\ntrue\n```\n", "unknown example marker"),
        ("<!-- example: skip (x) -->\n\nprose\n\n```sh\ntrue\n```\n", "not followed by a fence"),
        ("<!-- example: skip (x) -->\n```text\nx\n```\n", "before a non-example"),
        ("<!-- example: fragment -->\n```sh\ntrue\n```\n", "for yaml blocks"),
        ("<!-- example: background -->\n```yaml\na: 1\n```\n", "for shell blocks"),
        ("<!-- example: file ../x.py -->\n```python\nx = 1\n```\n", "a relative path"),
        ("<!-- example: file /etc/x -->\n```yaml\na: 1\n```\n", "a relative path"),
        ("```sh\ntrue\n```\n\n<!-- example: skip (x) -->\n", "before no code block"),
    ],
)
def test_what_it_refuses(
    text: str, problem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ExampleError, match=problem):
        _parse(text, tmp_path, monkeypatch)


def test_console_runs_the_prompted_lines_only() -> None:
    example = examples.Example("d.md", 1, "shell", "console", "$ curl -s x\n{}\n$ true\n")
    assert shell_script(example) == "curl -s x\ntrue\n"


def test_addresses_are_replaced_in_one_pass() -> None:
    # 9901's real port is 8080: replaced once, never again as the 8080 written
    addresses = {8080: "127.0.0.1:41000", 9901: "127.0.0.1:8080"}
    text = "curl http://127.0.0.1:8080/ http://localhost:9901/x 127.0.0.1:80800 10.127.0.0.1:8080"
    assert substitute(text, addresses) == (
        "curl http://127.0.0.1:41000/ http://127.0.0.1:8080/x 127.0.0.1:80800 10.127.0.0.1:8080"
    )
    assert written_ports([text, "listen 127.0.0.1:0"]) == {8080, 9901, 80800}


def test_the_demo_is_given_its_ports() -> None:
    ports = {"--port": 41000, "--admin-port": 41001}
    assert with_demo_ports("triogate demo\n.venv/bin/triogate demo --x\n", ports) == (
        "triogate demo --port 41000 --admin-port 41001\n"
        ".venv/bin/triogate demo --port 41000 --admin-port 41001 --x\n"
    )
    assert examples.demo_ports()["--port"] == 8080


def test_a_fragment_is_completed() -> None:
    fragment = {
        "routes": [{"match": {"prefix": "/"}, "split": [{"cluster": "v1"}, {"cluster": "v2"}]}],
        "clusters": [{"name": "v1", "endpoints": []}],
        "rollouts": [{"stable": "v1", "canary": "v3"}],
    }
    config = complete_fragment(fragment)
    assert config["listeners"][0]["routes"] == fragment["routes"]
    assert [c["name"] for c in config["clusters"]] == ["v1", "v2", "v3"]


def test_tls_files_named_by_a_config() -> None:
    config = {
        "listeners": [{"tls": {"certificates": [{"cert": "s.pem", "key": "s.key"}]}}],
        "clusters": [{"tls": {"ca": "ca.pem", "cert": "c.pem", "key": "c.key"}}],
    }
    assert sorted(tls_files(config), key=str) == [
        ("c.pem", "c.key"),
        ("ca.pem", None),
        ("s.pem", "s.key"),
    ]


def test_a_document_that_starts_the_demo_runs_against_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.docs.test_examples import DocumentRun, ExampleFailed

    found = _parse(
        "<!-- example: background -->\n```sh\ntriogate demo\n```\n\n"
        "```sh\ncurl http://127.0.0.1:8080/api/hello\ntriogate ctl clusters\n```\n\n"
        "```sh\ncurl -s http://localhost:8080/api/status/503\n```\n",
        tmp_path,
        monkeypatch,
    )
    work = tmp_path / "work"
    work.mkdir()
    run = DocumentRun(found, work)
    try:
        assert set(run.addresses) >= {8080, 9901}
        assert all(address != "127.0.0.1:8080" for address in run.addresses.values())
        run.run_through(found[1])  # the demo first, then the curl to it
        with pytest.raises(ExampleFailed, match="503"):
            run.run_through(found[2])
    finally:
        run.close()


def test_a_demo_in_the_foreground_gets_ports_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.docs.test_examples import DocumentRun

    found = _parse("```sh\ntriogate demo --help\n```\n", tmp_path, monkeypatch)
    work = tmp_path / "work"
    work.mkdir()
    run = DocumentRun(found, work)
    try:
        assert not run.own_gateway and set(run.demo) >= {"--port", "--admin-port"}
        assert f"triogate demo --port {run.demo['--port']} " in run._script(found[0])
        run.run_through(found[0])  # the example gateway, then the demo's help
    finally:
        run.close()


def test_wasm_modules_named_by_a_config() -> None:
    config = {
        "listeners": [
            {"http_filters": [{"name": "a", "wasm": {"path": "filters/add_header.wasm"}}]},
            {"network_filters": [{"name": "b", "wasm": {"path": "/x/count.wasm"}}]},
            {"http_filters": [{"name": "c", "python": {"factory": "m:F"}}]},
        ]
    }
    assert list(wasm_paths(config)) == ["filters/add_header.wasm", "/x/count.wasm"]
