"""The device's audit journal: `<dir>/journal.log`, append-only, one hash-chained entry a line
(cml_common.auditlog), and `<dir>/head.json`, the last signed checkpoint.

Every record is appended here first, whatever happens to it afterwards (queued, delivered,
forwarded), so the journal is the complete history the verifier checks. An index of line offsets
is kept in memory for readers (`cml-control audit`, the forwarder).

A journal whose last line is incomplete (cmld died mid-write) is repaired on open: the torn bytes
are cut off and returned, and the auditor records them in a `journal-repaired` record, so the
repair itself is evidence and nothing disappears silently.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from cml_common.auditlog.entry import CHECKPOINT, GENESIS, MAX_LINE, RECORD, Entry, EntryError, parse_line
from cml_common.fsutil import write_atomic

MAX_READ_BYTES = 4 << 20


class JournalError(Exception):
    pass


class Journal:
    def __init__(self, directory: Path, on_written: Callable[[Path], None] | None = None) -> None:
        """`on_written`: who fsyncs later (a Syncer); without, each append is fsync'd at once."""
        self.on_written = on_written
        self.path = directory / "journal.log"
        self.head_path = directory / "head.json"
        self.offsets: list[int] = []  # offsets[i] is where seq i+1 starts
        self.subjects: list[str] = []  # subject of seq i+1 ("" for checkpoints)
        self.last_hash = GENESIS
        self.last_seq = 0
        self.size = 0
        self.torn = b""
        self.unreadable: list[int] = []  # line numbers that did not parse on open

    def open(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b""
        end = data.rfind(b"\n") + 1
        if end < len(data):
            self.torn = data[end:]
            with self.path.open("r+b") as f:
                f.truncate(end)
                os.fsync(f.fileno())
            data = data[:end]
        pos = 0
        for n, line in enumerate(data.splitlines(keepends=True), 1):
            try:
                e = parse_line(line[:-1])
            except EntryError:
                self.unreadable.append(n)
            else:
                self.offsets.append(pos)
                self.subjects.append(e.subject)
                self.last_seq, self.last_hash = e.seq, e.hash
            pos += len(line)
        self.size = pos
        if len(self.offsets) != self.last_seq:
            # Damaged (the verifier says how); new entries continue after the highest number.
            self.offsets += [pos] * (self.last_seq - len(self.offsets))
            self.subjects += [""] * (self.last_seq - len(self.subjects))

    def _append(self, e: Entry) -> Entry:
        e.seal()
        line = (e.line() + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            written = os.write(fd, line)
            if written != len(line):
                os.ftruncate(fd, self.size)
                raise JournalError(f"short write to {self.path}")
            if self.on_written is None:
                os.fsync(fd)
        except OSError as err:
            raise JournalError(f"cannot write {self.path}: {err.strerror}") from err
        finally:
            os.close(fd)
        self.offsets.append(self.size)
        self.subjects.append(e.subject)
        self.size += len(line)
        self.last_seq, self.last_hash = e.seq, e.hash
        if self.on_written is not None:
            self.on_written(self.path)
        return e

    def append_record(self, subject: str, record: bytes, now: float | None = None) -> Entry:
        return self._append(Entry(seq=self.last_seq + 1, time=int(time.time() if now is None else now),
                                  kind=RECORD, prev=self.last_hash, subject=subject, record=record))

    def checkpoint_statement_args(self) -> tuple[int, str, int]:
        return self.last_seq, self.last_hash, int(time.time())

    def append_checkpoint(self, covers: int, covers_hash: str, when: int, sig: bytes, cert: str) -> Entry | None:
        """None when entries were appended since the statement was signed (sign again later)."""
        if covers != self.last_seq or covers_hash != self.last_hash:
            return None
        e = self._append(Entry(seq=covers + 1, time=when, kind=CHECKPOINT, prev=covers_hash, covers=covers,
                               covers_hash=covers_hash, sig=sig, cert=cert))
        write_atomic(self.head_path, (e.line() + "\n").encode(), mode=0o600)
        return e

    def read_after(self, after: int, limit: int, subject: str | None = None,
                   max_bytes: int = MAX_READ_BYTES) -> list[str]:
        """Lines of entries with seq > after (of one subject only, when given): at most `limit`
        of them and about `max_bytes` (a reply must stay far below the 64 MiB frame limit)."""
        out: list[str] = []
        size = 0
        if after >= self.last_seq:
            return out
        with self.path.open("rb") as f:
            for seq in range(after + 1, self.last_seq + 1):
                if subject is not None and self.subjects[seq - 1] != subject:
                    continue
                f.seek(self.offsets[seq - 1])
                line = f.readline(MAX_LINE + 1).decode(errors="replace").rstrip("\n")
                out.append(line)
                size += len(line)
                if len(out) >= limit or size >= max_bytes:
                    break
        return out
