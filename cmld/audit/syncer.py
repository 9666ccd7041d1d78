"""Group commit for the audit files: a record is written at once (in order, in the page cache)
and fsync'd by a worker thread shortly after, together with whatever came meanwhile, so the
event loop never waits for the disk and a burst of records costs one fsync per file.

A record is durable at most 20 ms plus one fsync time after it was written; a crash in between can only
lose the newest records, and the journal's repair on the next start records any torn tail.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)
COALESCE = 0.02  # s: the longest a record waits for its fsync beyond the fsync itself


def fsync_path(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return  # a queue drained and removed meanwhile
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Syncer:
    def __init__(self) -> None:
        self.dirty: set[Path] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.syncs = 0

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    def mark(self, path: Path) -> None:
        self.dirty.add(path)
        self._wake.set()

    async def flush(self) -> None:
        paths, self.dirty = self.dirty, set()
        for p in paths:
            try:
                await asyncio.to_thread(fsync_path, p)
            except OSError as e:
                log.error("audit: fsync of %s failed: %s", p, e)
        self.syncs += 1

    async def _run(self) -> None:
        while not self._closing:
            await self._wake.wait()
            await asyncio.sleep(COALESCE)  # let a burst of records share the fsync
            self._wake.clear()
            await self.flush()

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        await self.flush()
