"""Answers a container's seccomp notifications inside cmld's event loop (c_seccomp emulation).

mknod/mknodat of a device: created by cmld in the container, as the caller would have seen it, if
the caller holds CAP_MKNOD and the device is allowed for the container. Time syscalls: done by
cmld on CLOCK_REALTIME if the container may set the system time and the caller holds CAP_SYS_TIME.
Everything else continues in the kernel as if there were no filter.

Every path from the caller is resolved with openat2 RESOLVE_IN_ROOT against the caller's root, so
symlinks and `..` inside the container can never lead cmld outside it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import select
import stat
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from cmld.linux import clock
from cmld.linux import seccomp as linux_seccomp
from cmld.linux.mounts import open_in_root
from cmld.seccomp import notify
from cmld.seccomp.notify import CallerGone, Notification, Response

log = logging.getLogger(__name__)


def int32(value: int) -> int:
    """A syscall argument as the C `int` the kernel reads from its low 32 bits."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value

# x86-64 syscall numbers
NR_ADJTIMEX = 159
NR_MKNOD = 133
NR_SETTIMEOFDAY = 164
NR_CLOCK_SETTIME = 227
NR_MKNODAT = 259
NR_CLOCK_ADJTIME = 305
SYSCALL_NAMES = {NR_MKNOD: "mknod", NR_MKNODAT: "mknodat", NR_CLOCK_SETTIME: "clock_settime",
                 NR_CLOCK_ADJTIME: "clock_adjtime", NR_ADJTIMEX: "adjtimex", NR_SETTIMEOFDAY: "settimeofday"}

CAP_DAC_OVERRIDE = 1
CAP_SYS_TIME = 25
CAP_MKNOD = 27
AT_FDCWD = -100
CLOCK_REALTIME = 0
USERNS_SIZE = 65536  # IDs mapped per user-namespaced container (c_user)



# ---------------------------------------------------------------------------- pure helpers


@dataclass(frozen=True)
class ProcStatus:
    """What /proc/<pid>/status says about a thread. IDs are as seen from the reader's user namespace
    (cmld's: host IDs), capabilities as held in the thread's own user namespace."""

    cap_eff: int
    umask: int
    fsuid: int
    fsgid: int
    groups: tuple[int, ...]

    def has_cap(self, cap: int) -> bool:
        return bool(self.cap_eff >> cap & 1)


def parse_status(text: str) -> ProcStatus:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key] = value.strip()
    try:
        uids = fields["Uid"].split()
        gids = fields["Gid"].split()
        return ProcStatus(cap_eff=int(fields["CapEff"], 16), umask=int(fields.get("Umask", "022"), 8),
                          fsuid=int(uids[3]), fsgid=int(gids[3]),
                          groups=tuple(int(g) for g in fields.get("Groups", "").split()))
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(f"unexpected /proc/<pid>/status: {e}") from None


def device_type(mode: int) -> str | None:
    """"c" or "b" for a char or block device mode, else None."""
    fmt = stat.S_IFMT(mode)
    return "c" if fmt == stat.S_IFCHR else "b" if fmt == stat.S_IFBLK else None


def decode_dev(dev: int) -> tuple[int, int]:
    """Major and minor of the `unsigned int dev` mknod passes to the kernel (new_decode_dev)."""
    dev &= 0xFFFFFFFF
    return (dev & 0xFFF00) >> 8, (dev & 0xFF) | ((dev >> 12) & 0xFFF00)


def split_target(path: str) -> tuple[str, str]:
    """(parent, last component) of the path mknod creates, with the kernel's errors for the paths
    that cannot name a new node."""
    if not path:
        raise OSError(errno.ENOENT, "empty path")
    if path.endswith("/"):
        raise OSError(errno.ENOENT, "trailing slash")
    parent, _, name = path.rpartition("/")
    if name in (".", ".."):
        raise OSError(errno.EEXIST, "exists")
    if not parent:
        parent = "/" if path.startswith("/") else "."
    return parent, name


