"""FLASH images: written to the partition their mount's `mount_point` names (an absolute device
path), as the original's guestos_images_flash. The GuestOS named `kernel` is the pseudo-OS of CML
and kernel updates. A partition whose content already starts with the image is left alone;
otherwise it is first copied whole to `os_update_bak/<name>-<version>/<image_file>`, then written
and read back. If any image of the GuestOS fails, the partitions written so far are restored from
their backups (the original restores on purge, to a wrong path; see the README).

Ours, stricter: the target must be a block device that is not mounted, and large enough for the
image, all checked before anything is written; the backup must fit on the data partition.

With the A/B update (device/ab_update.py) the `kernel` GuestOS's targets are retargeted to the
slot that is not running; its kernel image then goes to a regular file on the ESP, which is
written whole (truncated to the image) and must equal it byte for byte.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cml_common.messages.guestos_pb2 import GuestOSConfig, GuestOSMount
from cmld.errors import InstallError
from cmld.guestos.store import GuestOS

log = logging.getLogger(__name__)
BACKUP_DIR = "os_update_bak"
KERNEL = "kernel"
CHUNK = 1 << 20
# A mount point -> (where the image goes, whether that is a slot's kernel file): the A/B update.
Retarget = Callable[[str], tuple[Path, bool]]


class KernelSlots(Protocol):
    """The A/B update as the installer uses it (device/ab_update.py)."""

    def flash_target(self, mount_point: str) -> tuple[Path, bool]: ...

    def boot_other_once(self) -> None: ...


@dataclass(frozen=True)
class FlashTarget:
    image: Path
    device: Path
    backup: Path
    is_file: bool = False


def _device_size(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def _mounted(rdev: int) -> bool:
    want = f"{os.major(rdev)}:{os.minor(rdev)}"
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[2] == want for line in f)


def targets(cfg: GuestOSConfig, image_dir: Path, base: Path, retarget: Retarget | None = None) -> list[FlashTarget]:
    """The FLASH images of a GuestOS and where they go; InstallError for a target that must not be
    written. Checked for all before any image is fetched, and again before any is written.
    `retarget` applies to the `kernel` GuestOS only (the A/B update)."""
    out = []
    for m in cfg.mounts:
        if m.mount_type != GuestOSMount.FLASH:
            continue
        if not Path(m.mount_point).is_absolute():
            raise InstallError(f"FLASH image {m.image_file}: target {m.mount_point!r} is not an absolute device path")
        device, is_file = retarget(m.mount_point) if retarget is not None and cfg.name == KERNEL \
            else (Path(m.mount_point), False)
        image = image_dir / f"{m.image_file}.img"
        try:
            st = os.lstat(device) if is_file else os.stat(device)
        except OSError as e:
            raise InstallError(f"FLASH image {m.image_file}: target {device}: {e.strerror}") from None
        need = m.image_size if m.HasField("image_size") else image.stat().st_size
        if is_file:
            if not stat.S_ISREG(st.st_mode):
                raise InstallError(f"FLASH image {m.image_file}: boot slot kernel {device} is not a regular file")
            free = shutil.disk_usage(device.parent).free + st.st_size
            if need > free:
                raise InstallError(f"FLASH image {m.image_file}: {need} bytes do not fit on the ESP ({free} bytes)")
        else:
            if not stat.S_ISBLK(st.st_mode):
                raise InstallError(f"FLASH image {m.image_file}: target {device} is not a block device")
            if _mounted(st.st_rdev):
                raise InstallError(f"FLASH image {m.image_file}: target {device} is mounted")
            size = _device_size(device)
            if need > size:
                raise InstallError(f"FLASH image {m.image_file}: {need} bytes do not fit on {device} ({size} bytes)")
        out.append(FlashTarget(image, device, base / BACKUP_DIR / f"{cfg.name}-{cfg.version}" / m.image_file,
                               is_file))
    return out


def matches(image: Path, device: Path, *, exact: bool = False) -> bool:
    """The device's content starts with the image (the original's verify_partition); `exact`
    (a kernel file) also wants nothing after it."""
    with open(image, "rb") as img, open(device, "rb") as dev:
        while chunk := img.read(CHUNK):
            if dev.read(len(chunk)) != chunk:
                return False
        return not exact or not dev.read(1)


def _open(dst: Path, *, create: bool) -> int:
    flags = os.O_WRONLY | os.O_CLOEXEC | (os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW if create else 0)
    return os.open(dst, flags, 0o600)


def _write(fd: int, src: Path) -> None:
    """Copy `src` into the open `fd` and sync it; closes `fd`."""
    try:
        with open(src, "rb") as f:
            while chunk := f.read(CHUNK):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy(src: Path, dst: Path, *, create: bool) -> None:
    _write(_open(dst, create=create), src)


def flash(gos: GuestOS, base: Path, retarget: Retarget | None = None) -> int:
    """Write the FLASH images of `gos`; returns how many partitions were written. InstallError if
    one cannot be; the partitions written before it are restored from their backups first."""
    todo = [t for t in targets(gos.config, gos.image_dir, base, retarget)
            if not matches(t.image, t.device, exact=t.is_file)]
    if not todo:
        return 0
    written: list[FlashTarget] = []
    try:
        for t in todo:
            t.backup.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            size = _device_size(t.device)
            free = shutil.disk_usage(t.backup.parent).free
            if size > free:
                raise InstallError(f"no room for the backup of {t.device}: {size >> 20} MiB, {free >> 20} MiB free")
            _copy(t.device, t.backup, create=True)
            log.warning("GuestOS %s-%d: %s backed up to %s; flashing %s", gos.name, gos.version, t.device,
                        t.backup, t.image.name)
            fd = _open(t.device, create=t.is_file)  # a device that cannot be opened is left as it is
            written.append(t)
            _write(fd, t.image)
            if not matches(t.image, t.device, exact=t.is_file):
                raise InstallError(f"{t.device} does not read back as {t.image.name} after flashing")
    except (InstallError, OSError) as e:
        for t in reversed(written):
            try:
                _copy(t.backup, t.device, create=t.is_file)
                log.warning("GuestOS %s-%d: %s restored from %s", gos.name, gos.version, t.device, t.backup)
                t.backup.unlink()  # restored: the backup has served (the original), a failed one stays
            except OSError as r:
                log.error("GuestOS %s-%d: %s could NOT be restored from %s: %s", gos.name, gos.version, t.device,
                          t.backup, r)
        for t in written:
            with contextlib.suppress(OSError):
                t.backup.parent.rmdir()  # only if empty
        if isinstance(e, InstallError):
            raise
        raise InstallError(f"flashing failed: {e.strerror or e}") from None
    return len(written)
