"""The Linux calls Python 3.11 lacks, in one place (unshare, setns, mount API, pivot_root...).

Every wrapper raises OSError with errno and the call's name, so callers report what failed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import struct
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

_libc = ctypes.CDLL("libc.so.6", use_errno=True)  # glibc; find_library would spawn ldconfig
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long

# Namespace flags (linux/sched.h)
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# mount(2) flags
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_STRICTATIME = 1 << 24
MNT_DETACH = 0x2

# new mount API
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_IDMAP = 0x100000

# openat2 resolve flags
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10

# prctl
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

# x86-64 syscall numbers for calls glibc 2.36 has no wrapper for
SYS_PIVOT_ROOT = 155
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_OPENAT2 = 437
SYS_MOUNT_SETATTR = 442
SYS_CLOSE_RANGE = 436
SYS_PIDFD_SEND_SIGNAL = 424

CLOSE_RANGE_CLOEXEC = 1 << 2


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def _b(path: str | bytes | None) -> bytes | None:
    if path is None:
        return None
    return path if isinstance(path, bytes) else os.fsencode(path)


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    ret = _libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data))
    _check(ret, f"mount {fstype or ''} {source or ''} on {target}".replace("  ", " "))


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), ctypes.c_int(flags)), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_syscall(SYS_PIVOT_ROOT, _b(new_root), _b(put_old)), "pivot_root")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, ctypes.c_size_t(len(raw))), "sethostname")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(_libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3),
                              ctypes.c_ulong(arg4), ctypes.c_ulong(arg5)), "prctl")


def close_range(first: int, last: int = 0xFFFFFFFF, flags: int = 0) -> None:
    _check(_syscall(SYS_CLOSE_RANGE, ctypes.c_uint(first), ctypes.c_uint(last), ctypes.c_uint(flags)),
           "close_range")


def pidfd_send_signal(pidfd: int, sig: int) -> None:
    _check(_syscall(SYS_PIDFD_SEND_SIGNAL, ctypes.c_int(pidfd), ctypes.c_int(sig), None, ctypes.c_uint(0)),
           "pidfd_send_signal")


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def open_in_root(root_fd: int, path: str, flags: int = os.O_PATH, mode: int = 0) -> int:
    """Open `path` as if `root_fd` were `/`: symlinks and `..` in a container image can never
    lead outside it (openat2 RESOLVE_IN_ROOT)."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    rel = path.lstrip("/") or "."
    return _check(_syscall(SYS_OPENAT2, ctypes.c_int(root_fd), _b(rel), ctypes.byref(how),
                           ctypes.c_size_t(ctypes.sizeof(how))), f"open {path} in container root")


def open_tree(dirfd: int, path: str, flags: int) -> int:
    return _check(_syscall(SYS_OPEN_TREE, ctypes.c_int(dirfd), _b(path), ctypes.c_uint(flags)), "open_tree")


def move_mount(from_fd: int, from_path: str, to_fd: int, to_path: str, flags: int) -> None:
    _check(_syscall(SYS_MOVE_MOUNT, ctypes.c_int(from_fd), _b(from_path), ctypes.c_int(to_fd), _b(to_path),
                    ctypes.c_uint(flags)), "move_mount")


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def mount_setattr(dirfd: int, path: str, flags: int, attr_set: int, userns_fd: int = 0) -> None:
    attr = _MountAttr(attr_set, 0, 0, userns_fd)
    _check(_syscall(SYS_MOUNT_SETATTR, ctypes.c_int(dirfd), _b(path), ctypes.c_uint(flags), ctypes.byref(attr),
                    ctypes.c_size_t(ctypes.sizeof(attr))), "mount_setattr")


MOVE_MOUNT_T_EMPTY_PATH = 0x40


def idmapped_bind(source_fd: int, target_fd: int, userns_fd: int, readonly: bool = False) -> None:
    """Bind the tree at `source_fd` onto the directory `target_fd` with IDs shifted through
    `userns_fd` (kernel >= 5.12 and a filesystem that supports idmapped mounts)."""
    tree = open_tree(source_fd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | AT_RECURSIVE)
    try:
        mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE,
                      MOUNT_ATTR_IDMAP | (MOUNT_ATTR_RDONLY if readonly else 0), userns_fd)
        move_mount(tree, "", target_fd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH)
    finally:
        os.close(tree)


def bind_tree(source: str | int, target_fd: int, *, readonly: bool = False, recursive: bool = True,
              extra_attrs: int = 0) -> None:
    """Bind `source` (a path, or an fd with the tree to clone) onto the directory or file
    `target_fd`, read-only if asked, in one step: no window in which a writable bind is
    visible, and no path to re-resolve after mounting (which would hit the old mount)."""
    flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (AT_RECURSIVE if recursive else 0)
    tree = open_tree(source, "", flags | AT_EMPTY_PATH) if isinstance(source, int) else open_tree(-100, source, flags)
    try:
        attrs = (MOUNT_ATTR_RDONLY if readonly else 0) | extra_attrs
        if attrs:
            mount_setattr(tree, "", AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0), attrs)
        move_mount(tree, "", target_fd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH)
    finally:
        os.close(tree)


MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8


# ---------------------------------------------------------------------------- capabilities

CAP_NAMES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
    "CHECKPOINT_RESTORE",
)
CAP = {name: i for i, name in enumerate(CAP_NAMES)}


def cap_last() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return len(CAP_NAMES) - 1


def drop_bounding(caps: list[int]) -> None:
    for cap in caps:
        if cap <= cap_last():
            prctl(PR_CAPBSET_DROP, cap)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_from_all_sets(caps: list[int]) -> None:
    """Remove caps from effective, permitted and inheritable too, so a process that already holds
    them (root before exec) cannot keep them through exec of a setuid-less init."""
    hdr = _CapHeader(0x20080522, 0)
    data = (_CapData * 2)()
    _check(_libc.capget(ctypes.byref(hdr), data), "capget")
    for cap in caps:
        idx, bit = divmod(cap, 32)
        mask = ~(1 << bit) & 0xFFFFFFFF
        data[idx].effective &= mask
        data[idx].permitted &= mask
        data[idx].inheritable &= mask
    _check(_libc.capset(ctypes.byref(hdr), data), "capset")


def raise_effective() -> None:
    """Effective set := permitted set (a change of fsuid away from 0 clears the file caps from
    the effective set; the permitted set keeps them)."""
    hdr = _CapHeader(0x20080522, 0)
    data = (_CapData * 2)()
    _check(_libc.capget(ctypes.byref(hdr), data), "capget")
    for d in data:
        d.effective = d.permitted
    _check(_libc.capset(ctypes.byref(hdr), data), "capset")


@contextlib.contextmanager
def fs_identity(uid: int, gid: int) -> Iterator[None]:
    """Run the body with filesystem IDs uid/gid but every capability still effective, then go back
    to 0/0. overlayfs records its mounter's credentials and does every upper-layer operation
    with them: for layers on idmapped mounts those IDs must be mapped by the mounts' user
    namespace, or creating the work directory (and every later copy-up) fails with EOVERFLOW."""
    _libc.setfsgid(gid)
    _libc.setfsuid(uid)
    try:
        raise_effective()
        yield
    finally:
        _libc.setfsuid(0)
        _libc.setfsgid(0)
        raise_effective()


# ---------------------------------------------------------------------------- loop devices

LOOP_CTL_GET_FREE = 0x4C82
LOOP_CONFIGURE = 0x4C0A
LO_FLAGS_READ_ONLY = 1
LO_FLAGS_AUTOCLEAR = 4
LO_FLAGS_DIRECT_IO = 16


def loop_attach(image_fd: int, *, readonly: bool, autoclear: bool = True) -> tuple[str, int]:
    """Attach an open image to a free loop device (LOOP_CONFIGURE: one ioctl, no window in which
    the device is bound but unconfigured). With autoclear the kernel detaches it when the last
    mount and fd go away, so a crashed launcher or a dead container leaves no loop device behind."""
    import fcntl

    flags = (LO_FLAGS_READ_ONLY if readonly else 0) | (LO_FLAGS_AUTOCLEAR if autoclear else 0)
    # struct loop_config { __u32 fd; __u32 block_size; struct loop_info64 info; __u64 __reserved[8]; }
    # loop_info64: 8+8+8+8+8+4+4+4+4 + 64 name + 64 crypt name + 32 key + 2*4 = 232 bytes; lo_flags at +52
    info = bytearray(232)
    struct.pack_into("=I", info, 52, flags)
    cfg = struct.pack("=II", image_fd, 0) + bytes(info) + bytes(64)
    ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
    try:
        for _ in range(16):
            num = fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)
            path = f"/dev/loop{num}"
            try:
                dev = os.open(path, (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CLOEXEC)
            except FileNotFoundError:
                os.mknod(path, 0o660 | 0o060000, os.makedev(7, num))
                dev = os.open(path, (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CLOEXEC)
            try:
                fcntl.ioctl(dev, LOOP_CONFIGURE, cfg)
            except OSError as e:
                os.close(dev)
                if e.errno == 16:  # EBUSY: another process took it between GET_FREE and CONFIGURE
                    continue
                raise OSError(e.errno, f"loop configure {path}: {e.strerror}") from None
            # With autoclear, closing the last fd detaches the device: the caller keeps `dev` open
            # until the mount holds the device, then closes it.
            return path, dev
    finally:
        os.close(ctl)
    raise OSError(16, "no free loop device")
