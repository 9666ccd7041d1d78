"""Crash-safe file writes: a config or marker is either fully there or not there at all."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

_TMP = re.compile(r"^\..+\.tmp\d+$")


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write via a temp file in the same directory, fsync, rename, fsync the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def stale_temp_files(directory: Path) -> list[Path]:
    """`write_atomic` temp files in `directory`: a crash came between the write and the rename."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _TMP.match(p.name) and p.is_file())


def remove_quietly(*paths: Path) -> None:
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
