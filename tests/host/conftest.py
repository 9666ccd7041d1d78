"""Fixtures shared by the host tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from .containers import demo_guestos


@pytest.fixture(scope="session")
def guestos_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo busybox GuestOS, built once per test process (it is only ever copied from)."""
    return demo_guestos(tmp_path_factory.mktemp("guestos"))
