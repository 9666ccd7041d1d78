"""Puts cmld's in-container service at /sbin/cservice in the container, without writing into the
GuestOS image (the original copies it into the root, which only works on a writable root).

The binary is copied into a small private tmpfs made here, with host privileges, and made
read-only: its superblock belongs to the host's user namespace, so no container can remount it
writable, and it is not a host file system (a bind of a host file would hand the container that
file system's superblock, which `open_by_handle_at` abuses). From there:

- `/sbin/cservice` exists in the image: a read-only bind over it;
- the root is writable (SHARED_RW, OVERLAY_RW, tmpfs): an empty mount point is created on the
  container's own writable layer (and `/sbin` too if missing), and the binary bound onto it;
- the root is read-only: `/sbin` becomes a read-only overlay whose top layer is the tmpfs, so the
  image's `/sbin` shows through unchanged.

The file is root:root 0755 inside the container (owned by the container root's host ID where
there is a user namespace). Failing to place it is not an error by itself: only a start whose
init needs it fails (see child.py), with the reason given here.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from typing import Protocol

from cmld import linux
from cmld.errors import CmldError
from cmld.launcher.spec import LaunchSpec


class EarlyMounts(Protocol):
    """The side of the launcher's early mounts that placing the service uses (`early.EarlyMounts`)."""

    spec: LaunchSpec
    root_fd: int
    base_flags: int

    def staging(self, what: str) -> str: ...

TARGET = "/sbin/cservice"
MAX_SIZE = 32 << 20  # a static helper is about 1 MiB; anything near this is not one
TMPFS_SLACK = 64 << 10


class PlacementError(CmldError):
    """Why /sbin/cservice could not be placed (shown to the user if init needs it)."""


def _copy_into_tmpfs(early: EarlyMounts, source: str, uid: int) -> str:
    """A read-only tmpfs holding only `cservice`; returns its mount point (a staging dir)."""
    try:
        src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise PlacementError(f"cservice binary {source}: {e.strerror}") from None
    try:
        st = os.fstat(src)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_SIZE:
            raise PlacementError(f"cservice binary {source} is not a regular file of at most {MAX_SIZE >> 20} MiB")
        store = early.staging("cservice")
        size_kb = (st.st_size + TMPFS_SLACK) // 1024 + 1
        linux.mount("tmpfs", store, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV,
                    f"size={size_kb}k,nr_inodes=8,mode=0755,uid={uid},gid={uid}")
        dst = os.open(os.path.join(store, "cservice"), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o700)
        try:
            left = st.st_size
            while left > 0:
                n = os.sendfile(dst, src, None, left)
                if n == 0:
                    raise PlacementError(f"cservice binary {source} shrank while being copied")
                left -= n
            os.fchown(dst, uid, uid)
            os.fchmod(dst, 0o755)
        finally:
            os.close(dst)
        # Read-only at the superblock: nothing, not even a remount in the container, can write it.
        linux.mount(None, store, None, linux.MS_REMOUNT | linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NODEV)
        return store
    finally:
        os.close(src)


def _bind_file(store: str, target_fd: int) -> None:
    linux.bind_tree(os.path.join(store, "cservice"), target_fd, readonly=True, recursive=False,
                    extra_attrs=linux.MOUNT_ATTR_NOSUID | linux.MOUNT_ATTR_NODEV)


def _as_container_root(early: EarlyMounts) -> contextlib.AbstractContextManager[None]:
    """Files made on the container's layer belong to its root: through an idmapped mount or an
    overlay mounted with the root's IDs, host root itself would be unmapped (EOVERFLOW)."""
    uid = early.spec.uid_start
    return linux.fs_identity(uid, uid) if uid else contextlib.nullcontext()


def _open_or_make_sbin(early: EarlyMounts) -> int | None:
    """/sbin of the container (symlinks followed inside the root), made if missing and the root
    is writable; None where the root is read-only and has none."""
    try:
        return linux.open_in_root(early.root_fd, "/sbin", os.O_PATH | os.O_DIRECTORY)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise PlacementError(f"/sbin in the container: {e.strerror}") from None
    try:
        with _as_container_root(early):
            os.mkdir("sbin", 0o755, dir_fd=early.root_fd)
    except OSError as e:
        if e.errno in (errno.EROFS, errno.EPERM, errno.EACCES):
            return None
        raise PlacementError(f"cannot make /sbin in the container: {e.strerror}") from None
    return linux.open_in_root(early.root_fd, "/sbin", os.O_PATH | os.O_DIRECTORY)


def _make_mount_point(early: EarlyMounts, sbin: int) -> int | None:
    """An empty file /sbin/cservice on a writable layer; None where /sbin is read-only."""
    try:
        with _as_container_root(early):
            fd = os.open("cservice", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o755,
                         dir_fd=sbin)
        os.close(fd)
    except OSError as e:
        if e.errno in (errno.EROFS, errno.EPERM, errno.EACCES):
            return None
        raise PlacementError(f"cannot make the mount point {TARGET}: {e.strerror}") from None
    return os.open("cservice", os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=sbin)


def _overlay_sbin(early: EarlyMounts, store: str, sbin: int) -> None:
    """/sbin := read-only overlay of the tmpfs over the image's /sbin (unchanged underneath)."""
    base = early.staging("sbin")
    base_fd = os.open(base, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        linux.bind_tree(sbin, base_fd)  # a clone of /sbin as the container sees it (with its idmapping)
    finally:
        os.close(base_fd)
    merged = early.staging("sbin-overlay")
    linux.mount("overlay", merged, "overlay", early.base_flags | linux.MS_RDONLY, f"lowerdir={store}:{base}")
    linux.bind_tree(merged, sbin, readonly=True, recursive=False)


def place(early: EarlyMounts) -> None:
    """Raises PlacementError with the reason when /sbin/cservice is not cmld's afterwards."""
    spec = early.spec
    if not spec.cservice:
        raise PlacementError(spec.cservice_note or "cmld has no cservice binary")
    try:
        store = _copy_into_tmpfs(early, spec.cservice, spec.uid_start or 0)
        try:
            target = linux.open_in_root(early.root_fd, TARGET, os.O_PATH | os.O_NOFOLLOW)
        except FileNotFoundError:
            target = -1
        except OSError as e:
            raise PlacementError(f"{TARGET} in the container: {e.strerror}") from None
        if target >= 0:
            try:
                mode = os.fstat(target).st_mode
                if stat.S_ISLNK(mode):
                    raise PlacementError(f"{TARGET} is a symbolic link in the image (left as it is)")
                if not stat.S_ISREG(mode):
                    raise PlacementError(f"{TARGET} in the image is not a regular file")
                _bind_file(store, target)
            finally:
                os.close(target)
            return
        sbin = _open_or_make_sbin(early)
        if sbin is None:
            raise PlacementError(f"the container's root is read-only and has no /sbin for {TARGET}")
        try:
            point = _make_mount_point(early, sbin)
            if point is None:
                _overlay_sbin(early, store, sbin)
                return
            try:
                _bind_file(store, point)
            finally:
                os.close(point)
        finally:
            os.close(sbin)
    except OSError as e:
        raise PlacementError(f"placing {TARGET}: {e.strerror or e}") from None
