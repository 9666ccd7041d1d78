"""GET_LAST_LOG: stream the log directory to an operator, file by file, in fragments."""

from __future__ import annotations

import codecs
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

# The original uses 64 MiB - 1 KiB fragments; smaller ones keep memory flat on both sides and
# every client concatenates fragments anyway.
FRAGMENT_SIZE = 1024 * 1024
LOCK_NAME = ".lock-delete-old"


def current_files(log_dir: Path) -> set[str]:
    """Targets of the `*.current` links: the files being written now, never deleted."""
    keep = set()
    for link in log_dir.glob("*.current"):
        if link.is_symlink():
            keep.add(os.path.basename(os.readlink(link)))
    return keep


def log_files(log_dir: Path) -> list[Path]:
    if not log_dir.is_dir():
        return []
    return sorted(
        p for p in log_dir.iterdir()
        if p.is_file() and not p.is_symlink() and not p.name.startswith(".")
        and not p.name.endswith(".current")
    )


def read_fragments(path: Path, size: int = FRAGMENT_SIZE) -> Iterator[tuple[str, bool]]:
    """(text, is_final) pieces of a file; log text is decoded leniently since the proto field
    is a string and a log line may hold arbitrary bytes."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    with path.open("rb") as f:
        chunk = f.read(size)
        while True:
            nxt = f.read(size)
            text = decoder.decode(chunk, final=not nxt)
            yield text, not nxt
            if not nxt:
                return
            chunk = nxt


def remove_old_logs(log_dir: Path, sent: list[Path]) -> int:
    keep = current_files(log_dir)
    removed = 0
    with open(log_dir / LOCK_NAME, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for p in sent:
            if p.name in keep:
                continue
            try:
                p.unlink()
                removed += 1
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warning("cannot remove log %s: %s", p, e)
    return removed
