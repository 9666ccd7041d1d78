"""One FIFO channel from c0 to a container (the original's c_fifo forwarder, as an asyncio task of
cmld instead of a forked copier process).

The original's semantics are kept: data flows only while a writer in c0 and a reader in the
container both have their end open; the writer in c0 blocks once the pipe is full and no reader
takes the data; when the writer in c0 closes its end, the reader in the container sees end of
file, and the channel is re-armed for the next writer.

Both ends are opened through the owning container's root with openat2 RESOLVE_IN_ROOT (no
symlink or `..` placed in /dev/fifos can lead outside that container), non-blocking, and only
if the file there still is a FIFO: a container that replaces its FIFO by something else gets no
data, and cmld never blocks in an open(2).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

from cmld import linux

log = logging.getLogger(__name__)

FIFO_DIR = "/dev/fifos"
RETRY = 0.1  # s: no reader in the container yet, or c0 not (yet) there
CHUNK = 65536


class RootUnavailable(OSError):
    """The container whose root holds one end is not running."""


# Yields an O_PATH fd of the root the FIFO lives in (the caller closes it).
RootOpener = Callable[[], int]


def proc_root(pid_of: Callable[[], int | None]) -> RootOpener:
    """The root of a running container, through its init's /proc entry."""
    def opener() -> int:
        pid = pid_of()
        if not pid:
            raise RootUnavailable(errno.ESRCH, "not running")
        return os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return opener


def host_root(directory: Path) -> RootOpener:
    """A directory of the host taken as the root (hosted mode without c0: /tmp/cmlfifos)."""
    def opener() -> int:
        return os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    return opener


def open_fifo(root: RootOpener, path: str, flags: int) -> int:
    """Open the FIFO at `path` inside `root`, non-blocking; refuse anything that is not a FIFO."""
    root_fd = root()
    try:
        fd = linux.open_in_root(root_fd, path, flags | os.O_NONBLOCK | os.O_NOCTTY)
    finally:
        os.close(root_fd)
    if not stat.S_ISFIFO(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"{path} is not a FIFO")
    return fd


async def wait_fd(fd: int, *, write: bool) -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)
    (loop.add_writer if write else loop.add_reader)(fd, ready)
    try:
        await fut
    finally:
        (loop.remove_writer if write else loop.remove_reader)(fd)


class FifoForwarder:
    """Copies what c0 writes to `<source root>/dev/fifos/<name>` into the container's
    `/dev/fifos/<name>`, until closed."""

    def __init__(self, name: str, source: RootOpener, target: RootOpener, container: str,
                 source_dir: str = FIFO_DIR) -> None:
        self.name = name
        self.source = source
        self.target = target
        self.container = container
        self.source_path = f"{source_dir}/{name}"
        self.target_path = f"{FIFO_DIR}/{name}"
        self.task: asyncio.Task[None] | None = None
        self._dst: int | None = None
        self.forwarded = 0  # bytes delivered (logged at close)

    def start(self) -> None:
        self.task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
        self._close_target()
        log.info("container %s: FIFO %s closed (%d bytes forwarded)", self.container, self.name, self.forwarded)

    def _close_target(self) -> None:
        if self._dst is not None:
            os.close(self._dst)
            self._dst = None

    async def _run(self) -> None:
        complained = False
        while True:
            try:
                src = open_fifo(self.source, self.source_path, os.O_RDONLY)
            except OSError as e:
                if not complained:
                    log.warning("container %s: FIFO %s: c0's end is not available (%s); retrying",
                                self.container, self.name, e.strerror or e)
                    complained = True
                await asyncio.sleep(RETRY * 10)
                continue
            complained = False
            try:
                await self._pump(src)
            except Exception:  # a forwarder never takes cmld down
                log.exception("container %s: FIFO %s: forwarding failed; re-arming", self.container, self.name)
                await asyncio.sleep(RETRY * 10)
            finally:
                os.close(src)
                self._close_target()  # the reader in the container sees end of file

    async def _pump(self, src: int) -> None:
        while True:
            await wait_fd(src, write=False)
            try:
                data = os.read(src, CHUNK)
            except BlockingIOError:
                continue
            if not data:
                return  # the writer in c0 closed its end
            await self._deliver(memoryview(data))

    async def _deliver(self, view: memoryview) -> None:
        while view:
            if self._dst is None:
                try:
                    self._dst = open_fifo(self.target, self.target_path, os.O_WRONLY)
                except OSError as e:
                    if e.errno not in (errno.ENXIO, errno.ENOENT):  # ENXIO: no reader yet
                        log.warning("container %s: FIFO %s: cannot open the container's end: %s",
                                    self.container, self.name, e.strerror or e)
                    await asyncio.sleep(RETRY)
                    continue
            try:
                n = os.write(self._dst, view)
            except BlockingIOError:
                await wait_fd(self._dst, write=True)
                continue
            except BrokenPipeError:
                self._close_target()  # the reader left: the rest goes to the next one
                continue
            view = view[n:]
            self.forwarded += n
