"""FIFOs from c0 into a container (the original's c_fifo; container config `fifos:`).

For each name in `fifos`, cmld makes a named pipe `/dev/fifos/<name>` in c0 (on the host in
`/tmp/cmlfifos/` when there is no c0, in hosted mode) and one at `/dev/fifos/<name>` in the
container, and copies what c0 writes into the container (`fifo_forwarder`). Each end lives on
its own container's private /dev tmpfs, made by cmld: no other container can reach either end
by any path. A name is forwarded to one container at a time. When c0 restarts, its ends are
made again and the channels pick them up.

Names are single path components (no `/`, not `.` or `..`, at most 255 bytes): a config cannot
place a FIFO anywhere else.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

from cmld import linux
from cmld.modules.base import Module, StartError
from cmld.modules.context import StartContext
from cmld.modules.fifo_forwarder import (
    FIFO_DIR,
    FifoForwarder,
    RootOpener,
    host_root,
    proc_root,
)

log = logging.getLogger(__name__)

HOSTED_FIFO_DIR = Path("/tmp/cmlfifos")  # noqa: S108 - the original's place in hosted mode, checked below
FIFO_MODE = 0o600
MAX_NAME = 255


def check_names(names: list[str]) -> list[str]:
    """The config's FIFO names, or StartError naming the bad one."""
    seen: set[str] = set()
    for name in names:
        if (not name or "/" in name or "\0" in name or name in (".", "..")
                or len(name.encode("utf-8", "surrogateescape")) > MAX_NAME):
            raise StartError(f"fifos: {name[:64]!r} is not a valid FIFO name (one path component, "
                             f"at most {MAX_NAME} bytes)")
        if name in seen:
            raise StartError(f"fifos: {name!r} is listed twice")
        seen.add(name)
    return names


def make_fifos(root: RootOpener, directory: str, names: list[str], uid: int) -> None:
    """Make `directory` (one level below an existing one) and a FIFO per name in it, owned by
    `uid`, inside `root`. An existing FIFO of the same name is kept (a restarted c0 or a
    forwarder that outlived its reader); anything else in its place is an error."""
    root_fd = root()
    try:
        if directory:
            parent, _, leaf = directory.rpartition("/")
            pfd = linux.open_in_root(root_fd, parent or "/", os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.mkdir(leaf, 0o755, dir_fd=pfd)
            except FileExistsError:
                pass
            finally:
                os.close(pfd)
        dfd = linux.open_in_root(root_fd, directory or "/", os.O_RDONLY | os.O_DIRECTORY)
    finally:
        os.close(root_fd)
    try:
        if directory:
            os.fchown(dfd, uid, uid)
        for name in names:
            try:
                os.mkfifo(name, FIFO_MODE, dir_fd=dfd)
            except FileExistsError:
                if not stat.S_ISFIFO(os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode):
                    raise OSError(errno.EEXIST, f"{directory}/{name} exists and is not a FIFO") from None
            os.chown(name, uid, uid, dir_fd=dfd, follow_symlinks=False)
    finally:
        os.close(dfd)


def remove_fifos(root: RootOpener, directory: str, names: list[str]) -> None:
    try:
        root_fd = root()
    except OSError:
        return  # that container is gone, and its /dev with it
    try:
        dfd = linux.open_in_root(root_fd, directory or "/", os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    finally:
        os.close(root_fd)
    try:
        for name in names:
            try:
                if stat.S_ISFIFO(os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode):
                    os.unlink(name, dir_fd=dfd)
            except OSError:
                pass
    finally:
        os.close(dfd)


def hosted_dir() -> Path:
    """The original's directory in /tmp, made by root and writable by root only (/tmp is
    everybody's: a directory or link someone else placed there is refused, not used)."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(HOSTED_FIFO_DIR, 0o755)
    st = os.lstat(HOSTED_FIFO_DIR)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
        raise OSError(errno.EPERM, f"{HOSTED_FIFO_DIR} is not a root-owned directory only root can write")
    return HOSTED_FIFO_DIR


class FifoBoard:
    """Which container each FIFO name is forwarded to, for the whole device."""

    def __init__(self, hosted: bool, c0_pid: Callable[[], int | None]) -> None:
        self.hosted = hosted
        self.c0_pid = c0_pid
        self.owners: dict[str, str] = {}

    def claim(self, uuid: str, names: list[str]) -> None:
        taken = [(n, self.owners[n]) for n in names if self.owners.get(n, uuid) != uuid]
        if taken:
            name, other = taken[0]
            raise StartError(f"fifos: {name!r} is already forwarded to container {other}")
        for n in names:
            self.owners[n] = uuid

    def release(self, uuid: str) -> list[str]:
        mine = [n for n, u in self.owners.items() if u == uuid]
        for n in mine:
            del self.owners[n]
        return mine

    def source(self) -> tuple[RootOpener, str, int]:
        """Where c0's ends are: (root, directory in it, owner uid)."""
        if self.c0_pid():
            return proc_root(self.c0_pid), FIFO_DIR, 0  # c0 has no user namespace
        if self.hosted:
            try:
                return host_root(hosted_dir()), "", 0
            except OSError as e:
                raise StartError(f"fifos: {HOSTED_FIFO_DIR}: {e.strerror or e}") from None
        raise StartError("fifos: c0 is not running, so there is no end to write to")


class FifoModule(Module):
    name = "fifos"

    def __init__(self, board: FifoBoard) -> None:
        self.board = board
        self.forwarders: list[FifoForwarder] = []
        self.names: list[str] = []
        self.source: tuple[RootOpener, str, int] | None = None

    async def pre_exec(self, ctx: StartContext) -> None:
        c = ctx.container
        own_root = proc_root(lambda: ctx.init_pid)
        if c.is_c0:
            # c0 (re)starts: the directory, and the ends of channels to running containers
            try:
                make_fifos(own_root, FIFO_DIR, sorted(self.board.owners), 0)
            except OSError as e:
                raise StartError(f"fifos: cannot prepare {FIFO_DIR} in c0: {e.strerror or e}") from None
            return
        names = check_names(list(c.config.fifos))
        if not names:
            return
        self.board.claim(ctx.uuid, names)
        self.names = names
        self.source = self.board.source()
        root, directory, owner = self.source
        uid = ctx.spec.uid_start or 0
        try:
            make_fifos(root, directory, names, owner)
        except OSError as e:
            raise StartError(f"fifos: cannot make c0's ends: {e.strerror or e}") from None
        try:
            make_fifos(own_root, FIFO_DIR, names, uid)
        except OSError as e:
            raise StartError(f"fifos: cannot make the container's ends: {e.strerror or e}") from None
        for name in names:
            fwd = FifoForwarder(name, root, own_root, c.name, source_dir=directory)
            fwd.start()
            self.forwarders.append(fwd)
        log.info("container %s: FIFOs from %s: %s", c.name, "c0" if directory else "the host", ", ".join(names))

    async def cleanup(self, ctx: StartContext, rebooting: bool) -> None:
        forwarders, self.forwarders = self.forwarders, []
        for fwd in forwarders:
            await fwd.close()
        if self.source is not None:
            root, directory, _ = self.source
            remove_fifos(root, directory, self.names)
            self.source = None
        if self.names:
            self.board.release(ctx.uuid)
            self.names = []
