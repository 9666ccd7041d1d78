"""Destroying a container's secrets before their files are unlinked (wipe, remove): an unlinked
file's blocks stay readable on the disk until reused. The key file is overwritten with zeroes, and
so are the first MiB of every image (file system superblock) and of every meta image (dm-integrity
superblock and journal), each synced to disk. Without the key the encrypted data that remains is
noise; without the integrity superblock not even its layout is left."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

HEADER = 1 << 20


def overwrite(path: Path, length: int | None = None) -> None:
    """Zero the first `length` bytes (all of the file when None) in place and fsync."""
    with contextlib.suppress(FileNotFoundError, IsADirectoryError):
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            size = os.fstat(fd).st_size
            n = size if length is None else min(size, length)
            zeros = bytes(min(n, HEADER))
            done = 0
            while done < n:
                done += os.pwrite(fd, zeros[: n - done], done)
            os.fsync(fd)
        finally:
            os.close(fd)


def destroy_key_file(path: Path) -> bool:
    """Overwrite and unlink; True if there was one."""
    if not path.is_file():
        return False
    overwrite(path)
    path.unlink(missing_ok=True)
    return True


def scrub_images(directory: Path) -> None:
    """Zero the headers of every image in a container's image directory (before it is deleted)."""
    for img in sorted(directory.glob("*.img")) if directory.is_dir() else []:
        if img.is_file() and not img.is_symlink():
            overwrite(img, HEADER)


def destroy_tree(directory: Path) -> None:
    """Overwrite every regular file under `directory` (WIPE_DEVICE: keys, tokens, PINs' wrapped
    keys), symlinks left alone, before the tree is deleted."""
    if not directory.is_dir() or directory.is_symlink():
        return
    for root, _dirs, files in os.walk(directory):
        for name in files:
            p = Path(root) / name
            if p.is_file() and not p.is_symlink():
                overwrite(p)
