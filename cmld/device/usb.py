"""USB devices named by a container's `usb_configs` (`id: "vvvv:pppp"`, `serial`), found in sysfs
as the original's c_hotplug does (/sys/bus/usb/devices/*: idVendor, idProduct, serial, dev)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

SYSFS = Path("/sys")


def parse_usb_id(text: str) -> tuple[int, int]:
    vendor, sep, product = text.strip().partition(":")
    try:
        if not sep or len(vendor) != 4 or len(product) != 4:
            raise ValueError
        return int(vendor, 16), int(product, 16)
    except ValueError:
        raise ValueError(f"usb_configs id {text[:32]!r} is not vvvv:pppp (hex)") from None


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def serial_of(devpath: str, sysfs: Path = SYSFS) -> str:
    """The iSerial of the USB device at `devpath` (a uevent's DEVPATH), or ""."""
    rel = devpath.lstrip("/")
    if ".." in rel.split("/"):
        return ""
    return _read(sysfs / rel / "serial")


@dataclass
class UsbDevice:
    devpath: str  # below /sys, as in a uevent
    vendor: int
    product: int
    serial: str
    major: int
    minor: int
    devname: str  # below /dev


def scan(sysfs: Path = SYSFS) -> list[UsbDevice]:
    """The USB devices present now (coldplug)."""
    found: list[UsbDevice] = []
    base = sysfs / "bus" / "usb" / "devices"
    try:
        entries = sorted(os.listdir(base))
    except OSError:
        return found
    for name in entries:
        d = (base / name).resolve()
        try:
            vendor, product = int(_read(d / "idVendor"), 16), int(_read(d / "idProduct"), 16)
            major, minor = (int(x) for x in _read(d / "dev").split(":"))
        except ValueError:
            continue  # an interface, not a device
        uevent = {k: v for k, _, v in (line.partition("=") for line in _read(d / "uevent").splitlines())}
        bus, dev = int(_read(d / "busnum") or 0), int(_read(d / "devnum") or 0)
        devname = uevent.get("DEVNAME") or f"bus/usb/{bus:03d}/{dev:03d}"
        found.append(UsbDevice("/" + str(d.relative_to(sysfs)), vendor, product, _read(d / "serial"), major, minor,
                               devname))
    return found
