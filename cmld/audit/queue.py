"""A subject's pending queue: `<dir>/<uuid>.log`, the original's file of records a container's
audit reader has not acknowledged yet (text records, each followed by `-----`).

The capacity is device.conf `audit_size` MB per file, as the original: a record that does not fit
is not queued (the auditor keeps it in the journal and says so, see auditor.py). Writes hold
flock, as the original's, and are fsync'd.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path

from .record import DELIMITER

DELIM = DELIMITER.encode()


class PendingQueue:
    def __init__(self, path: Path, capacity: int, on_written: Callable[[Path], None] | None = None) -> None:
        self.path = path
        self.capacity = capacity
        self.on_written = on_written  # a Syncer's mark; without, every write is fsync'd at once

    def _sync(self, fd: int) -> None:
        if self.on_written is None:
            os.fsync(fd)
        else:
            self.on_written(self.path)

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def remaining(self) -> int:
        return max(0, self.capacity - self.size())

    def fits(self, text: str) -> bool:
        return len(text.encode()) + len(DELIM) <= self.remaining()

    def append(self, text: str) -> bool:
        """False (nothing written) when the record does not fit."""
        data = text.encode()
        if not data.endswith(b"\n"):
            data += b"\n"
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size + len(data) + len(DELIM) > self.capacity:
                return False
            if size and not self._ends_with_delim(fd, size):
                data = DELIM + data  # the original's fix-up of a torn last record
            os.write(fd, data + DELIM)
            self._sync(fd)
            return True
        finally:
            os.close(fd)

    @staticmethod
    def _ends_with_delim(fd: int, size: int) -> bool:
        return size >= len(DELIM) and os.pread(fd, len(DELIM), size - len(DELIM)) == DELIM

    def _split_first(self, data: bytes) -> tuple[bytes, bytes]:
        lines = data.splitlines(keepends=True)
        first: list[bytes] = []
        for i, line in enumerate(lines):
            if line == DELIM:
                return b"".join(first), b"".join(lines[i + 1:])
            first.append(line)
        return b"".join(first), b""

    def first(self) -> str | None:
        """The oldest record's text, None when the queue is empty. Reads only as far as the
        first delimiter (a full queue is megabytes, and every ACK asks for its head)."""
        try:
            f = self.path.open("rb")
        except FileNotFoundError:
            return None
        with f:
            data = b""
            while True:
                chunk = f.read(8192)
                data += chunk
                if not chunk or (b"\n" + DELIM) in data or data.startswith(DELIM):
                    break
        if not data:
            return None
        head, _ = self._split_first(data)
        return head.decode(errors="replace")

    def pop_first(self) -> None:
        """Remove the oldest record (it was acknowledged); the file goes with the last one."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            data = os.pread(fd, os.fstat(fd).st_size, 0)
            _, rest = self._split_first(data)
            if not rest:
                os.unlink(self.path)
                return
            os.pwrite(fd, rest, 0)
            os.ftruncate(fd, len(rest))
            self._sync(fd)
        finally:
            os.close(fd)
