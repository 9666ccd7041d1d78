"""dm-verity for GuestOS images (the original's common/verity.c), through `veritysetup`: the image
and its `<img>.hash.img` (with the superblock `veritysetup format` writes) become a read-only
device `<container uuid>-<image>` checked block by block against the root hash from the signed
GuestOS config. The table is the original's: no optional arguments, so a corrupted block is an
I/O error (never ignored, never "restart"). veritysetup attaches the loop devices (autoclear) and
gives the device the dm UUID `CRYPT-VERITY-<hash uuid>-<name>`."""

from __future__ import annotations

import re
from pathlib import Path

from cmld.crypt import dm, tools
from cmld.crypt.tools import ToolError

ROOT_HASH = re.compile(r"^[0-9a-fA-F]{64}$")
VERITY_UUID_PREFIX = "CRYPT-VERITY-"


def is_verity(dev: dm.DmDevice) -> bool:
    return dev.uuid.startswith(VERITY_UUID_PREFIX)


def open_verity(name: str, image: Path, hash_image: Path, root_hash: str) -> Path:
    """The verified device; ToolError if the root hash does not match the hash tree (veritysetup
    checks the top level at open) or the images cannot be used."""
    if not ROOT_HASH.match(root_hash):
        raise ToolError(f"verity root hash of {image.name} is not 64 hex digits")
    existing = dm.find(name)
    if existing is not None and is_verity(existing) and dm.path(name).exists():
        return dm.path(name)  # kept over a container reboot
    tools.run(["veritysetup", "open", str(image), name, str(hash_image), root_hash.lower()])
    state = healthy(name)
    if not state:
        close_verity(name)
        raise ToolError(f"dm-verity device {name} reports corruption right after opening")
    return dm.path(name)


def healthy(name: str) -> bool:
    """dmsetup status ends in V (verified) or C (a corrupted block was read)."""
    fields = dm.status(name).split()
    return bool(fields) and fields[-1] == "V"


def close_verity(name: str) -> None:
    dm.remove(name)
