"""Kernel uevents (the original's common/uevent.c): the netlink message format
`ACTION@DEVPATH\\0KEY=VALUE\\0...` parsed into what cmld's hotplug handling needs."""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_UEVENT = 8192  # the kernel's UEVENT_BUFFER_SIZE is 2048; udev's messages are larger


class UEventError(ValueError):
    """Not a kernel uevent."""


@dataclass
class UEvent:
    action: str
    devpath: str
    env: dict[str, str] = field(default_factory=dict)
    raw: bytes = b""

    @property
    def subsystem(self) -> str:
        return self.env.get("SUBSYSTEM", "")

    @property
    def devtype(self) -> str:
        return self.env.get("DEVTYPE", "")

    @property
    def devname(self) -> str:
        """Relative to /dev (newer kernels and udev may prefix it with /dev/)."""
        name = self.env.get("DEVNAME", "")
        return name[5:] if name.startswith("/dev/") else name

    @property
    def device(self) -> tuple[int, int] | None:
        try:
            return int(self.env["MAJOR"]), int(self.env["MINOR"])
        except (KeyError, ValueError):
            return None

    @property
    def dev_type(self) -> str:
        return "b" if self.devtype in ("disk", "partition") or self.subsystem == "block" else "c"

    @property
    def usb_id(self) -> tuple[int, int] | None:
        """(vendor, product) of a usb_device event, from PRODUCT=vvvv/pppp/bcd (hex)."""
        parts = self.env.get("PRODUCT", "").split("/")
        try:
            return int(parts[0], 16), int(parts[1], 16)
        except (IndexError, ValueError):
            return None


def parse(data: bytes) -> UEvent:
    if len(data) > MAX_UEVENT:
        raise UEventError("uevent too large")
    fields = data.split(b"\0")
    head = fields[0].decode("utf-8", "replace")
    action, at, devpath = head.partition("@")
    if not at or not action or not devpath.startswith("/"):
        raise UEventError(f"not a kernel uevent: {head[:80]!r}")
    env: dict[str, str] = {}
    for f in fields[1:]:
        key, eq, value = f.decode("utf-8", "replace").partition("=")
        if eq and key:
            env[key] = value
    if env.get("ACTION", action) != action or env.get("DEVPATH", devpath) != devpath:
        raise UEventError("uevent header and fields disagree")
    if ".." in devpath.split("/"):
        raise UEventError("uevent DEVPATH with ..")
    return UEvent(action, devpath, env, data)
