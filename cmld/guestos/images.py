"""Which files make a GuestOS, and whether they are all there (the original's quick
`guestos_images_are_complete`: every image exists with the size its config states, and a dm-verity
hash tree exists where the config names a root hash). The thorough check (hashes) is done at
push and at start."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cml_common.messages.guestos_pb2 import GuestOSConfig, GuestOSMount

M = GuestOSMount
# Images that belong to the GuestOS and are fetched from its update server (the others are made
# per container or are not images at all). STORE_ONLY images are fetched and kept, never mounted.
DOWNLOADED = frozenset({M.SHARED, M.SHARED_RW, M.OVERLAY_RO, M.FLASH, M.STORE_ONLY})


@dataclass(frozen=True)
class ImageFile:
    """One file of a GuestOS: `<image_file>.img`, or its `<image_file>.hash.img` (verity tree)."""

    mount: GuestOSMount
    name: str

    @property
    def is_hash_tree(self) -> bool:
        return self.name.endswith(".hash.img")


def image_files(cfg: GuestOSConfig) -> list[ImageFile]:
    """The files to fetch, a verity hash tree before its image (as the original downloads them)."""
    out: list[ImageFile] = []
    for m in cfg.mounts:
        if m.mount_type not in DOWNLOADED:
            continue
        if m.image_verity_sha256:
            out.append(ImageFile(m, f"{m.image_file}.hash.img"))
        out.append(ImageFile(m, f"{m.image_file}.img"))
    return out


def problem(directory: Path, f: ImageFile) -> str | None:
    """Why this file is not usable as it is on disk, or None."""
    path = directory / f.name
    try:
        size = path.stat().st_size
    except OSError:
        return f"{f.name} is missing"
    if f.is_hash_tree:
        return None if size > 0 else f"{f.name} is empty"
    if f.mount.HasField("image_size") and size != f.mount.image_size:
        return f"{f.name} has {size} bytes, the config says {f.mount.image_size}"
    return None


def missing(directory: Path, cfg: GuestOSConfig) -> list[ImageFile]:
    """The files of `cfg` that are absent or of the wrong size under `directory`."""
    return [f for f in image_files(cfg) if problem(directory, f) is not None]


def is_complete(directory: Path, cfg: GuestOSConfig) -> bool:
    return not missing(directory, cfg)
