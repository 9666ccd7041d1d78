"""Which tests carry which `req` markers, found by pytest's own collection (the same parametrize
expansion, conftest hooks and skips as a real run), never by reading the source."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest


class CollectionError(Exception):
    """pytest could not collect the suite (an import error in a test module, a bad marker)."""


class _Recorder:
    """A pytest plugin that keeps each collected item's requirement ids."""

    def __init__(self) -> None:
        self.marks: dict[str, tuple[str, ...]] = {}
        self.bad: list[str] = []

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:
            ids: list[str] = []
            for mark in item.iter_markers("req"):
                if not mark.args or mark.kwargs or not all(isinstance(a, str) and a for a in mark.args):
                    self.bad.append(f"{item.nodeid}: @pytest.mark.req takes requirement ids as strings")
                    continue
                ids.extend(mark.args)
            if ids:
                self.marks[item.nodeid] = tuple(dict.fromkeys(ids))


def collect(repo: Path, paths: tuple[str, ...] = ("tests",)) -> dict[str, tuple[str, ...]]:
    """nodeid -> requirement ids, for every collected test with a `req` marker."""
    recorder = _Recorder()
    out = io.StringIO()
    args = ["--collect-only", "-q", "-p", "no:cacheprovider", "--rootdir", str(repo),
            *[str(repo / p) for p in paths]]
    with contextlib.redirect_stdout(out), contextlib.chdir(repo):
        code = pytest.main(args, plugins=[recorder])
    if code not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        tail = "\n".join(out.getvalue().splitlines()[-20:])
        raise CollectionError(f"pytest could not collect the tests (exit {int(code)}):\n{tail}")
    if recorder.bad:
        raise CollectionError("\n".join(recorder.bad))
    return recorder.marks
