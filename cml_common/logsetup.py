"""Daemon logging: journald under systemd, stderr otherwise, and always timestamped log files.

Files are named like the original's (`cml-daemon.<RFC 3339 time>`, with a `.current` symlink and
a new file every 24 h) because GET_LAST_LOG serves them to operators, also under systemd.
Line format: `<time> [<pid>] <LEVEL> <message>` with the original's level names. A message is
always one line: control characters in it are escaped (`logsafe`), so text a container chose cannot
forge a line.
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
import time
from pathlib import Path
from typing import TextIO

from .logsafe import escape, indent_lines

ROTATE_SECONDS = 24 * 3600
_LEVEL_NAMES = {"WARNING": "WARN", "CRITICAL": "FATAL"}


MAX_MESSAGE_CHARS = 4096


def bound(msg: str) -> str:
    """Cut at MAX_MESSAGE_CHARS. Log lines quote what clients sent (a refused config's parse
    error, a name, a path): without a bound one 64 MiB request could write as much to every log
    (found by fuzzing cmld's CREATE_CONTAINER: 140 KB for one request)."""
    if len(msg) > MAX_MESSAGE_CHARS:
        return f"{msg[:MAX_MESSAGE_CHARS]}... ({len(msg) - MAX_MESSAGE_CHARS} characters cut)"
    return msg


class SafeFormatter(logging.Formatter):
    """One record, one bounded line: the message is cut (`bound`) and escaped (`logsafe.escape`),
    so no argument can start a line of its own; a traceback follows on lines indented by a tab."""

    def format(self, record: logging.LogRecord) -> str:
        record.message = escape(bound(record.getMessage()))
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + indent_lines(record.exc_text)
        if record.stack_info:
            line += "\n" + indent_lines(self.formatStack(record.stack_info))
        return line


class CmlFormatter(SafeFormatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        when = datetime.datetime.fromtimestamp(record.created).astimezone()
        return when.isoformat(timespec="milliseconds")

    def format(self, record: logging.LogRecord) -> str:
        record.cmllevel = _LEVEL_NAMES.get(record.levelname, record.levelname)
        return super().format(record)


FORMAT = "%(asctime)s [%(process)d] %(cmllevel)s %(message)s"


def log_file_name(prefix: str, when: datetime.datetime | None = None) -> str:
    when = when or datetime.datetime.now().astimezone()
    return f"{prefix}.{when.strftime('%Y-%m-%dT%H:%M:%S.%f%z')}"


class RotatingCmlFileHandler(logging.Handler):
    """Writes `<dir>/<prefix>.<ts>`, starts a new file every 24 h, keeps `<prefix>.current`."""

    def __init__(self, directory: Path, prefix: str) -> None:
        super().__init__()
        self.directory = directory
        self.prefix = prefix
        self.path: Path | None = None
        self._stream: TextIO | None = None
        self._opened = 0.0
        self._open()

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / log_file_name(self.prefix)
        self._stream = open(self.path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
        self._opened = time.monotonic()
        link = self.directory / f"{self.prefix}.current"
        tmp = self.directory / f".{self.prefix}.current.tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(self.path.name, tmp)
        os.replace(tmp, link)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if time.monotonic() - self._opened >= ROTATE_SECONDS:
                self.close_stream()
                self._open()
            line = self.format(record)
            assert self._stream is not None
            self._stream.write(line + "\n")
        except Exception:
            self.handleError(record)

    def close_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def close(self) -> None:
        self.close_stream()
        super().close()


def under_systemd() -> bool:
    return bool(os.environ.get("INVOCATION_ID") or os.environ.get("JOURNAL_STREAM"))


def setup_logging(
    program: str, *, log_dir: Path | None, file_prefix: str, verbose: bool = False
) -> RotatingCmlFileHandler | None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    formatter = CmlFormatter(FORMAT)
    console: logging.Handler | None = None
    if under_systemd():
        try:
            from systemd.journal import JournalHandler

            journal = JournalHandler(SYSLOG_IDENTIFIER=program)
            journal.setFormatter(SafeFormatter("%(message)s"))
            console = journal
        except ImportError:
            console = None
    if console is None:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(formatter)
    root.addHandler(console)
    file_handler: RotatingCmlFileHandler | None = None
    if log_dir is not None:
        try:
            file_handler = RotatingCmlFileHandler(log_dir, file_prefix)
        except OSError as e:
            logging.getLogger(program).warning("cannot write log files in %s: %s", log_dir, e)
        else:
            file_handler.setFormatter(formatter)
            root.addHandler(file_handler)
    return file_handler
