"""USB devices and uevents of one container (the original's c_hotplug).

`usb_configs { id: "vvvv:pppp" serial: "..." assign: bool type: GENERIC|TOKEN|PIN_ENTRY }`:
a GENERIC device with that vendor, product and serial is allowed to the container (exclusively
with `assign`), present ones at start (coldplug from sysfs) and later ones when the kernel
announces them, and its node is made at its /dev name in the container; on removal the node goes
and the access is withdrawn. A TOKEN device is not mapped (scd drives it) and pulling it stops the
container (token_detach); PIN_ENTRY devices are never mapped, as in the original.

Every uevent of a device the container may use, and the usb_interface events of its USB devices,
are injected into the container's own network namespace, so its udev or mdev sees them (the
original injects every usb_interface event into every container).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat

from cml_common.messages.container_pb2 import ContainerUsbType
from cmld import linux
from cmld.device.uevent import UEvent
from cmld.device.usb import parse_usb_id, scan, serial_of
from cmld.launcher.spec import DevNode
from cmld.modules.automount import automount
from cmld.modules.base import Module, StartError
from cmld.modules.context import StartContext
from cmld.modules.usb_hub import HotplugHub, inject

log = logging.getLogger(__name__)
NODE_MODE = 0o660


def make_node(root_pid: int, devname: str, dev_type: str, major: int, minor: int, uid: int) -> None:
    """mknod /dev/<devname> in the container (directories made as needed, owned by its root)."""
    root = os.open(f"/proc/{root_pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        d = linux.open_in_root(root, "/dev", os.O_RDONLY | os.O_DIRECTORY)
    finally:
        os.close(root)
    try:
        *parents, name = [p for p in devname.split("/") if p]
        if not name or ".." in parents or name == "..":
            raise OSError(errno.EINVAL, f"bad device name {devname!r}")
        for p in parents:
            try:
                os.mkdir(p, 0o755, dir_fd=d)
                os.chown(p, uid, uid, dir_fd=d, follow_symlinks=False)
            except FileExistsError:
                pass
            nd = os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=d)
            os.close(d)
            d = nd
        kind = stat.S_IFBLK if dev_type == "b" else stat.S_IFCHR
        try:
            os.mknod(name, kind | NODE_MODE, os.makedev(major, minor), dir_fd=d)
        except FileExistsError:
            os.unlink(name, dir_fd=d)
            os.mknod(name, kind | NODE_MODE, os.makedev(major, minor), dir_fd=d)
        os.chown(name, uid, uid, dir_fd=d, follow_symlinks=False)
    finally:
        os.close(d)


def remove_node(root_pid: int, devname: str) -> None:
    root = os.open(f"/proc/{root_pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        parent, _, name = f"/dev/{devname}".rpartition("/")
        d = linux.open_in_root(root, parent, os.O_RDONLY | os.O_DIRECTORY)
    finally:
        os.close(root)
    try:
        st = os.stat(name, dir_fd=d, follow_symlinks=False)
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            os.unlink(name, dir_fd=d)
    finally:
        os.close(d)


class UsbModule(Module):
    name = "usb"

    def __init__(self, hub: HotplugHub) -> None:
        self.hub = hub
        self.ctx: StartContext | None = None
        self.configs: list[tuple[int, int, str, bool, int]] = []  # vendor, product, serial, assign, type
        self.mapped: dict[str, str] = {}  # devpath -> device rule granted for it
        self.tokens: set[str] = set()  # devpaths of this container's token(s)
        self._tasks: set[asyncio.Task[bool]] = set()

    def _matches(self, vendor: int, product: int, serial: str) -> list[tuple[bool, int]]:
        return [(assign, kind) for v, p, s, assign, kind in self.configs if (v, p, s) == (vendor, product, serial)]

    async def prepare(self, ctx: StartContext) -> None:
        self.configs = []
        for u in ctx.container.config.usb_configs:
            try:
                vendor, product = parse_usb_id(u.id)
            except ValueError as e:
                raise StartError(str(e)) from None
            self.configs.append((vendor, product, u.serial, u.assign, u.type))
        if not self.configs:
            return
        for dev in scan(self.hub.sysfs):
            for assign, kind in self._matches(dev.vendor, dev.product, dev.serial):
                if kind == ContainerUsbType.TOKEN:
                    self.tokens.add(dev.devpath)
                elif kind == ContainerUsbType.GENERIC:
                    rule = f"c {dev.major}:{dev.minor} rwm"
                    ctx.extra_device_rules.append((rule, assign))
                    ctx.extra_nodes.append(DevNode(dev.devname, "c", dev.major, dev.minor, NODE_MODE))
                    self.mapped[dev.devpath] = rule
                    log.info("container %s: USB %04x:%04x %s %s (%s)", ctx.container.name, dev.vendor, dev.product,
                             dev.serial, "assigned" if assign else "allowed", dev.devname)

    async def post_exec(self, ctx: StartContext) -> None:
        self.ctx = ctx
        self.hub.handlers[ctx.uuid] = self.handle

    async def cleanup(self, ctx: StartContext, rebooting: bool) -> None:
        self.hub.handlers.pop(ctx.uuid, None)
        for task in list(self._tasks):
            task.cancel()
        self.ctx = None
        self.mapped.clear()
        self.tokens.clear()

    async def handle(self, ev: UEvent) -> None:
        ctx = self.ctx
        if ctx is None or ctx.devices is None:
            return
        if ev.subsystem == "usb" and ev.devtype == "usb_interface":
            # Only the interfaces of a device this container has: the original forwards every
            # usb_interface event to every container, which tells each one what is plugged for
            # the others (vendor, product, interface classes).
            if self._owns_parent(ev.devpath):
                self._forward(ctx, ev)
            return
        withdraw = None
        if ev.subsystem == "usb" and ev.devtype == "usb_device":
            withdraw = await self._usb_device(ctx, ev)
        dev = ev.device
        if dev is None or not ctx.devices.is_allowed(ev.dev_type, *dev):
            return
        uid = ctx.spec.uid_start or 0
        try:
            if ev.action == "add" and ev.devname:
                make_node(ctx.init_pid, ev.devname, ev.dev_type, dev[0], dev[1], uid)
                if ev.dev_type == "b":
                    self._automount(ctx, ev.devname)
            elif ev.action == "remove" and ev.devname:
                remove_node(ctx.init_pid, ev.devname)
        except OSError as e:
            log.warning("container %s: device node /dev/%s: %s", ctx.container.name, ev.devname, e)
        self._forward(ctx, ev)
        if withdraw is not None:
            ctx.devices.withdraw(ctx, withdraw)
            log.info("container %s: USB device %s removed, %s withdrawn", ctx.container.name, ev.devpath, withdraw)

    def _owns_parent(self, devpath: str) -> bool:
        """An interface's DEVPATH is its device's plus one component (`.../1-1/1-1:1.0`)."""
        parent = devpath.rsplit("/", 1)[0]
        return parent in self.mapped or parent in self.tokens

    async def _usb_device(self, ctx: StartContext, ev: UEvent) -> str | None:
        """Grants for an added device; for a removed one, the rule to withdraw once its node is gone."""
        assert ctx.devices is not None
        if ev.action == "remove":
            if ev.devpath in self.tokens:
                self.tokens.discard(ev.devpath)
                log.warning("container %s: its token %s was pulled: stopping it", ctx.container.name, ev.devpath)
                if self.hub.stop_container is not None:
                    await self.hub.stop_container(ctx.uuid)
            return self.mapped.pop(ev.devpath, None)
        ids, dev = ev.usb_id, ev.device
        if ev.action != "add" or ids is None or dev is None:
            return None
        serial = serial_of(ev.devpath, self.hub.sysfs)
        for assign, kind in self._matches(ids[0], ids[1], serial):
            if kind == ContainerUsbType.TOKEN:
                self.tokens.add(ev.devpath)
            elif kind == ContainerUsbType.GENERIC:
                rule = f"c {dev[0]}:{dev[1]} rwm"
                try:
                    ctx.devices.grant(ctx, rule, assign)
                except ValueError as e:
                    log.warning("container %s: USB %04x:%04x %s not mapped: %s", ctx.container.name, *ids, serial, e)
                    continue
                self.mapped[ev.devpath] = rule
                log.info("container %s: USB %04x:%04x %s plugged: %s", ctx.container.name, ids[0], ids[1], serial,
                         "assigned" if assign else "allowed")
        return None

    def _automount(self, ctx: StartContext, devname: str) -> None:
        """An allowed block device appeared: mount it at /media/external/<name> inside (c_automount)."""
        task = asyncio.ensure_future(automount(ctx.container.name, ctx.init_pid, devname, ctx.spec.uid_start or 0))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _forward(self, ctx: StartContext, ev: UEvent) -> None:
        if not ctx.netns_path:
            return  # shares cmld's network namespace: it hears the kernel itself
        try:
            inject(ctx.netns_path, ev)
        except OSError as e:
            log.warning("container %s: uevent not forwarded: %s", ctx.container.name, e)
