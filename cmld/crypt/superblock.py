"""The dm-integrity superblock at the start of a meta image, read to decide whether the volume was
ever formatted (the original's get_provided_data_sectors): magic "integrt\\0", and at byte 16 the
number of data sectors it provides (little-endian u64). A zeroed meta image makes the kernel write
a fresh superblock when the table loads; its data then has no valid tags until written once."""

from __future__ import annotations

import struct
from pathlib import Path

MAGIC = b"integrt\x00"
SB_READ = 24


def provided_data_sectors(raw: bytes) -> int | None:
    """None when there is no integrity superblock (never formatted, or not ours)."""
    if len(raw) < SB_READ or raw[:8] != MAGIC:
        return None
    value: int = struct.unpack_from("<Q", raw, 16)[0]
    return value


def read(meta_image: Path) -> int | None:
    with meta_image.open("rb") as f:
        return provided_data_sectors(f.read(SB_READ))


def needs_initial_format(meta_image: Path, data_sectors: int) -> bool:
    """As the original: the data has no tags yet unless the superblock provides exactly the data
    device's size."""
    return read(meta_image) != data_sectors
