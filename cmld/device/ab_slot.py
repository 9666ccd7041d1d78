"""Where device.conf is read from, as the original's a_b_update_get_path_new: once the A/B update
is set up (device.conf.A and device.conf.B exist, the plain device.conf is gone), the slot the
firmware booted (EFI BootCurrent: entry 0 is "GyroidosA", 1 is "GyroidosB") picks
`device.conf.A` or `device.conf.B`; otherwise the plain `device.conf`.

BootCurrent is an efivarfs file: 4 bytes of attributes, then the entry number as a
little-endian u16.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cmld.device.efivars import EFI_GLOBAL, EFIVARS, EfiError, EfiVars

__all__ = ["EFIVARS", "EFI_GLOBAL", "boot_current", "device_conf_path"]
log = logging.getLogger(__name__)
SLOT_SUFFIX = {0: ".A", 1: ".B"}


def boot_current(efivars: Path) -> int | None:
    """The EFI BootCurrent entry, or None (no EFI, no such variable, a malformed one)."""
    try:
        return EfiVars(efivars).boot_current()
    except EfiError as e:
        log.warning("%s; ignored", e)
        return None


def device_conf_path(plain: Path, efivars: Path = EFIVARS) -> Path:
    """The device.conf to read. The plain file wins while it exists (the original's set-up stages
    before COMPLETE); with only the slot files, BootCurrent chooses; a boot from neither slot
    falls back to the plain path (whose absence means the strict defaults), as the original."""
    a, b = plain.with_name(plain.name + ".A"), plain.with_name(plain.name + ".B")
    if plain.exists() or not (a.exists() and b.exists()):
        return plain
    current = boot_current(efivars)
    suffix = SLOT_SUFFIX.get(current) if current is not None else None
    if suffix is None:
        log.error("device.conf.A and .B exist but the boot slot is unknown (EFI BootCurrent %s); "
                  "reading %s", "missing" if current is None else f"{current:04X}", plain)
        return plain
    chosen = plain.with_name(plain.name + suffix)
    log.info("A/B update: booted slot %s (BootCurrent %04X); device.conf is %s", suffix[1], current, chosen)
    return chosen
