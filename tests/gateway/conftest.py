"""Fixtures shared by the gateway's tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.gateway.tls_support import Pki


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """A trustme CA whose files go under the test's ``tmp_path``."""
    return Pki(tmp_path)
