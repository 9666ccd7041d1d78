"""What cmld reads about a notified caller and the pure rules it applies: /proc/<pid>/status,
device numbers, path splitting, and the permission check for creating a node in a directory."""

from __future__ import annotations

import errno
import stat
from dataclasses import dataclass

# x86-64 syscall numbers
NR_SYSINFO = 99
NR_INIT_MODULE = 175
NR_FINIT_MODULE = 313
NR_ADJTIMEX = 159
NR_MKNOD = 133
NR_SETTIMEOFDAY = 164
NR_CLOCK_SETTIME = 227
NR_MKNODAT = 259
NR_CLOCK_ADJTIME = 305
NR_REBOOT = 169
NR_INOTIFY_INIT = 253
NR_INOTIFY_INIT1 = 294
SYSCALL_NAMES = {NR_SYSINFO: "sysinfo", NR_INIT_MODULE: "init_module", NR_FINIT_MODULE: "finit_module",
                 NR_MKNOD: "mknod", NR_MKNODAT: "mknodat", NR_CLOCK_SETTIME: "clock_settime",
                 NR_CLOCK_ADJTIME: "clock_adjtime", NR_ADJTIMEX: "adjtimex", NR_SETTIMEOFDAY: "settimeofday",
                 NR_REBOOT: "reboot", NR_INOTIFY_INIT: "inotify_init", NR_INOTIFY_INIT1: "inotify_init1"}

CAP_DAC_OVERRIDE = 1
CAP_KILL = 5
CAP_SYS_TIME = 25
CAP_MKNOD = 27
AT_FDCWD = -100
CLOCK_REALTIME = 0
USERNS_SIZE = 65536  # IDs mapped per user-namespaced container (c_user)


def int32(value: int) -> int:
    """A syscall argument as the C `int` the kernel reads from its low 32 bits."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


@dataclass(frozen=True)
class ProcStatus:
    """What /proc/<pid>/status says about a thread. IDs are as seen from the reader's user namespace
    (cmld's: host IDs), capabilities as held in the thread's own user namespace."""

    cap_eff: int
    umask: int
    fsuid: int
    fsgid: int
    groups: tuple[int, ...]
    euid: int = -1

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
                          groups=tuple(int(g) for g in fields.get("Groups", "").split()), euid=int(uids[1]))
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
