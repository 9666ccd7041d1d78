"""The device-mapper side of one container start (the original's c_vol with cryptfs and verity):
which dm mode the writable images use, their integrity/crypt stacks (made, first-formatted with
progress, reused over a container reboot), and dm-verity for GuestOS images with a root hash.

Every blocking step (dmsetup, the first format, mkfs) runs in a thread or a child process, so the
event loop and the control socket stay free; the container stays STARTING meanwhile. A first
format leaves `<img>.formatting` until it is complete: a start that finds it (cmld was killed, the
power failed) formats the volume again from scratch and never mounts it half-made."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Protocol

from cml_common.fsutil import fsync_dir, write_atomic
from cml_common.messages.container_pb2 import CryptfsMode
from cml_common.messages.guestos_pb2 import GuestOSMount
from cmld.containers.c0_key import C0KeyError, c0_key
from cmld.crypt import dm, fill, mode, stack, tables, verity
from cmld.crypt.tools import ToolError
from cmld.modules.base import StartError
from cmld.modules.context import StartContext
from cmld.modules.images import check_space, hash_image_path, mkfs

log = logging.getLogger(__name__)
FORMAT_MARKER = ".formatting"
MIN_MB = 10


class CorruptionSink(Protocol):
    """Where a volume's corruption goes (the runtime's monitor): the devices to watch in the
    kernel log, and reports that end the container (ZOMBIE when `corrupted`)."""

    def watch(self, dm_name: str, uuid: str, image: str) -> None: ...

    def forget(self, uuid: str) -> None: ...

    def report(self, uuid: str, message: str, *, corrupted: bool) -> None: ...


def label_of(uuid: str, image_file: str) -> str:
    return f"{uuid}-{image_file}"


class VolumeCrypt:
    def __init__(self, ctx: StartContext, sink: CorruptionSink | None) -> None:
        self.ctx = ctx
        self.sink = sink
        s = ctx.settings
        self.images_dir = s.containers_dir / ctx.uuid
        self.keys_dir = s.base_dir / "keys"
        c = ctx.container
        self.choice = mode.choose(self.images_dir, is_c0=c.is_c0, dm_unavailable=s.crypt_unavailable,
                                  has_key=ctx.key is not None or c.is_c0 or self._stacks_up())
        self.labels: list[str] = []

    def _stacks_up(self) -> bool:
        """A container restarting after a reboot from inside gets no key: its devices were kept."""
        return any(d.name.startswith(f"{self.ctx.uuid}-") for d in dm.devices())

    @property
    def encrypting(self) -> bool:
        return self.choice.mode in tables.DM_MODES

    def decide(self, writable: bool) -> None:
        """Refuse or warn before anything is made; write `not-stacked` for a fresh container."""
        name = self.ctx.container.name
        if not writable:
            return
        if not self.choice.usable:
            raise StartError(f"{name}: {self.choice.reason}")
        if self.choice.mode == CryptfsMode.NOT_IMPLEMENTED:
            if self.ctx.settings.require_encryption:
                raise StartError(f"{name}: writable volumes must be encrypted here (--require-encryption), "
                                 f"but {self.choice.reason}")
            log.warning("container %s: its writable volumes are NOT encrypted (cryptfs_mode NOT_IMPLEMENTED): %s",
                        name, self.choice.reason)
            return
        if self.choice.create_marker:
            self.images_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_atomic(self.images_dir / mode.NOT_STACKED, b"", mode=0o600)
        log.info("container %s: writable volumes %s", name, CryptfsMode.Name(self.choice.mode))

    def _split_key(self) -> tables.SplitKey:
        c = self.ctx.container
        raw: bytearray | None = None
        try:
            if c.is_c0:
                raw = c0_key(self.keys_dir / f"{c.uuid}.key", self.images_dir)
            elif self.ctx.key is not None:
                raw = self.ctx.key
            else:
                raise StartError(f"{c.name}: its volumes are encrypted and no key was given (token PIN)")
            key = tables.split_key(self.choice.mode, bytes(raw))
        except (C0KeyError, tables.BadKey, OSError) as e:
            raise StartError(f"{c.name}: the volume key is unusable: {e}", corrupted=True) from None
        finally:
            if raw is not None and raw is not self.ctx.key:
                raw[:] = bytes(len(raw))
        if key.note:
            log.warning("container %s: %s (used as the original does)", c.name, key.note)
        return key

    # ------------------------------------------------------------------ writable images

    async def open_writable(self, m: GuestOSMount, img: Path, size_mb: int) -> Path:
        """The encrypted (or integrity-protected) device of an EMPTY/OVERLAY_RW image, made and
        formatted on first use; its file system is on it when this returns."""
        c = self.ctx.container
        label = label_of(c.uuid, m.image_file)
        meta = img.with_name(f"{m.image_file}.meta.img")
        marker = img.with_name(f"{m.image_file}{FORMAT_MARKER}")
        images = stack.StackImages(label, img, meta, self.choice.mode)
        self.labels.append(label)
        dev = await asyncio.to_thread(stack.existing, images)
        if dev is not None and not marker.exists():
            log.info("container %s: using the existing device %s", c.name, dev)
            self._watch(images, m.image_file)
            return dev
        new = not img.exists() or marker.exists()
        if marker.exists():
            log.warning("container %s: the first format of %s was interrupted; formatting it again", c.name, img.name)
        if new:
            await asyncio.to_thread(self._create_files, img, meta, marker, max(size_mb, MIN_MB))
        elif not meta.exists() and self.choice.mode != CryptfsMode.ENCRYPT_ONLY:
            raise StartError(f"{c.name}: the integrity metadata {meta.name} of {img.name} is missing", corrupted=True)
        key = self._split_key()
        try:
            top, initial = await asyncio.to_thread(stack.open_stack, images, key)
        except (ToolError, OSError) as e:
            raise StartError(f"{c.name}: setting up {CryptfsMode.Name(self.choice.mode)} for {img.name} failed: {e}") \
                from None
        del key
        try:
            if initial or new:
                # Only zeroes are on the device after this (an integrity superblock made now means
                # there was no volume yet, e.g. the original's legacy images before their first
                # start): it gets its file system too.
                await self._first_format(top, img.name)
                await asyncio.to_thread(mkfs, top, m.fs_type, 0, img.name)
            if new:
                marker.unlink()
                fsync_dir(marker.parent)
        except BaseException:
            await asyncio.to_thread(stack.close_stack, images)
            raise
        self._watch(images, m.image_file)
        return top

    def _create_files(self, img: Path, meta: Path, marker: Path, size_mb: int) -> None:
        check_space(img.parent, img.name, size_mb)
        img.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(marker, b"", mode=0o600)  # first: a crash from here on redoes the format
        size = size_mb << 20
        for path, length in ((img, size), (meta, tables.meta_size(size))):
            with open(path, "wb") as f:  # truncated: a redone format starts from zeroes
                f.truncate(length)
        log.info("container %s: created %s (%d MiB) and %s (%d bytes)", self.ctx.container.name, img.name,
                 size_mb, meta.name, tables.meta_size(size))

    async def _first_format(self, dev: Path, image: str) -> None:
        name = self.ctx.container.name
        what = CryptfsMode.Name(self.choice.mode)
        t0 = time.monotonic()
        last = [-1]

        def progress(done: int, total: int) -> None:
            pct = done * 100 // total
            if pct // 10 != last[0] // 10 or pct == 100:
                last[0] = pct
                log.info("container %s: first format of %s (%s, %d MiB): %d %%", name, image, what, total >> 20, pct)

        try:
            await asyncio.to_thread(fill.zero_fill, str(dev), progress)
        except ToolError as e:
            raise StartError(f"{name}: {e}") from None
        log.info("container %s: %s formatted in %.1f s", name, image, time.monotonic() - t0)

    def _watch(self, images: stack.StackImages, image_file: str) -> None:
        if self.sink is not None:
            for dm_name in images.names:
                self.sink.watch(dm_name, self.ctx.uuid, image_file)

    # ------------------------------------------------------------------ GuestOS images

    async def open_verity(self, m: GuestOSMount, img: Path) -> Path:
        label = label_of(self.ctx.uuid, m.image_file)
        self.labels.append(label)
        try:
            dev = await asyncio.to_thread(verity.open_verity, label, img, hash_image_path(img), m.image_verity_sha256)
        except ToolError as e:
            raise StartError(f"{self.ctx.container.name}: dm-verity of {img.name} refused: {e}") from None
        if self.sink is not None:
            self.sink.watch(label, self.ctx.uuid, m.image_file)
        log.info("container %s: %s opened with dm-verity (root hash from the GuestOS config)",
                 self.ctx.container.name, img.name)
        return dev


async def close_all(uuid: str, sink: CorruptionSink | None) -> list[str]:
    """Remove every dm device of a container (`<uuid>-*`), holders first; returns failures."""
    if sink is not None:
        sink.forget(uuid)
    names = [d.name for d in await asyncio.to_thread(dm.devices) if d.name.startswith(f"{uuid}-")]
    return await asyncio.to_thread(stack.remove_devices, names) if names else []
