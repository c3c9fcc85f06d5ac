"""The figure the README's promise rests on: how many of its examples ran."""

from __future__ import annotations

from collections import Counter

import pytest

_OUTCOMES: Counter[str] = Counter()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "test_examples.py::test_example[" not in report.nodeid:
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        _OUTCOMES[report.outcome] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _OUTCOMES:
        figures = ", ".join(f"{count} {outcome}" for outcome, count in sorted(_OUTCOMES.items()))
        terminalreporter.write_line(f"README and docs/ examples: {figures}")
