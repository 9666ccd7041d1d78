"""GuestOS images and container volumes (the original's c_vol, unencrypted part).

Turns the GuestOS mount table (adjusted by the container's `image_sizes`) into the launcher's
mount operations, checks the size and SHA-256 of every shared image before each start (streamed
in an executor, so the control socket stays responsive), and creates EMPTY images on first use.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

from cml_common.crashpoints import crash_point
from cml_common.messages.guestos_pb2 import GuestOSMount
from cmld import linux
from cmld.launcher.spec import MountOp
from cmld.modules.base import Module, StartError
from cmld.modules.context import StartContext

log = logging.getLogger(__name__)
M = GuestOSMount
HASH_CHUNK = 1 << 20
MIN_EMPTY_MB = 10
FREE_SPACE_MARGIN = 1.1  # image plus metadata headroom, as the original's space check
LOOP_RELEASE_WAIT = 5.0  # s: the kernel detaches an autoclear loop device soon after the unmount


def _digests(path: Path, sha1: bool) -> tuple[str, str]:
    """(SHA-256, SHA-1 or "") of a file in one streamed pass."""
    h256 = hashlib.sha256()
    h1 = hashlib.sha1(usedforsecurity=False) if sha1 else None
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(HASH_CHUNK)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h256.update(view[:n])
            if h1 is not None:
                h1.update(view[:n])
    return h256.hexdigest(), h1.hexdigest() if h1 is not None else ""


def sha256_file(path: Path) -> str:
    return _digests(path, sha1=False)[0]


def check_image(path: Path, mount: GuestOSMount, *, measure: bool = False) -> bytes | None:
    """Size and hash as the signed GuestOS config says, else a StartError naming the image.
    Returns the image's SHA-256 when it was computed (always with `measure`: the TPM measurement
    list gets the digest of what is mounted, not of what the config claims)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise StartError(f"image {path.name} of the GuestOS is missing ({path})") from None
    if mount.HasField("image_size") and size != mount.image_size:
        raise StartError(f"image {path.name} has {size} bytes, the GuestOS config says {mount.image_size}")
    if not (mount.image_sha2_256 or mount.image_sha1 or measure):
        return None
    actual, sha1 = _digests(path, sha1=bool(mount.image_sha1) and not mount.image_sha2_256)
    if mount.image_sha2_256 and actual != mount.image_sha2_256.lower():
        raise StartError(f"image {path.name} is corrupted or tampered with: SHA-256 {actual} does not "
                         f"match the GuestOS config ({mount.image_sha2_256})")
    if sha1 and sha1 != mount.image_sha1.lower():
        raise StartError(f"image {path.name} is corrupted or tampered with (SHA-1 mismatch)")
    return bytes.fromhex(actual)


