"""Device-mapper through `dmsetup` (tables on stdin), and what sysfs says about dm devices.

Listing reads sysfs (`/sys/block/dm-*/dm/{name,uuid}`), which needs no tool and no udev."""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass
from pathlib import Path

from cmld.crypt import tools
from cmld.crypt.tools import ToolError

MAPPER = Path("/dev/mapper")
CONTROL = MAPPER / "control"
SYS_BLOCK = Path("/sys/block")
UUID_PREFIX = "CML-"  # the dm UUID of every device cmld makes itself (verity: veritysetup's own)
NODE_WAIT = 10.0


@dataclass(frozen=True)
class DmDevice:
    name: str
    uuid: str
    kname: str  # dm-N
    slaves: tuple[str, ...]  # kernel names of the devices below (loopN, dm-M)


def available() -> str:
    """Why device-mapper cannot be used here ("" when it can): the kernel driver (opening the
    control node loads dm-mod where it is a module) and dmsetup."""
    try:
        fd = os.open(CONTROL, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        why = "no device-mapper in this kernel" if e.errno in (errno.ENODEV, errno.ENOENT, errno.ENXIO) else e.strerror
        return f"{CONTROL}: {why}"
    os.close(fd)
    for tool in ("dmsetup", "veritysetup"):
        if tools.which(tool) is None:
            return f"{tool} is not installed"
    return ""


def path(name: str) -> Path:
    return MAPPER / name


def _read(p: Path) -> str:
    try:
        return p.read_text().strip()
    except OSError:
        return ""


def devices() -> list[DmDevice]:
    out = []
    for d in sorted(SYS_BLOCK.glob("dm-*")) if SYS_BLOCK.is_dir() else []:
        name = _read(d / "dm" / "name")
        if not name:
            continue
        slaves = tuple(sorted(p.name for p in (d / "slaves").iterdir())) if (d / "slaves").is_dir() else ()
        out.append(DmDevice(name, _read(d / "dm" / "uuid"), d.name, slaves))
    return out


def find(name: str) -> DmDevice | None:
    return next((d for d in devices() if d.name == name), None)


def by_kname(kname: str) -> DmDevice | None:
    return next((d for d in devices() if d.kname == kname), None)


def holder_of(major_minor: str) -> DmDevice | None:
    """The dm device on top of block device `major:minor` (as dm-verity names its data device)."""
    holders = Path("/sys/dev/block") / major_minor / "holders"
    names = sorted(p.name for p in holders.iterdir()) if holders.is_dir() else []
    return by_kname(names[0]) if names else None


def create(name: str, table: str, uuid: str, *, readonly: bool = False) -> Path:
    """A new device with one table (given on stdin: it may hold keys); returns its node."""
    argv = ["dmsetup", "create", name, "--uuid", uuid] + (["--readonly"] if readonly else [])
    tools.run(argv, stdin=table.encode())
    node = path(name)
    deadline = time.monotonic() + NODE_WAIT
    while not node.exists():
        if time.monotonic() > deadline:
            tools.run(["dmsetup", "mknodes", name])  # no udev made it: make it ourselves
            if not node.exists():
                raise ToolError(f"dmsetup create {name}: no {node} appeared")
        time.sleep(0.02)
    return node


def remove(name: str) -> None:
    """Remove a device (retried while udev or a closing mount still holds it); no error if it is
    already gone."""
    if find(name) is None:
        return
    try:
        tools.run(["dmsetup", "remove", "--retry", name])
    except ToolError:
        if find(name) is not None:
            raise


def status(name: str) -> str:
    return tools.run(["dmsetup", "status", name]).strip()


def target_type(name: str) -> str:
    """The target of a device's first table line (`crypt`, `integrity`, `verity`)."""
    fields = status(name).split()
    return fields[2] if len(fields) > 2 else ""


def size_sectors(dev: str) -> int:
    """Size of a block device in 512-byte sectors."""
    fd = os.open(dev, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.lseek(fd, 0, os.SEEK_END) // 512
    finally:
        os.close(fd)
