"""GuestOS images and container volumes (the original's c_vol).

Turns the GuestOS mount table (adjusted by the container's `image_sizes`) into the launcher's
mount operations. Writable images (EMPTY, OVERLAY_RW upper layers) are dm-integrity + dm-crypt
stacks where device-mapper and a key are there (`crypt_volumes.py`), plain images otherwise (with
a log line saying why). GuestOS images are checked against the signed GuestOS config before each
start: opened with dm-verity when they have a root hash (the full hash follows in the background,
`verity_check.py`), hashed in full otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from pathlib import Path

from cml_common.messages.guestos_pb2 import GuestOSMount
from cmld import linux
from cmld.clients.tpm2d import Tpm2dMeasurements
from cmld.device import shared_store
from cmld.launcher.spec import MountOp
from cmld.modules.base import Module, StartError
from cmld.modules.context import StartContext
from cmld.modules.crypt_volumes import CorruptionSink, VolumeCrypt, close_all
from cmld.modules.images import check_image, create_empty_image, sha256_file
from cmld.modules.verity_check import VerityCheck

__all__ = ["VolumesModule", "sha256_file"]
log = logging.getLogger(__name__)
M = GuestOSMount
MIN_EMPTY_MB = 10
LOOP_RELEASE_WAIT = 5.0  # s: the kernel detaches an autoclear loop device soon after the unmount
IMAGE_NAME = re.compile(r"^[A-Za-z0-9_+][A-Za-z0-9._+-]{0,63}$")
WRITABLE = (M.EMPTY, M.OVERLAY_RW)
SHARED = (M.SHARED, M.SHARED_RW, M.OVERLAY_RO)


def _writable(m: GuestOSMount) -> bool:
    return m.mount_type in WRITABLE and m.fs_type != "tmpfs"


class VolumesModule(Module):
    name = "volumes"

    def __init__(self, guestos_dir: Path, shared_files_dir: Path, *, tpm: Tpm2dMeasurements | None = None,
                 corruption: CorruptionSink | None = None) -> None:
        self.guestos_dir = guestos_dir
        self.shared_files_dir = shared_files_dir
        self.tpm = tpm
        self.corruption = corruption
        self.verity_images: list[tuple[Path, GuestOSMount]] = []
        self.check: VerityCheck | None = None
        self.encrypted = False  # the writable volumes are dm stacks (kept over a reboot from inside)

    def _mount_table(self, ctx: StartContext) -> list[GuestOSMount]:
        gos = ctx.guestos
        if gos is None:
            raise StartError(f"GuestOS {ctx.container.config.guest_os!r} is not installed")
        table = gos.mounts_setup if ctx.setup_mode and len(gos.mounts_setup) else gos.mounts
        result = []
        for m in table:
            m2 = GuestOSMount()
            m2.CopyFrom(m)
            for s in ctx.container.config.image_sizes:
                if s.image_name == m.image_file:
                    if s.image_file:
                        m2.image_file = s.image_file
                    if m.mount_type in WRITABLE:
                        if not m.min_size <= s.image_size <= m.max_size:
                            raise StartError(f"image_sizes: {s.image_name} = {s.image_size} MB is outside "
                                             f"{m.min_size}..{m.max_size} MB")
                        m2.def_size = s.image_size
            if m2.mount_type not in (M.BIND_FILE, M.BIND_FILE_RW) and not IMAGE_NAME.match(m2.image_file):
                raise StartError(f"image name {m2.image_file!r} is not usable (letters, digits, . _ + -, at most 64)")
            result.append(m2)
        return result

    async def prepare(self, ctx: StartContext) -> None:
        gos = ctx.guestos
        table = self._mount_table(ctx)
        assert gos is not None
        gos_dir = self.guestos_dir / f"{gos.name}-{gos.version}"
        cont_dir = ctx.settings.containers_dir / ctx.uuid
        crypt = VolumeCrypt(ctx, self.corruption)
        crypt.decide(writable=any(_writable(m) for m in table))
        self.encrypted = crypt.encrypting
        no_verity = ctx.settings.crypt_unavailable
        # Files are stored with the container's own IDs; the launcher's idmapped mount shifts
        # them to the container's host range (or chowns the top directory where it cannot).
        owner = 0
        checks: list[tuple[Path, GuestOSMount]] = []
        ops: list[MountOp] = []
        for m in table:
            t = m.mount_type
            shared_img = gos_dir / f"{m.image_file}.img"
            own_img = cont_dir / f"{m.image_file}.img"
            source = str(shared_img)
            if t in SHARED:
                verity = bool(m.image_verity_sha256) and not no_verity
                if m.image_verity_sha256 and no_verity:
                    log.warning("container %s: %s has a dm-verity root hash, but device-mapper is not usable here "
                                "(%s): hashing it in full instead", ctx.container.name, shared_img.name, no_verity)
                if verity:
                    await asyncio.to_thread(check_image, shared_img, m, quick=True)
                    source = str(await crypt.open_verity(m, shared_img))
                    self.verity_images.append((shared_img, m))
                else:
                    checks.append((shared_img, m))
            if t == M.SHARED:
                ops.append(MountOp("image", m.mount_point, source, m.fs_type, True, m.mount_data))
            elif t == M.SHARED_RW:
                ops.append(MountOp("overlay", m.mount_point, fstype="tmpfs", readonly=False, lower=[source],
                                   lower_fstype=m.fs_type, upper_tmpfs=True))
            elif t == M.OVERLAY_RO:
                ops.append(MountOp("overlay", m.mount_point, lower=[source], lower_fstype=m.fs_type,
                                   over_existing=True))
            elif t == M.EMPTY and m.fs_type == "tmpfs":
                ops.append(MountOp("tmpfs", m.mount_point, fstype="tmpfs", readonly=False,
                                   data=f"size={max(m.def_size, 1)}m" + (f",{m.mount_data}" if m.mount_data else "")))
            elif t in WRITABLE:
                cont_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
                size = max(m.def_size, MIN_EMPTY_MB)
                if crypt.encrypting:
                    dev = str(await crypt.open_writable(m, own_img, size))
                else:
                    dev = str(own_img)
                    if not own_img.exists():
                        log.info("container %s: creating %s (%d MiB, %s)", ctx.container.name, own_img.name, size,
                                 m.fs_type)
                        await asyncio.to_thread(create_empty_image, own_img, size, m.fs_type, owner)
                if t == M.EMPTY:
                    ops.append(MountOp("image", m.mount_point, dev, m.fs_type, False, m.mount_data))
                else:
                    ops.append(MountOp("overlay", m.mount_point, fstype=m.fs_type, readonly=False,
                                       over_existing=True, upper_image=dev, data=m.mount_data))
            elif t in (M.BIND_FILE, M.BIND_FILE_RW):
                if ctx.spec.uid_start is not None:
                    log.info("container %s: BIND_FILE %s skipped for a user-namespaced container (as the "
                             "original)", ctx.container.name, m.image_file)
                    continue
                await asyncio.to_thread(shared_store.ensure_mounted, self.shared_files_dir)
                src = self.shared_files_dir / m.image_file
                if not src.is_file():
                    raise StartError(f"shared file {m.image_file} is missing ({src})")
                ops.append(MountOp("bind", m.mount_point, str(src), readonly=t == M.BIND_FILE))
            elif t in (M.FLASH, M.STORE_ONLY):
                continue  # never mounted
            else:
                raise StartError(f"mount type {M.Type.Name(t)} of {m.image_file} is not supported "
                                 "by this cmld")
        measure = ctx.settings.tpm2d_socket is not None
        for path, m in checks:
            digest = await asyncio.to_thread(check_image, path, m, measure=measure)
            if digest is not None:
                ctx.image_digests.append((str(path), digest))
        ctx.spec.mounts = ops

    async def post_exec(self, ctx: StartContext) -> None:
        self.check = VerityCheck(ctx.container.name, ctx.uuid, self.corruption, self.tpm)
        self.check.start(self.verity_images)

    async def cleanup(self, ctx: StartContext, rebooting: bool) -> None:
        """The dm devices go once the container's mounts are gone (they died with its mount
        namespace), except over a reboot from inside, as the original (the restart has no key).
        Then the loop devices: the kernel detaches a plain image's (autoclear) a moment after the
        unmount, the dm stack's went with it. A STOPPED container holds none, so a next start, a
        wipe or a remove never meets its images still attached."""
        if self.check is not None:
            self.check.stop()
        if rebooting and self.encrypted:
            return
        if not rebooting:
            for failure in await close_all(ctx.uuid, self.corruption):
                log.error("container %s: could not remove the dm device %s", ctx.container.name, failure)
        images = [str(p) for p in (ctx.settings.containers_dir / ctx.uuid).glob("*.img")]
        deadline = time.monotonic() + LOOP_RELEASE_WAIT
        while images and (left := await asyncio.to_thread(linux.loops_of, images)):
            if time.monotonic() > deadline:
                log.warning("container %s: %s still attached %g s after it ended", ctx.container.name,
                            ", ".join(left), LOOP_RELEASE_WAIT)
                return
            await asyncio.sleep(0.02)

    async def destroy(self, ctx: StartContext) -> None:
        cont_dir = ctx.settings.containers_dir / ctx.uuid
        for img in cont_dir.glob("*.img"):
            img.unlink(missing_ok=True)
