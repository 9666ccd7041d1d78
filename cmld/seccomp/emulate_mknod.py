"""mknod/mknodat of a device, emulated (the original's c_seccomp): cmld creates the node in the
container, as the caller would have seen it, if the caller holds CAP_MKNOD and the device is
allowed for the container. Paths are resolved with RESOLVE_IN_ROOT against the caller's root."""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Callable
from contextlib import suppress

from cml_common.logbudget import LogBudget
from cml_common.logsafe import clip
from cmld.linux.mounts import open_in_root
from cmld.seccomp import notify
from cmld.seccomp.caller import Caller, caller_of
from cmld.seccomp.notify import CallerGone, Notification, Response
from cmld.seccomp.procfs import (
    AT_FDCWD,
    CAP_DAC_OVERRIDE,
    CAP_MKNOD,
    NR_MKNODAT,
    SYSCALL_NAMES,
    USERNS_SIZE,
    ProcStatus,
    container_relative,
    decode_dev,
    device_type,
    int32,
    may_create_in,
    split_target,
)

log = logging.getLogger(__name__)


class MknodEmulation:
    def __init__(self, listener_fd: int, container_name: str, is_device_allowed: Callable[[str, int, int], bool],
                 uid_offset: int | None, budget: LogBudget | None = None) -> None:
        self._fd = listener_fd
        self._name = container_name
        self._is_device_allowed = is_device_allowed
        self._uid_offset = uid_offset
        self._budget = budget or LogBudget(f"container {container_name}")

    def _note(self, fmt: str, *args: object) -> None:
        """One line about a call, within the container's 'mknod' log budget."""
        if self._budget.allow("mknod"):
            log.info("container %s: " + fmt, self._name, *args)

    def handle(self, notif: Notification) -> Response:
        at = notif.nr == NR_MKNODAT
        off = 1 if at else 0
        dirfd = int32(notif.args[0]) if at else AT_FDCWD
        mode = notif.args[off + 1] & 0xFFFF  # umode_t
        major, minor = decode_dev(notif.args[off + 2])
        kind = device_type(mode)
        if kind is None:  # the filter only notifies devices
            return notify.continue_()
        call = SYSCALL_NAMES[notif.nr]
        with caller_of(self._fd, notif) as caller:
            try:
                path = caller.read_string(notif.args[off])
            except OSError as e:
                self._note("%s of %s %d:%d by pid %d: bad path: %s", call, kind, major, minor, notif.pid,
                           e.strerror)
                return notify.error(e.errno or errno.EFAULT)
            status = caller.status()
            if not status.has_cap(CAP_MKNOD):
                reason = "caller lacks CAP_MKNOD"
            elif not self._is_device_allowed(kind, major, minor):
                reason = "device not allowed"
            else:
                reason = ""
            if reason:
                self._note("%s %s %s %d:%d denied (%s)", call, clip(path), kind, major, minor, reason)
                return notify.error(errno.EPERM)
            try:
                self._create_node(caller, dirfd, path, mode, os.makedev(major, minor), status)
            except CallerGone:
                raise
            except OSError as e:
                err = e.errno or errno.EPERM
                self._note("%s %s %s %d:%d allowed, failed: %s", call, clip(path), kind, major, minor,
                           os.strerror(err))
                return notify.error(err)
            self._note("%s %s %s %d:%d allowed, created", call, clip(path), kind, major, minor)
            return notify.success(0)

    def _open_parent(self, caller: Caller, dirfd: int, path: str) -> tuple[int, str]:
        """An O_PATH fd of the directory the node goes in, and the node's name."""
        parent, name = split_target(path)
        dir_flags = os.O_PATH | os.O_DIRECTORY
        root_fd = caller.open("root", dir_flags)
        if path.startswith("/"):
            return caller.track(open_in_root(root_fd, parent, dir_flags)), name
        base = "cwd" if dirfd == AT_FDCWD else f"fd/{dirfd}"
        try:
            base_fd = caller.open(base, dir_flags)
        except FileNotFoundError:
            raise OSError(errno.EBADF, "no such fd in caller") from None
        notify.check_valid(caller.listener_fd, caller.notif.id)
        rel = self._locate_in_root(caller, root_fd, base_fd, base)
        if rel is not None:
            # Start at the base, but with the caller's root as `/`: `..` and absolute symlinks
            # resolve exactly as for the caller.
            return caller.track(open_in_root(root_fd, f"{rel}/{parent}", dir_flags)), name
        # The base is not reachable from the caller's root (e.g. a dirfd from outside, or a cwd
        # left outside a chroot): resolve inside the base only.
        log.debug("container %s: %s of pid %d is outside its root; resolving %s beneath it", self._name, base,
                  caller.notif.pid, clip(path))
        return caller.track(open_in_root(base_fd, parent, dir_flags)), name

    @staticmethod
    def _locate_in_root(caller: Caller, root_fd: int, base_fd: int, base: str) -> str | None:
        """The base directory's path relative to the caller's root, if it verifiably is that
        directory (same device and inode when opened from the root)."""
        try:
            rel = container_relative(os.readlink("root", dir_fd=caller.proc_fd),
                                     os.readlink(base, dir_fd=caller.proc_fd))
            if rel is None:
                return None
            fd = open_in_root(root_fd, rel, os.O_PATH | os.O_DIRECTORY)
        except OSError:
            return None
        try:
            a, b = os.fstat(fd), os.fstat(base_fd)
        finally:
            os.close(fd)
        return rel if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino) else None

    def _create_node(self, caller: Caller, dirfd: int, path: str, mode: int, dev: int, status: ProcStatus) -> None:
        parent_fd, name = self._open_parent(caller, dirfd, path)
        pst = os.fstat(parent_fd)
        owner_mapped = self._uid_offset is None or (self._in_container_range(pst.st_uid)
                                                    and self._in_container_range(pst.st_gid))
        privileged = status.has_cap(CAP_DAC_OVERRIDE) and owner_mapped
        if not may_create_in(pst.st_mode, pst.st_uid, pst.st_gid, status, privileged):
            raise OSError(errno.EACCES, "no write permission on the parent directory")
        # /proc/<pid>/status shows the caller's fsuid/fsgid as host IDs already (mapped into cmld's
        # user namespace), so for a user-namespaced container they are uid_offset + container ID.
        uid = status.fsuid
        gid = pst.st_gid if pst.st_mode & stat.S_ISGID else status.fsgid
        if self._uid_offset is not None and not (self._in_container_range(uid) and self._in_container_range(gid)):
            raise OSError(errno.EPERM, f"caller IDs {uid}:{gid} outside the container's range")
        ftype = stat.S_IFMT(mode)
        perm = mode & 0o7777 & ~status.umask
        notify.check_valid(caller.listener_fd, caller.notif.id)
        os.mknod(name, ftype | perm, dev, dir_fd=parent_fd)
        try:
            node = caller.track(os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd))
            nst = os.fstat(node)
            if stat.S_IFMT(nst.st_mode) != ftype or nst.st_rdev != dev:
                raise OSError(errno.EEXIST, "node replaced while being created")
            # Through the O_PATH fd, so the inode just checked is the one changed: cmld's own umask
            # must not narrow the mode, and a name swapped for a symlink must not redirect chown.
            own = f"/proc/self/fd/{node}"
            os.chown(own, uid, gid)
            os.chmod(own, perm)
        except OSError:
            with suppress(OSError):
                cur = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
                if stat.S_IFMT(cur.st_mode) == ftype and cur.st_rdev == dev:
                    os.unlink(name, dir_fd=parent_fd)
            raise

    def _in_container_range(self, host_id: int) -> bool:
        return self._uid_offset is not None and self._uid_offset <= host_id < self._uid_offset + USERNS_SIZE
