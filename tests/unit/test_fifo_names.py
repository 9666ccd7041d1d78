"""FIFO names from a container config and the device-wide board of who gets which FIFO."""

from __future__ import annotations

import pytest

from cmld.errors import StartError
from cmld.modules.fifos import FifoBoard, check_names

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "../x", "/abs", "nul\0byte", "x" * 256, "é" * 128])
def test_bad_names_are_refused(bad: str) -> None:
    with pytest.raises(StartError, match="not a valid FIFO name"):
        check_names([bad])


def test_good_names_and_duplicates() -> None:
    assert check_names(["x", "log.pipe", "a" * 255]) == ["x", "log.pipe", "a" * 255]
    with pytest.raises(StartError, match="listed twice"):
        check_names(["x", "x"])


def test_one_name_one_container() -> None:
    board = FifoBoard(hosted=False, c0_pid=lambda: None)
    board.claim("u1", ["x", "y"])
    board.claim("u1", ["x"])  # the same container again (a restart) is fine
    with pytest.raises(StartError, match="already forwarded to container u1"):
        board.claim("u2", ["z", "y"])
    assert "z" not in board.owners  # nothing half-claimed
    assert sorted(board.release("u1")) == ["x", "y"]
    board.claim("u2", ["y"])
    with pytest.raises(StartError, match="c0 is not running"):
        board.source()