def container_relative(root_link: str, base_link: str) -> str | None:
    """Where `base_link` lies below `root_link` (both readlinks of /proc/<pid>/{root,cwd,fd/N}), as
    a path relative to that root; None if it is not below it."""
    if root_link.endswith(" (deleted)") or base_link.endswith(" (deleted)"):
        return None
    if root_link == "/":
        if not base_link.startswith("/"):
            return None
        return base_link.lstrip("/") or "."
    if base_link == root_link:
        return "."
    prefix = root_link.rstrip("/") + "/"
    return base_link[len(prefix):] if base_link.startswith(prefix) else None


def may_create_in(dir_mode: int, dir_uid: int, dir_gid: int, caller: ProcStatus, privileged: bool) -> bool:
    """Write and search permission on the parent directory (mode bits only, no ACLs)."""
    if privileged:
        return True
    if caller.fsuid == dir_uid:
        bits = dir_mode >> 6
    elif caller.fsgid == dir_gid or dir_gid in caller.groups:
        bits = dir_mode >> 3
    else:
        bits = dir_mode
    return bits & 0o3 == 0o3


# ---------------------------------------------------------------------------- the caller


class _Caller:
    """The thread blocked in a notified syscall, pinned by a /proc/<tid> directory fd that was
    checked against the notification id right after opening."""

    def __init__(self, listener_fd: int, notif: Notification) -> None:
        self.listener_fd = listener_fd
        self.notif = notif
        try:
            if notif.pid <= 0:  # not visible from cmld's PID namespace
                raise OSError(errno.ESRCH, "caller not visible")
            self.proc_fd = os.open(f"/proc/{notif.pid}", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            # gone: no answer due; still there: answer (EPERM), or it would block forever
            notify.check_valid(listener_fd, notif.id)
            raise
        self._fds: list[int] = [self.proc_fd]
        try:
            notify.check_valid(listener_fd, notif.id)  # the PID was not reused before the open
        except BaseException:
            self.close()
            raise
        self._status: ProcStatus | None = None
        self._mem_fd = -1
        self._mem_writable = False

    def close(self) -> None:
        for fd in self._fds:
            with suppress(OSError):
                os.close(fd)
        self._fds.clear()

    def track(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    def open(self, name: str, flags: int) -> int:
        return self.track(os.open(name, flags | os.O_CLOEXEC, dir_fd=self.proc_fd))

    def status(self) -> ProcStatus:
        if self._status is None:
            fd = self.open("status", os.O_RDONLY)
            text = os.read(fd, 1 << 16).decode(errors="replace")
            self._status = parse_status(text)
        return self._status

    def _mem(self, writable: bool) -> int:
        if self._mem_fd < 0 or (writable and not self._mem_writable):
            self._mem_fd = self.open("mem", os.O_RDWR if writable else os.O_RDONLY)
            self._mem_writable = writable
            notify.check_valid(self.listener_fd, self.notif.id)
        return self._mem_fd

    def read_string(self, addr: int) -> str:
        raw = notify.read_caller_string(self.listener_fd, self.notif.id, self._mem(False), addr)
        return os.fsdecode(raw)

    def read(self, addr: int, size: int) -> bytes:
        return notify.read_caller_mem(self.listener_fd, self.notif.id, self._mem(False), addr, size)

    def write(self, addr: int, data: bytes) -> None:
        fd = self._mem(True)
        notify.check_valid(self.listener_fd, self.notif.id)
        notify.write_mem(fd, addr, data)


@contextmanager
def _caller(listener_fd: int, notif: Notification) -> Iterator[_Caller]:
    caller = _Caller(listener_fd, notif)
    try:
        yield caller
    finally:
        caller.close()


# ---------------------------------------------------------------------------- the supervisor


class SeccompSupervisor:
    """One container's listener fd, served from cmld's event loop."""

    def __init__(self, notify_fd: int, *, container_name: str, init_pid: int,
                 is_device_allowed: Callable[[str, int, int], bool], allow_system_time: bool,
                 uid_offset: int | None) -> None:
        self._fd = notify_fd
        self._name = container_name
        self._init_pid = init_pid
        self._is_device_allowed = is_device_allowed
        self._allow_system_time = allow_system_time
        self._uid_offset = uid_offset
        self._loop: asyncio.AbstractEventLoop | None = None
        self.notifications = 0  # received so far (tests, diagnostics)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        linux_seccomp.notif_sizes()  # fail here rather than on the first notification
        self._loop = loop
        loop.add_reader(self._fd, self._on_readable)

    def close(self) -> None:
        self._stop_reading()
        if self._fd >= 0:
            with suppress(OSError):
                os.close(self._fd)
            self._fd = -1

    def _stop_reading(self) -> None:
        if self._loop is not None and self._fd >= 0:
            with suppress(Exception):
                self._loop.remove_reader(self._fd)
        self._loop = None

    # -- event loop callback

    def _on_readable(self) -> None:
        try:
            self._serve_one()
        except Exception:
            log.exception("container %s: seccomp supervisor", self._name)

    def _serve_one(self) -> None:
        if self._fd < 0:
            return
        # RECV blocks when nothing is pending: receive only what poll reports as pending. Once every
        # process of the container is gone the fd reports only POLLHUP; stop watching it then.
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        events = poller.poll(0)
        revents = events[0][1] if events else 0
        if not revents & select.POLLIN:
            if revents & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                log.debug("container %s (init %d): seccomp listener hung up, no process left", self._name,
                          self._init_pid)
                self._stop_reading()
            return
        try:
            notif = notify.recv(self._fd)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.EINTR):  # the caller died before we got to it
                return
            log.error("container %s: seccomp receive: %s", self._name, e)
            return
        self.notifications += 1
        try:
            resp = self.handle(notif)
        except CallerGone:
            log.debug("container %s: caller %d of syscall %d went away", self._name, notif.pid, notif.nr)
            return
        except Exception:
            log.exception("container %s: handling syscall %d of pid %d", self._name, notif.nr, notif.pid)
            resp = notify.error(errno.EPERM)
        try:
            notify.send(self._fd, notif.id, resp)
        except OSError as e:
            if e.errno == errno.ENOENT:
                log.debug("container %s: caller %d gone before the response", self._name, notif.pid)
            else:
                log.error("container %s: seccomp response: %s", self._name, e)

    # -- dispatch

    def handle(self, notif: Notification) -> Response:
        """The response to one notification; raises CallerGone if none is due."""
        if notif.arch != notify.AUDIT_ARCH_X86_64:  # the filter kills other ABIs; never emulate them
            return notify.error(errno.EPERM)
        if notif.nr in (NR_MKNOD, NR_MKNODAT):
            return self._mknod(notif)
        if notif.nr in (NR_CLOCK_SETTIME, NR_CLOCK_ADJTIME, NR_ADJTIMEX, NR_SETTIMEOFDAY):
            return self._set_time(notif)
        return notify.continue_()

    # -- mknod

    def _mknod(self, notif: Notification) -> Response:
        at = notif.nr == NR_MKNODAT
        off = 1 if at else 0
        dirfd = int32(notif.args[0]) if at else AT_FDCWD
        mode = notif.args[off + 1] & 0xFFFF  # umode_t
        major, minor = decode_dev(notif.args[off + 2])
        kind = device_type(mode)
        if kind is None:  # the filter only notifies devices
            return notify.continue_()
        call = SYSCALL_NAMES[notif.nr]
        with _caller(self._fd, notif) as caller:
            try:
                path = caller.read_string(notif.args[off])
            except OSError as e:
                log.info("container %s: %s of %s %d:%d by pid %d: bad path: %s", self._name, call, kind,
                         major, minor, notif.pid, e.strerror)
                return notify.error(e.errno or errno.EFAULT)
            status = caller.status()
            if not status.has_cap(CAP_MKNOD):
                reason = "caller lacks CAP_MKNOD"
            elif not self._is_device_allowed(kind, major, minor):
                reason = "device not allowed"
            else:
                reason = ""
            if reason:
                log.info("container %s: %s %s %s %d:%d denied (%s)", self._name, call, path, kind, major,
                         minor, reason)
                return notify.error(errno.EPERM)
            try:
                self._create_node(caller, dirfd, path, mode, os.makedev(major, minor), status)
            except CallerGone:
                raise
            except OSError as e:
                err = e.errno or errno.EPERM
                log.info("container %s: %s %s %s %d:%d allowed, failed: %s", self._name, call, path, kind,
                         major, minor, os.strerror(err))
                return notify.error(err)
            log.info("container %s: %s %s %s %d:%d allowed, created", self._name, call, path, kind, major,
                     minor)
            return notify.success(0)

    def _open_parent(self, caller: _Caller, dirfd: int, path: str) -> tuple[int, str]:
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
                  caller.notif.pid, path)
        return caller.track(open_in_root(base_fd, parent, dir_flags)), name

    @staticmethod
    def _locate_in_root(caller: _Caller, root_fd: int, base_fd: int, base: str) -> str | None:
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

    def _create_node(self, caller: _Caller, dirfd: int, path: str, mode: int, dev: int, status: ProcStatus) -> None:
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

    # -- time

    def _set_time(self, notif: Notification) -> Response:
        call = SYSCALL_NAMES[notif.nr]
        if not self._allow_system_time:
            log.info("container %s: %s by pid %d denied (system time not allowed)", self._name, call, notif.pid)
            return notify.error(errno.EPERM)
        with _caller(self._fd, notif) as caller:
            if not caller.status().has_cap(CAP_SYS_TIME):
                log.info("container %s: %s by pid %d denied (caller lacks CAP_SYS_TIME)", self._name, call,
                         notif.pid)
                return notify.error(errno.EPERM)
            try:
                resp = self._do_set_time(caller, notif)
            except CallerGone:
                raise
            except OSError as e:
                resp = notify.error(e.errno or errno.EPERM)
            log.info("container %s: %s by pid %d: %s", self._name, call, notif.pid,
                     "done" if not resp.error else os.strerror(-resp.error))
            return resp

    @staticmethod
    def _do_set_time(caller: _Caller, notif: Notification) -> Response:
        args = notif.args
        if notif.nr == NR_CLOCK_SETTIME:
            if int32(args[0]) != CLOCK_REALTIME:
                return notify.error(errno.EINVAL)
            sec, nsec = struct.unpack("=qq", caller.read(args[1], 16))
            if sec < 0 or not 0 <= nsec < 1_000_000_000:
                return notify.error(errno.EINVAL)
            time.clock_settime_ns(time.CLOCK_REALTIME, sec * 1_000_000_000 + nsec)
            return notify.success(0)
        if notif.nr == NR_SETTIMEOFDAY:
            if args[1]:  # the kernel's timezone is the host's, not the container's
                return notify.error(errno.EPERM)
            if not args[0]:
                return notify.success(0)
            sec, usec = struct.unpack("=qq", caller.read(args[0], 16))
            if sec < 0 or not 0 <= usec < 1_000_000:
                return notify.error(errno.EINVAL)
            time.clock_settime_ns(time.CLOCK_REALTIME, sec * 1_000_000_000 + usec * 1000)
            return notify.success(0)
        # adjtimex(buf) / clock_adjtime(CLOCK_REALTIME, buf): run it here, hand back the struct
        if notif.nr == NR_CLOCK_ADJTIME:
            if int32(args[0]) != CLOCK_REALTIME:
                return notify.error(errno.EPERM)
            addr = args[1]
        else:
            addr = args[0]
        ret, raw = clock.clock_adjtime_realtime(caller.read(addr, clock.TIMEX_SIZE))
        if ret < 0:
            return notify.error(-ret)
        caller.write(addr, raw)
        return notify.success(ret)
