"""Which dm mode a container's writable images use (the original's c_vol_set_dm_mode), decided at
every start from what is on disk, so a wipe can change it:

- `not-stacked` in the container's image directory: INTEGRITY_ONLY for c0, INTEGRITY_ENCRYPT else;
- images there already: with `<img>.meta.img` files the original's legacy stacked AUTHENC; without
  any, images this cmld made unencrypted (ours: NOT_IMPLEMENTED, kept until a wipe);
- nothing there yet: `not-stacked` is created and INTEGRITY_* used, when this host can encrypt
  (device-mapper) and there is a key (a token, or c0's key file); otherwise plain images
  (NOT_IMPLEMENTED), with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cml_common.messages.container_pb2 import CryptfsMode

NOT_STACKED = "not-stacked"
META_SUFFIX = ".meta.img"


@dataclass(frozen=True)
class ModeChoice:
    mode: int
    reason: str = ""  # why the images are not encrypted (NOT_IMPLEMENTED) or cannot be opened
    create_marker: bool = False  # a fresh container: `not-stacked` is to be written now
    usable: bool = True  # False: the images are encrypted but cannot be opened here (reason says why)


def _images(d: Path) -> list[Path]:
    return sorted(d.glob("*.img")) if d.is_dir() else []


def choose(images_dir: Path, *, is_c0: bool, dm_unavailable: str, has_key: bool) -> ModeChoice:
    stacked = CryptfsMode.INTEGRITY_ONLY if is_c0 else CryptfsMode.INTEGRITY_ENCRYPT
    imgs = _images(images_dir)
    if (images_dir / NOT_STACKED).exists():
        mode = stacked
    elif any(p.name.endswith(META_SUFFIX) for p in imgs):
        mode = CryptfsMode.AUTHENC
    elif imgs:
        return ModeChoice(CryptfsMode.NOT_IMPLEMENTED, "its images were made unencrypted (wipe the container to "
                                                       "encrypt them)")
    elif dm_unavailable:
        return ModeChoice(CryptfsMode.NOT_IMPLEMENTED, f"device-mapper is not usable here ({dm_unavailable})")
    elif not has_key:
        return ModeChoice(CryptfsMode.NOT_IMPLEMENTED, "it has no token, so no key to encrypt with")
    else:
        return ModeChoice(stacked, create_marker=True)
    if dm_unavailable:
        return ModeChoice(mode, f"its images are {CryptfsMode.Name(mode)} but device-mapper is not usable here "
                                f"({dm_unavailable})", usable=False)
    if not has_key:
        return ModeChoice(mode, f"its images are {CryptfsMode.Name(mode)} but it has no key (no token)",
                          usable=False)
    return ModeChoice(mode)


def status_mode(images_dir: Path, *, is_c0: bool, dm_unavailable: str, has_key: bool) -> int:
    """What `state`/`list` report, without touching the disk."""
    return choose(images_dir, is_c0=is_c0, dm_unavailable=dm_unavailable, has_key=has_key).mode
