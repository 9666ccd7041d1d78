"""Mounts: the classic mount(2) and the new mount API (open_tree, move_mount, mount_setattr),
idmapped binds, pivot_root, and openat2 RESOLVE_IN_ROOT for paths inside a container."""

from __future__ import annotations

import ctypes
import os

from cmld.linux.libc import LIBC, check, path_arg, syscall

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
MOVE_MOUNT_T_EMPTY_PATH = 0x40
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR_IDMAP = 0x100000

# openat2 resolve flags
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10

# x86-64 syscall numbers for calls glibc 2.36 has no wrapper for
SYS_PIVOT_ROOT = 155
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_OPENAT2 = 437
SYS_MOUNT_SETATTR = 442


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    ret = LIBC.mount(path_arg(source), path_arg(target), path_arg(fstype), ctypes.c_ulong(flags), path_arg(data))
    check(ret, f"mount {fstype or ''} {source or ''} on {target}".replace("  ", " "))


def umount2(target: str, flags: int = 0) -> None:
    check(LIBC.umount2(path_arg(target), ctypes.c_int(flags)), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    check(syscall(SYS_PIVOT_ROOT, path_arg(new_root), path_arg(put_old)), "pivot_root")


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def open_in_root(root_fd: int, path: str, flags: int = os.O_PATH, mode: int = 0) -> int:
    """Open `path` as if `root_fd` were `/`: symlinks and `..` in a container image can never
    lead outside it (openat2 RESOLVE_IN_ROOT)."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    rel = path.lstrip("/") or "."
    return check(syscall(SYS_OPENAT2, ctypes.c_int(root_fd), path_arg(rel), ctypes.byref(how),
                           ctypes.c_size_t(ctypes.sizeof(how))), f"open {path} in container root")


def open_tree(dirfd: int, path: str, flags: int) -> int:
    return check(syscall(SYS_OPEN_TREE, ctypes.c_int(dirfd), path_arg(path), ctypes.c_uint(flags)), "open_tree")


def move_mount(from_fd: int, from_path: str, to_fd: int, to_path: str, flags: int) -> None:
    check(syscall(SYS_MOVE_MOUNT, ctypes.c_int(from_fd), path_arg(from_path), ctypes.c_int(to_fd), path_arg(to_path),
                    ctypes.c_uint(flags)), "move_mount")


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def mount_setattr(dirfd: int, path: str, flags: int, attr_set: int, userns_fd: int = 0) -> None:
    attr = _MountAttr(attr_set, 0, 0, userns_fd)
    check(syscall(SYS_MOUNT_SETATTR, ctypes.c_int(dirfd), path_arg(path), ctypes.c_uint(flags), ctypes.byref(attr),
                    ctypes.c_size_t(ctypes.sizeof(attr))), "mount_setattr")




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