def create_empty_image(path: Path, size_mb: int, fstype: str, owner: int) -> None:
    """Sparse file, formatted, renamed into place only when complete: a crash mid-way leaves no
    half-formatted image that a later start would mount."""
    mkfs = shutil.which(f"mkfs.{fstype}")
    if mkfs is None:
        raise StartError(f"cannot format {path.name}: mkfs.{fstype} is not installed")
    st = os.statvfs(path.parent)
    free = st.f_bavail * st.f_frsize
    need = int(size_mb * (1 << 20) * FREE_SPACE_MARGIN)
    if need > free:
        raise StartError(f"not enough space for {path.name}: {size_mb} MiB needed (+10 %), "
                         f"{free >> 20} MiB free on {path.parent}")
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)  # left by a crash mid-format
    try:
        with open(tmp, "wb") as f:
            f.truncate(size_mb << 20)
        args = [mkfs, "-q", "-F"]
        if fstype.startswith("ext"):
            args += ["-E", f"root_owner={owner}:{owner}"]
        res = subprocess.run([*args, str(tmp)], capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise StartError(f"mkfs.{fstype} {path.name} failed: {(res.stderr or res.stdout).strip()}")
        crash_point("start.mkfs")
        os.replace(tmp, path)
    except OSError as e:
        raise StartError(f"creating {path.name}: {e.strerror}") from None
    finally:
        tmp.unlink(missing_ok=True)


class VolumesModule(Module):
    name = "volumes"

    def __init__(self, guestos_dir: Path, shared_files_dir: Path) -> None:
        self.guestos_dir = guestos_dir
        self.shared_files_dir = shared_files_dir

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
                    if m.mount_type in (M.EMPTY, M.OVERLAY_RW):
                        if not m.min_size <= s.image_size <= m.max_size:
                            raise StartError(f"image_sizes: {s.image_name} = {s.image_size} MB is outside "
                                             f"{m.min_size}..{m.max_size} MB")
                        m2.def_size = s.image_size
            result.append(m2)
        return result

    async def prepare(self, ctx: StartContext) -> None:
        gos = ctx.guestos
        table = self._mount_table(ctx)
        assert gos is not None
        gos_dir = self.guestos_dir / f"{gos.name}-{gos.version}"
        cont_dir = ctx.settings.containers_dir / ctx.uuid
        # Files are stored with the container's own IDs; the launcher's idmapped mount shifts
        # them to the container's host range (or chowns the top directory where it cannot).
        owner = 0
        checks: list[tuple[Path, GuestOSMount]] = []
        ops: list[MountOp] = []
        for m in table:
            t = m.mount_type
            shared_img = gos_dir / f"{m.image_file}.img"
            own_img = cont_dir / f"{m.image_file}.img"
            if t == M.SHARED:
                checks.append((shared_img, m))
                ops.append(MountOp("image", m.mount_point, str(shared_img), m.fs_type, True, m.mount_data))
            elif t == M.SHARED_RW:
                checks.append((shared_img, m))
                ops.append(MountOp("overlay", m.mount_point, fstype="tmpfs", readonly=False, lower=[str(shared_img)],
                                   lower_fstype=m.fs_type, upper_tmpfs=True))
            elif t == M.OVERLAY_RO:
                checks.append((shared_img, m))
                ops.append(MountOp("overlay", m.mount_point, lower=[str(shared_img)], lower_fstype=m.fs_type,
                                   over_existing=True))
            elif t == M.EMPTY and m.fs_type == "tmpfs":
                ops.append(MountOp("tmpfs", m.mount_point, fstype="tmpfs", readonly=False,
                                   data=f"size={max(m.def_size, 1)}m" + (f",{m.mount_data}" if m.mount_data else "")))
            elif t in (M.EMPTY, M.OVERLAY_RW):
                cont_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
                if not own_img.exists():
                    size = max(m.def_size, MIN_EMPTY_MB)
                    log.info("container %s: creating %s (%d MiB, %s)", ctx.container.name, own_img.name, size,
                             m.fs_type)
                    await asyncio.to_thread(create_empty_image, own_img, size, m.fs_type, owner)
                if t == M.EMPTY:
                    ops.append(MountOp("image", m.mount_point, str(own_img), m.fs_type, False, m.mount_data))
                else:
                    ops.append(MountOp("overlay", m.mount_point, fstype=m.fs_type, readonly=False,
                                       over_existing=True, upper_image=str(own_img), data=m.mount_data))
            elif t in (M.BIND_FILE, M.BIND_FILE_RW):
                if ctx.spec.uid_start is not None:
                    log.info("container %s: BIND_FILE %s skipped for a user-namespaced container (as the "
                             "original)", ctx.container.name, m.image_file)
                    continue
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

    async def cleanup(self, ctx: StartContext, rebooting: bool) -> None:
        """The container's file systems went with its mount namespace; the kernel detaches their
        loop devices (autoclear) a moment later. A STOPPED container holds none, so a next start,
        a wipe or a remove never meets its images still attached."""
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
