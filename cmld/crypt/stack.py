"""One encrypted or integrity-protected image as a device-mapper stack (the original's
cryptfs_setup_volume_new): the data and meta images on loop devices, `<label>-integrity` on them,
`<label>` (dm-crypt) on top unless the mode has no encryption.

Loop devices are attached with autoclear: the dm table holds them, and they vanish when the
integrity device is removed (or when the process that attached them dies before that). Every
device gets a `CML-` dm UUID, so recovery after a crash knows what is ours."""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cml_common.messages.container_pb2 import CryptfsMode
from cmld import linux
from cmld.crypt import dm, superblock
from cmld.crypt.tables import SplitKey, crypt_table, integrity_name, integrity_table, top_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StackImages:
    label: str  # <container uuid>-<image name>
    data: Path  # <img>.img
    meta: Path  # <img>.meta.img
    mode: int  # CryptfsMode with a dm layer

    @property
    def top(self) -> str:
        return top_name(self.mode, self.label)

    @property
    def names(self) -> tuple[str, ...]:
        """Top first (the removal order)."""
        if self.mode == CryptfsMode.INTEGRITY_ONLY:
            return (integrity_name(self.label),)
        if self.mode == CryptfsMode.ENCRYPT_ONLY:
            return (self.label,)
        return (self.label, integrity_name(self.label))


def existing(img: StackImages) -> Path | None:
    """The top device of this stack if it is up already (kept over a container reboot)."""
    top = dm.find(img.top)
    if top is not None and top.uuid == f"{dm.UUID_PREFIX}{img.top}" and dm.path(img.top).exists():
        return dm.path(img.top)
    return None


def open_stack(img: StackImages, key: SplitKey) -> tuple[Path, bool]:
    """Build the stack; returns (top device, whether the volume was never formatted). Anything made
    is removed again if a step fails."""
    close_stack(img)  # a half-built stack (no top) from a failed attempt
    fds: list[int] = []
    made: list[str] = []
    try:
        data_loop, fd = _attach(img.data, fds)
        sectors = dm.size_sectors(data_loop)
        if sectors == 0:
            raise OSError(f"{img.data.name} is empty")
        lower = data_loop
        initial = False
        if img.mode != CryptfsMode.ENCRYPT_ONLY:
            initial = superblock.needs_initial_format(img.meta, sectors)
            meta_loop, _ = _attach(img.meta, fds)
            name = integrity_name(img.label)
            dm.create(name, integrity_table(sectors, data_loop, meta_loop, key.hmac_hex), f"{dm.UUID_PREFIX}{name}")
            made.append(name)
            lower = str(dm.path(name))
        if img.mode != CryptfsMode.INTEGRITY_ONLY:
            dm.create(img.label, crypt_table(dm.size_sectors(lower), lower, key.crypt_hex,
                                             img.mode == CryptfsMode.AUTHENC), f"{dm.UUID_PREFIX}{img.label}")
            made.append(img.label)
        return dm.path(img.top), initial
    except BaseException:
        for name in reversed(made):
            with contextlib.suppress(Exception):
                dm.remove(name)
        raise
    finally:
        for fd in fds:
            os.close(fd)


def _attach(image: Path, fds: list[int]) -> tuple[str, int]:
    img_fd = os.open(image, os.O_RDWR | os.O_CLOEXEC)
    try:
        dev, fd = linux.loop_attach(img_fd, readonly=False)
    finally:
        os.close(img_fd)
    fds.append(fd)
    return dev, fd


def close_stack(img: StackImages) -> None:
    for name in (img.label, integrity_name(img.label)):
        dm.remove(name)


def remove_devices(names: list[str]) -> list[str]:
    """Remove dm devices in an order that takes each one's holders first; returns failures."""
    left = {d.name: d for d in dm.devices() if d.name in set(names)}
    failed: list[str] = []
    while left:
        below = {s for d in left.values() for s in d.slaves}
        ready = [d for d in left.values() if d.kname not in below] or list(left.values())
        for d in ready:
            try:
                dm.remove(d.name)
            except Exception as e:
                failed.append(f"{d.name}: {e}")
            left.pop(d.name, None)
    return failed
