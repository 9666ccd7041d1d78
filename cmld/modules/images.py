"""Image files of a container start: the size and SHA-256 check of GuestOS images against the
signed GuestOS config (streamed, in an executor), the free-space check, and file systems made on
a new image or volume."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import threading
from pathlib import Path

from cml_common.crashpoints import crash_point
from cml_common.messages.guestos_pb2 import GuestOSMount
from cmld.modules.base import StartError

HASH_CHUNK = 1 << 20
FREE_SPACE_MARGIN = 1.1  # image plus metadata headroom, as the original's space check


class Cancelled(Exception):
    """A background hash was told to stop (its container went away)."""


def _digests(path: Path, sha1: bool, stop: threading.Event | None = None) -> tuple[str, str]:
    """(SHA-256, SHA-1 or "") of a file in one streamed pass."""
    h256 = hashlib.sha256()
    h1 = hashlib.sha1(usedforsecurity=False) if sha1 else None
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(HASH_CHUNK)
        view = memoryview(buf)
        while n := f.readinto(buf):
            if stop is not None and stop.is_set():
                raise Cancelled(str(path))
            h256.update(view[:n])
            if h1 is not None:
                h1.update(view[:n])
    return h256.hexdigest(), h1.hexdigest() if h1 is not None else ""


def sha256_file(path: Path, stop: threading.Event | None = None) -> str:
    return _digests(path, sha1=False, stop=stop)[0]


def hash_image_path(image: Path) -> Path:
    """`<img>.hash.img` next to `<img>.img` (the dm-verity hash tree)."""
    return image.with_name(image.name[: -len(".img")] + ".hash.img")


def check_image(path: Path, mount: GuestOSMount, *, measure: bool = False, quick: bool = False) -> bytes | None:
    """Size and hash as the signed GuestOS config says, else a StartError naming the image.
    Returns the image's SHA-256 when it was computed (always with `measure`: the TPM measurement
    list gets the digest of what is mounted, not of what the config claims). `quick` (an image
    opened with dm-verity): size and hash tree only, as the original's non-thorough check; the
    full hash follows in the background."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise StartError(f"image {path.name} of the GuestOS is missing ({path})") from None
    if mount.HasField("image_size") and size != mount.image_size:
        raise StartError(f"image {path.name} has {size} bytes, the GuestOS config says {mount.image_size}")
    if quick:
        hash_img = hash_image_path(path)
        if not hash_img.is_file() or hash_img.stat().st_size == 0:
            raise StartError(f"the dm-verity hash tree {hash_img.name} of {path.name} is missing or empty")
        return None
    if not (mount.image_sha2_256 or mount.image_sha1 or measure):
        return None
    actual, sha1 = _digests(path, sha1=bool(mount.image_sha1) and not mount.image_sha2_256)
    if mount.image_sha2_256 and actual != mount.image_sha2_256.lower():
        raise StartError(f"image {path.name} is corrupted or tampered with: SHA-256 {actual} does not "
                         f"match the GuestOS config ({mount.image_sha2_256})")
    if sha1 and sha1 != mount.image_sha1.lower():
        raise StartError(f"image {path.name} is corrupted or tampered with (SHA-1 mismatch)")
    return bytes.fromhex(actual)


def check_space(directory: Path, name: str, size_mb: int) -> None:
    """Room for an image of `size_mb` plus 10 % (the dm-integrity meta image), as the original."""
    st = os.statvfs(directory)
    free = st.f_bavail * st.f_frsize
    if int(size_mb * (1 << 20) * FREE_SPACE_MARGIN) > free:
        raise StartError(f"not enough space for {name}: {size_mb} MiB needed (+10 %), "
                         f"{free >> 20} MiB free on {directory}")


def mkfs(target: Path, fstype: str, owner: int, name: str) -> None:
    """A new file system on an image file or a block device."""
    tool = shutil.which(f"mkfs.{fstype}")
    if tool is None:
        raise StartError(f"cannot format {name}: mkfs.{fstype} is not installed")
    args = [tool, "-q", "-F"] if fstype.startswith("ext") else [tool, "-q", "-f"]
    if fstype.startswith("ext"):
        args += ["-E", f"root_owner={owner}:{owner}"]
    res = subprocess.run([*args, str(target)], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise StartError(f"mkfs.{fstype} {name} failed: {(res.stderr or res.stdout).strip()}")


def create_empty_image(path: Path, size_mb: int, fstype: str, owner: int) -> None:
    """An unencrypted image: sparse file, formatted, renamed into place only when complete, so a
    crash mid-way leaves no half-formatted image that a later start would mount."""
    check_space(path.parent, path.name, size_mb)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)  # left by a crash mid-format
    try:
        with open(tmp, "wb") as f:
            f.truncate(size_mb << 20)
        mkfs(tmp, fstype, owner, path.name)
        crash_point("start.mkfs")
        os.replace(tmp, path)
    except OSError as e:
        raise StartError(f"creating {path.name}: {e.strerror}") from None
    finally:
        tmp.unlink(missing_ok=True)
