"""Where cmld finds the in-container service binary, and what it refuses (pure logic on files)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cmld.device import cservice_binary

pytestmark = pytest.mark.unit

ELF = b"\x7fELF" + bytes(60)


def make(path: Path, data: bytes = ELF, mode: int = 0o755) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def test_search_order_is_ours_then_the_originals_then_the_venv() -> None:
    assert [str(p) for p in cservice_binary.search_path()] == [
        "/usr/libexec/cml/cservice", "/usr/sbin/cml-service-container-static", "/sbin/cml-service-container-static",
        f"{sys.prefix}/libexec/cml/cservice"]


def test_explicit_path_is_the_only_one_looked_at(tmp_path: Path) -> None:
    good = make(tmp_path / "cservice")
    assert cservice_binary.find(good) == (good, "")
    path, why = cservice_binary.find(tmp_path / "missing")
    assert path is None
    assert why == f"no usable cservice binary: --cservice {tmp_path}/missing: No such file or directory"


@pytest.mark.parametrize("what,needle", [
    ("script", "is not an ELF executable"),
    ("not-executable", "is not executable"),
    ("directory", "is not a regular file"),
    ("huge", "is larger than 32 MiB"),
])
def test_unusable_binaries_are_named(tmp_path: Path, what: str, needle: str) -> None:
    p = tmp_path / "cservice"
    if what == "script":
        make(p, b"#!/bin/sh\nexit 0\n")
    elif what == "not-executable":
        make(p, mode=0o644)
    elif what == "directory":
        p.mkdir()
    else:
        make(p)
        with p.open("r+b") as f:
            f.truncate((32 << 20) + 1)
    assert cservice_binary.problem(p) == f"{p} {needle}" + (" (a container may have no shell or interpreter)"
                                                             if what == "script" else "")


def test_default_search_names_every_place(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    places = [tmp_path / "a", tmp_path / "b"]
    monkeypatch.setattr(cservice_binary, "search_path", lambda: places)
    path, why = cservice_binary.find(None)
    assert path is None and why == f"no cservice binary found (looked at {places[0]}, {places[1]}; see --cservice)"
    make(places[1])
    assert cservice_binary.find(None) == (places[1], "")
