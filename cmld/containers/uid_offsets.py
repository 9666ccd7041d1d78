"""`containers/<uuid>.uid`: the offset k of a container's user-namespace UID range (host UID
100000 + k*100000, 65536 IDs), in the original's format: one raw native `int` (4 bytes,
little-endian here), written by c_user.c with `file_write(&offset, sizeof(offset))`.

A data directory written by the C CML is used as is. Two containers never get the same range:
an offset another container's `.uid` file holds is never handed out, and a container whose file
holds an offset another file holds too (a copied file, a hand edit) gets a new one. A file that is
not a valid offset (truncated, too long, out of range) is set aside as `<uuid>.uid.bad`, with a
clear error, and a new offset is allocated: nothing is overwritten that an operator may want to see.
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path

from cml_common.fsutil import write_atomic

log = logging.getLogger(__name__)
UID_BASE = 100000
UID_RANGE = 65536
# The original's MAX_UID_RANGES: every range ends below 2^32.
MAX_OFFSETS = (0xFFFFFFFF - UID_BASE) // UID_BASE
_INT = struct.Struct("=i")


class BadUidFile(ValueError):
    """A `.uid` file that does not hold a valid offset."""


def uid_file(containers_dir: Path, uuid: str) -> Path:
    return containers_dir / f"{uuid}.uid"


def encode(offset: int) -> bytes:
    return _INT.pack(offset)


def decode(data: bytes) -> int:
    """The offset in a `.uid` file's bytes: the original's raw int; also the decimal text line
    that earlier versions of this cmld wrote (a 4-byte text such as b"123\\n" is out of range as an
    int, so the two never mix)."""
    if len(data) == _INT.size:
        value: int = _INT.unpack(data)[0]
        if 0 <= value < MAX_OFFSETS:
            return value
    text = data.strip()
    if text.isdigit() and len(text) <= 5 and data.endswith(b"\n") and int(text) < MAX_OFFSETS:
        return int(text)
    if len(data) < _INT.size:
        raise BadUidFile(f"truncated: {len(data)} bytes, the original writes {_INT.size}")
    if len(data) > _INT.size:
        raise BadUidFile(f"{len(data)} bytes, the original writes {_INT.size}")
    raise BadUidFile(f"offset {_INT.unpack(data)[0]} is out of range (0..{MAX_OFFSETS - 1})")


def read(path: Path) -> int | None:
    """The offset in `path`; None if there is no file; BadUidFile if it is not valid."""
    try:
        with open(path, "rb") as f:
            data = f.read(64)
    except FileNotFoundError:
        return None
    return decode(data)


def _others(containers_dir: Path, mine: Path) -> dict[int, list[str]]:
    held: dict[int, list[str]] = {}
    for p in sorted(containers_dir.glob("*.uid")):
        if p == mine:
            continue
        try:
            offset = read(p)
        except (BadUidFile, OSError):
            continue
        if offset is not None:
            held.setdefault(offset, []).append(p.stem)
    return held


def allocate(containers_dir: Path, uuid: str) -> int:
    """The container's offset: the one its file holds if no other container's file holds it
    too, else the lowest free one from 1 (the original reserves 0), persisted."""
    mine = uid_file(containers_dir, uuid)
    held = _others(containers_dir, mine)
    try:
        existing = read(mine)
    except BadUidFile as e:
        bad = mine.with_name(mine.name + ".bad")
        mine.replace(bad)
        log.error("container %s: %s is not a valid UID offset (%s); kept as %s, a new offset is allocated",
                  uuid, mine, e, bad.name)
        existing = None
    if existing is not None:
        if existing not in held:
            return existing
        log.error("container %s: UID offset %d in %s is also held by %s; a new offset is allocated so that "
                  "no two containers share a UID range", uuid, existing, mine.name, ", ".join(held[existing]))
    free = next((k for k in range(1, MAX_OFFSETS) if k not in held and k != existing), None)
    if free is None:
        raise OSError(f"no free UID range left ({MAX_OFFSETS - 1} in use)")
    write_atomic(mine, encode(free), mode=0o600)
    log.info("container %s: UID offset %d (host UIDs from %d)", uuid, free, uid_start(free))
    return free


def uid_start(offset: int) -> int:
    return UID_BASE + offset * UID_BASE
