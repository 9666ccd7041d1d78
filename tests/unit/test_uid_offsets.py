"""`<uuid>.uid` in the original's format (a raw native int, as c_user.c writes it), the
allocation rule (lowest free from 1, never an offset another container's file holds), and hostile
files (truncated, too long, out of range, duplicated) set aside with nothing lost."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from cmld.containers import uid_offsets as u

pytestmark = pytest.mark.unit
A, B, C = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222", \
    "33333333-3333-3333-3333-333333333333"


def original(d: Path, uuid: str, offset: int) -> None:
    """What the C CML writes: file_write(path, (char *)&offset, sizeof(offset)) of an int."""
    (d / f"{uuid}.uid").write_bytes(struct.pack("<i", offset))


def test_original_file_is_used_as_is(tmp_path: Path) -> None:
    original(tmp_path, A, 7)
    assert u.allocate(tmp_path, A) == 7
    assert (tmp_path / f"{A}.uid").read_bytes() == b"\x07\x00\x00\x00"
    assert u.uid_start(7) == 800000


def test_new_offsets_skip_zero_and_every_offset_held(tmp_path: Path) -> None:
    original(tmp_path, A, 1)
    original(tmp_path, B, 3)
    assert u.allocate(tmp_path, C) == 2
    assert (tmp_path / f"{C}.uid").read_bytes() == struct.pack("=i", 2)  # written as the original
    assert u.allocate(tmp_path, C) == 2


def test_earlier_text_format_is_read(tmp_path: Path) -> None:
    (tmp_path / f"{A}.uid").write_bytes(b"123\n")
    assert u.allocate(tmp_path, A) == 123


def test_duplicate_offset_gets_a_new_range(tmp_path: Path) -> None:
    original(tmp_path, A, 4)
    original(tmp_path, B, 4)  # a copied file
    first = u.allocate(tmp_path, A)
    second = u.allocate(tmp_path, B)
    assert {first, second} == {1, 4} and first != second
    assert u.read(tmp_path / f"{A}.uid") != u.read(tmp_path / f"{B}.uid")


@pytest.mark.parametrize("data, why", [
    (b"\x07\x00", "truncated: 2 bytes"),
    (b"", "truncated: 0 bytes"),
    (b"\x07\x00\x00\x00\x00\x00\x00\x00", "8 bytes"),
    (struct.pack("<i", -1), "out of range"),
    (struct.pack("<i", u.MAX_OFFSETS), "out of range"),
])
def test_bad_file_is_set_aside(tmp_path: Path, data: bytes, why: str, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(u.BadUidFile, match=why):
        u.decode(data)
    (tmp_path / f"{A}.uid").write_bytes(data)
    original(tmp_path, B, 1)
    assert u.allocate(tmp_path, A) == 2
    assert (tmp_path / f"{A}.uid.bad").read_bytes() == data  # nothing lost
    assert why in caplog.text and "kept as" in caplog.text


def test_every_range_ends_below_2_32() -> None:
    assert u.uid_start(u.MAX_OFFSETS - 1) + u.UID_RANGE <= 0xFFFFFFFF
