"""Mounts made with host privileges before the container's namespaces exist (the original's
`start_child_early`): images on loop devices, overlays, the /dev and /run tmpfs.

All of it happens in the launcher's private mount namespace, so the host never sees these
mounts, and they vanish with the last process of the container. Loop devices are autoclear.
Targets are resolved inside the container root with RESOLVE_IN_ROOT: a symlink in an image
cannot redirect a mount onto the host.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

from cmld import linux
from cmld.errors import CmldError
from cmld.launcher import cservice
from cmld.launcher.spec import DevNode, LaunchSpec, MountOp


def console_tty(names: list[str]) -> str | None:
    """What /dev/console links to: as the original (c_vol_start_pre_exec, "for systemd
    containers"), the first node of the container's /dev whose name has at least 4 characters
    and contains "tty" (the original takes readdir order, which is arbitrary; sorted here)."""
    return next((n for n in sorted(names) if len(n) >= 4 and "tty" in n), None)


MEMINFO_STAGING = ".cml-meminfo"  # in the container's /run until bound over /proc/meminfo


class MountError(CmldError):
    """A mount the container needs could not be made; the message names it. `corrupted`: the
    volume gave EIO (a dm-integrity or dm-verity error: the container becomes ZOMBIE)."""

    def __init__(self, message: str, corrupted: bool = False) -> None:
        super().__init__(message)
        self.corrupted = corrupted


def fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


class EarlyMounts:
    def __init__(self, spec: LaunchSpec, userns_fd: int | None) -> None:
        self.spec = spec
        self.userns_fd = userns_fd
        self.root_fd = -1
        self._n = 0
        self.base_flags = linux.MS_NOATIME | (0 if spec.setup_mode else linux.MS_NODEV)
        self.idmap_supported = True
        self.cservice_problem = ""  # why /sbin/cservice is not cmld's (empty: it is)
        self.meminfo_fd = -1  # the /proc/meminfo view, opened writable for cmld before it is bound read-only

    # ------------------------------------------------------------------ helpers

    def staging(self, what: str) -> str:
        self._n += 1
        path = os.path.join(self.spec.work_dir, f"{self._n}-{what}")
        os.mkdir(path, 0o700)
        return path

    def open_target(self, target: str, *, directory: bool = True) -> int:
        flags = os.O_PATH | (os.O_DIRECTORY if directory else 0)
        try:
            return linux.open_in_root(self.root_fd, target, flags)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                raise MountError(f"mount point {target} does not exist in the container image") from None
            raise MountError(f"mount point {target}: {e.strerror}") from None

    def _mount_image(self, image: str, where: str, fstype: str, readonly: bool, data: str) -> None:
        try:
            img_fd = os.open(image, (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CLOEXEC)
        except OSError as e:
            raise MountError(f"image {image}: {e.strerror}") from None
        try:
            if stat.S_ISBLK(os.fstat(img_fd).st_mode):  # a dm device cmld made (verity, integrity/crypt)
                self._mount_dev(image, where, fstype, readonly, data, image)
                return
            dev, dev_fd = linux.loop_attach(img_fd, readonly=readonly)
            try:
                self._mount_dev(dev, where, fstype, readonly, data, os.path.basename(image))
            finally:
                os.close(dev_fd)
        finally:
            os.close(img_fd)

    def _mount_dev(self, dev: str, where: str, fstype: str, readonly: bool, data: str, name: str) -> None:
        flags = self.base_flags | (linux.MS_RDONLY if readonly else 0)
        try:
            linux.mount(dev, where, fstype, flags, data or None)
        except OSError as e:
            if not data or e.errno != errno.EINVAL:
                # EIO: the block device failed its integrity or verity check (the original's
                # corrupted_image): the container becomes ZOMBIE.
                raise MountError(f"mounting {name} ({fstype}): {e.strerror}", corrupted=e.errno == errno.EIO) from None
            linux.mount(dev, where, fstype, flags, None)  # retried without mount_data, as the original

    def _place(self, staged: str, target_fd: int, readonly: bool) -> None:
        """Put a staged mount at the target, ID-shifted for a user-namespaced container where
        the filesystem supports idmapped mounts (a plain bind otherwise)."""
        if self.userns_fd is not None and self.idmap_supported:
            src = os.open(staged, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                linux.idmapped_bind(src, target_fd, self.userns_fd, readonly)
                return
            except OSError as e:
                if e.errno not in (errno.EINVAL, errno.EPERM, errno.ENOSYS):
                    raise
                self.idmap_supported = False
            finally:
                os.close(src)
            if not readonly and os.stat(staged).st_uid == 0:
                # No idmapped mounts here: the original's fallback, the container root owns the top.
                os.chown(staged, self.spec.uid_start or 0, self.spec.uid_start or 0)
        linux.bind_tree(staged, target_fd, readonly=readonly)

    def _shifted(self, staged: str, readonly: bool) -> str:
        """An idmapped view of a staged mount, for use as an overlay layer: overlayfs itself cannot
        be idmapped, but (kernel >= 5.19) it can stack on idmapped layers, which gives the
        container's root ownership of the merged tree. Returns `staged` unchanged where the
        kernel or filesystem cannot (then the overlay gets the chown fallback of `_place`)."""
        if self.userns_fd is None or not self.idmap_supported:
            return staged
        view = self.staging("idmapped")
        src = os.open(staged, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        dst = os.open(view, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            linux.idmapped_bind(src, dst, self.userns_fd, readonly)
            return view
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.EPERM, errno.ENOSYS):
                raise
            self.idmap_supported = False
            return staged
        finally:
            os.close(src)
            os.close(dst)

    def _tmpfs_opts(self, mode: str = "755", extra: str = "") -> str:
        uid = self.spec.uid_start or 0
        opts = f"mode={mode},uid={uid},gid={uid}"
        return f"{opts},{extra}" if extra else opts

    # ------------------------------------------------------------------ mount kinds

    def mount_root(self, op: MountOp | None) -> None:
        root = self.spec.root_dir
        if op is None:
            linux.mount("tmpfs", root, "tmpfs", linux.MS_NODEV | linux.MS_NOSUID, self._tmpfs_opts())
        elif op.kind == "image":
            if self.userns_fd is None:
                self._mount_image(op.source, root, op.fstype, op.readonly, op.data)
            else:
                staged = self.staging("root")
                self._mount_image(op.source, staged, op.fstype, op.readonly, op.data)
                target = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    self._place(staged, target, op.readonly)
                finally:
                    os.close(target)
        elif op.kind == "overlay":
            self._mount_overlay(op, None, root)
        elif op.kind == "tmpfs":
            linux.mount("tmpfs", root, "tmpfs", linux.MS_NODEV | linux.MS_NOSUID, self._tmpfs_opts(extra=op.data))
        else:
            raise MountError(f"cannot use a {op.kind} mount as the container root")
        self.root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def _mount_overlay(self, op: MountOp, target_fd: int | None, root_path: str | None = None) -> None:
        lowers: list[str] = []
        shifted = True  # every layer seen through the container's ID mapping (or no userns at all)
        for image in op.lower:
            staged = self.staging("lower")
            self._mount_image(image, staged, op.lower_fstype or op.fstype, True, "")
            view = self._shifted(staged, readonly=True)
            shifted = shifted and (view != staged or self.userns_fd is None)
            lowers.append(view)
        if op.over_existing:
            if target_fd is None:
                raise MountError("an overlay over an existing directory cannot be the root")
            # A clone of what is there already, which carries the root's idmapping if it has one.
            base = self.staging("base")
            base_fd = os.open(base, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                linux.bind_tree(target_fd, base_fd)
            finally:
                os.close(base_fd)
            lowers.append(base)
        if not lowers:
            raise MountError(f"overlay at {op.target} has no lower layer")
        opts = "lowerdir=" + ":".join(lowers)
        readonly = not (op.upper_image or op.upper_tmpfs)
        if not readonly:
            upper_root = self.staging("upper")
            if op.upper_image:
                self._mount_image(op.upper_image, upper_root, op.fstype, False, op.data)
            else:
                linux.mount("tmpfs", upper_root, "tmpfs", linux.MS_NODEV, "mode=755")
            for d in ("upper", "work"):
                os.makedirs(os.path.join(upper_root, d), exist_ok=True)
            view = self._shifted(upper_root, readonly=False)
            shifted = shifted and (view != upper_root or self.userns_fd is None)
            opts += f",upperdir={view}/upper,workdir={view}/work"
        staged = self.staging("overlay")
        uid = self.spec.uid_start or 0
        try:
            with linux.fs_identity(uid, uid) if shifted and not readonly and uid else contextlib.nullcontext():
                linux.mount("overlay", staged, "overlay", self.base_flags | (linux.MS_RDONLY if readonly else 0),
                            opts)
        except OSError as e:
            raise MountError(f"overlay at {op.target}: {e.strerror}") from None
        if not readonly and os.statvfs(staged).f_flag & os.ST_RDONLY:
            # overlayfs falls back to read-only (with only a kernel log line) when its work
            # directory cannot be made: a writable volume must not silently lose its writes.
            raise MountError(f"overlay at {op.target} came up read-only: the upper layer is not usable "
                             "(see the kernel log)")
        fd = target_fd if target_fd is not None else os.open(root_path or "", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if shifted and self.userns_fd is not None:
                linux.bind_tree(staged, fd, readonly=readonly)  # the layers carry the idmapping
            else:
                self._place(staged, fd, readonly)
        finally:
            if target_fd is None:
                os.close(fd)

    def mount_op(self, op: MountOp) -> None:
        if op.kind == "bind":
            is_dir = os.path.isdir(op.source)
            fd = self.open_target(op.target, directory=is_dir)
            try:
                linux.bind_tree(op.source, fd, readonly=op.readonly, recursive=False,
                                extra_attrs=linux.MOUNT_ATTR_NOSUID | linux.MOUNT_ATTR_NODEV)
            finally:
                os.close(fd)
            return
        fd = self.open_target(op.target)
        try:
            if op.kind == "image":
                staged = self.staging("img")
                self._mount_image(op.source, staged, op.fstype, op.readonly, op.data)
                self._place(staged, fd, op.readonly)
            elif op.kind == "tmpfs":
                linux.mount("tmpfs", fd_path(fd), "tmpfs", self.base_flags | linux.MS_NOSUID,
                            self._tmpfs_opts(extra=op.data))
            elif op.kind == "overlay":
                self._mount_overlay(op, fd)
            else:
                raise MountError(f"unknown mount kind {op.kind!r}")
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ /dev and /run

    def populate_dev(self, nodes: list[DevNode]) -> None:
        """A fresh tmpfs with only the allowed device nodes: never a bind of the host's /dev, so
        nothing the container does to its /dev (even a read-only remount) reaches the host."""
        fd = self.open_target("/dev")
        try:
            linux.mount("tmpfs", fd_path(fd), "tmpfs", linux.MS_NOSUID | linux.MS_NOEXEC,
                        self._tmpfs_opts(extra="size=1024k,nr_inodes=4096"))
        finally:
            os.close(fd)
        dev = linux.open_in_root(self.root_fd, "/dev", os.O_RDONLY | os.O_DIRECTORY)
        uid = self.spec.uid_start or 0
        try:
            for node in nodes:
                kind = stat.S_IFCHR if node.type == "c" else stat.S_IFBLK
                name = node.path
                if "/" in name:
                    parent, name = name.rsplit("/", 1)
                    _mkdirs_at(dev, parent, uid)
                    sub = os.open(parent, os.O_RDONLY | os.O_DIRECTORY, dir_fd=dev)
                else:
                    sub = os.dup(dev)
                try:
                    os.mknod(name, kind | 0o600, os.makedev(node.major, node.minor), dir_fd=sub)
                    os.chmod(name, node.mode, dir_fd=sub)
                    os.chown(name, uid, uid, dir_fd=sub)
                finally:
                    os.close(sub)
            tty = console_tty([n.path for n in nodes if "/" not in n.path])
            if tty is not None:
                os.symlink(tty, "console", dir_fd=dev)
            for name, dest in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                               ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
                               ("ptmx", "pts/ptmx")):
                os.symlink(dest, name, dir_fd=dev)
            for name in ("pts", "shm"):
                os.mkdir(name, 0o755 if name == "pts" else 0o1777, dir_fd=dev)
                os.chown(name, uid, uid, dir_fd=dev)
            os.chmod("shm", 0o1777, dir_fd=dev)  # noqa: S103 - /dev/shm is sticky and world-writable
        finally:
            os.close(dev)

    def mount_run(self) -> None:
        fd = self.open_target("/run")
        try:
            linux.mount("tmpfs", fd_path(fd), "tmpfs", linux.MS_NOSUID | linux.MS_NODEV,
                        self._tmpfs_opts(extra="size=16m"))
        finally:
            os.close(fd)
        run = linux.open_in_root(self.root_fd, "/run", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.mkdir("socket", 0o755, dir_fd=run)
            uid = self.spec.uid_start or 0
            os.chown("socket", uid, uid, dir_fd=run)
            if self.spec.meminfo:
                # owned by the host's root (unmapped in a user namespace: the container cannot
                # write it); the child binds it over /proc/meminfo and unlinks this name
                fd = os.open(MEMINFO_STAGING, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444, dir_fd=run)
                os.write(fd, self.spec.meminfo.encode())
                self.meminfo_fd = fd  # handed to cmld with the child's other fds
        finally:
            os.close(run)

    def run(self) -> None:
        ops = list(self.spec.mounts)
        root_op = next((op for op in ops if op.target == "/"), None)
        self.mount_root(root_op)
        for op in ops:
            if op is not root_op:
                self.mount_op(op)
        self.populate_dev(self.spec.devices)
        self.mount_run()
        try:
            cservice.place(self)
        except cservice.PlacementError as e:
            self.cservice_problem = str(e)


def _mkdirs_at(dir_fd: int, rel: str, uid: int) -> None:
    cur = os.dup(dir_fd)
    try:
        for part in rel.split("/"):
            if part in ("", ".", ".."):
                continue
            try:
                os.mkdir(part, 0o755, dir_fd=cur)
                os.chown(part, uid, uid, dir_fd=cur)
            except FileExistsError:
                pass
            nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=cur)
            os.close(cur)
            cur = nxt
    finally:
        os.close(cur)
