"""What a killed cmld leaves of its volumes, found and removed by the next one before anything
starts: dm devices with the `CML-` dm UUID (integrity, crypt), the dm-verity devices of the
containers it had running (`<uuid>-<image>`), then any loop device still bound to an image under
cmld's directories with nothing on top of it (loop devices are autoclear and normally go with the
dm device that holds them; this catches the rest)."""

from __future__ import annotations

import logging
from pathlib import Path

from cmld.crypt import dm, tools
from cmld.crypt.stack import remove_devices
from cmld.crypt.verity import is_verity

log = logging.getLogger(__name__)
SYS_BLOCK = Path("/sys/block")


def stale_names(devices: list[dm.DmDevice], uuids: set[str]) -> list[str]:
    """Ours: every `CML-` device, and the verity devices named after a container that was running."""
    out = []
    for d in devices:
        if d.uuid.startswith(dm.UUID_PREFIX) or (is_verity(d) and any(d.name.startswith(f"{u}-") for u in uuids)):
            out.append(d.name)
    return out


def stale_loops(dirs: list[Path]) -> list[tuple[str, str]]:
    """(loopN, backing file) bound to a file under `dirs` with no holder (no dm device on it)."""
    out = []
    roots = [str(d.resolve()) + "/" for d in dirs]
    for loop in sorted(SYS_BLOCK.glob("loop*")) if SYS_BLOCK.is_dir() else []:
        try:
            backing = (loop / "loop" / "backing_file").read_text().strip()
        except OSError:
            continue
        holders = loop / "holders"
        if any(backing.startswith(r) for r in roots) and not (holders.is_dir() and any(holders.iterdir())):
            out.append((loop.name, backing))
    return out


def remove_stale(uuids: set[str], dirs: list[Path]) -> list[str]:
    """Remove what a previous cmld left; returns what was removed, logged per item."""
    if dm.available():
        return []
    done = []
    names = stale_names(dm.devices(), uuids)
    for failure in remove_devices(names):
        log.error("recovery: could not remove the stale dm device %s", failure)
    for name in names:
        if dm.find(name) is None:
            log.warning("recovery: removed the dm device %s left by a previous cmld", name)
            done.append(name)
    for loop, backing in stale_loops(dirs):
        try:
            tools.run(["losetup", "-d", f"/dev/{loop}"])
            log.warning("recovery: detached /dev/%s (%s) left by a previous cmld", loop, backing)
            done.append(loop)
        except tools.ToolError as e:
            log.error("recovery: could not detach /dev/%s: %s", loop, e)
    return done
