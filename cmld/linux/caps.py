"""Capabilities: names and numbers, the kernel's last capability, the bounding, ambient,
effective, permitted and inheritable sets, and running with other file-system IDs while
keeping them."""

from __future__ import annotations

import contextlib
import ctypes
import errno
from functools import cache
from typing import TYPE_CHECKING

from cmld.linux.libc import LIBC, check
from cmld.linux.process import PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, PR_CAPBSET_DROP, PR_CAPBSET_READ, prctl

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

CAP_NAMES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
    "CHECKPOINT_RESTORE",
)
CAP = {name: i for i, name in enumerate(CAP_NAMES)}
_MAX_PROBE = 63  # the kernel's capability sets are 64 bits wide


@cache
def kernel_cap_last() -> int:
    """The highest capability number the running kernel knows, asked of the kernel itself
    (PR_CAPBSET_READ answers EINVAL past it). Never read from /proc/sys/kernel/cap_last_cap: a
    process inside a container sees the container's /proc, where that file can be a bind mount
    of the container's choosing."""
    last = -1
    for cap in range(_MAX_PROBE + 1):
        try:
            prctl(PR_CAPBSET_READ, cap)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            break
        last = cap
    if last < 0:
        raise OSError(errno.EINVAL, "PR_CAPBSET_READ: the kernel knows no capability")
    return last


def cap_name(cap: int) -> str:
    """CAP_<NAME>, or CAP_<number> for one newer than this table."""
    return f"CAP_{CAP_NAMES[cap]}" if cap < len(CAP_NAMES) else f"CAP_{cap}"


def drop_bounding(caps: Iterable[int]) -> None:
    """Drop each capability from the bounding set. The list is cmld's, computed from the host
    kernel's last capability; nothing here consults a file the container could have forged, and
    a number the kernel does not know is an error, not a silent skip."""
    for cap in caps:
        try:
            prctl(PR_CAPBSET_DROP, cap)
        except OSError as e:
            raise OSError(e.errno, f"dropping {cap_name(cap)} from the bounding set: {e.strerror}") from None


def clear_ambient() -> None:
    """An empty ambient set: nothing is handed to a non-root program through exec."""
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _get() -> tuple[_CapHeader, ctypes.Array[_CapData]]:
    hdr = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    check(LIBC.capget(ctypes.byref(hdr), data), "capget")
    return hdr, data


def drop_from_all_sets(caps: Iterable[int]) -> None:
    """Remove caps from effective, permitted and inheritable too, so a process that already holds
    them (root before exec) cannot keep them through exec of a setuid-less init."""
    hdr, data = _get()
    for cap in caps:
        idx, bit = divmod(cap, 32)
        if idx > 1:
            continue
        mask = ~(1 << bit) & 0xFFFFFFFF
        data[idx].effective &= mask
        data[idx].permitted &= mask
        data[idx].inheritable &= mask
    check(LIBC.capset(ctypes.byref(hdr), data), "capset")


def has_effective(cap: int) -> bool:
    """`cap` in this thread's effective set (of its own user namespace)."""
    _, data = _get()
    return bool(data[cap // 32].effective >> (cap % 32) & 1)


def raise_effective() -> None:
    """Effective set := permitted set (a change of fsuid away from 0 clears the file caps from
    the effective set; the permitted set keeps them)."""
    hdr, data = _get()
    for d in data:
        d.effective = d.permitted
    check(LIBC.capset(ctypes.byref(hdr), data), "capset")


@contextlib.contextmanager
def fs_identity(uid: int, gid: int) -> Iterator[None]:
    """Run the body with filesystem IDs uid/gid but every capability still effective, then go back
    to 0/0. overlayfs records its mounter's credentials and does every upper-layer operation
    with them: for layers on idmapped mounts those IDs must be mapped by the mounts' user
    namespace, or creating the work directory (and every later copy-up) fails with EOVERFLOW."""
    LIBC.setfsgid(gid)
    LIBC.setfsuid(uid)
    try:
        raise_effective()
        yield
    finally:
        LIBC.setfsuid(0)
        LIBC.setfsgid(0)
        raise_effective()
