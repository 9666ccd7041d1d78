"""cmld's uevent listener (the original's uevent.c), one for the device: a NETLINK_KOBJECT_UEVENT
socket in cmld's network namespace, every event handed to the hotplug handler of each running
container (`modules/usb.py`), and the way back: uevents injected into a container's own network
namespace, where its udev/mdev listens.

Only messages the kernel sent (netlink port id 0) are taken from cmld's namespace. `--uevent-netns`
points the listener at another namespace (an integration rig or a test that plays the kernel from
user space); there any sender in that namespace is believed, which is why it is an explicit option.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

from cmld import linux
from cmld.device.uevent import MAX_UEVENT, UEvent, UEventError, parse
from cmld.device.usb import SYSFS

log = logging.getLogger(__name__)
NETLINK_KOBJECT_UEVENT = 15
KERNEL_GROUP = 1

Handler = Callable[[UEvent], Awaitable[None]]


def uevent_socket_in(netns: str | None) -> socket.socket:
    """A uevent netlink socket created in the network namespace at `netns` (None: ours). The
    namespace of a socket is fixed at creation, so a short-lived thread enters it, makes the
    socket and leaves; cmld itself never changes namespace."""
    if netns is None:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_KOBJECT_UEVENT)
    out: list[socket.socket] = []
    errors: list[BaseException] = []

    def make() -> None:
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        target = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            linux.setns(target, linux.CLONE_NEWNET)
            try:
                out.append(socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                                         NETLINK_KOBJECT_UEVENT))
            finally:
                linux.setns(own, linux.CLONE_NEWNET)
        except BaseException as e:
            errors.append(e)
        finally:
            os.close(own)
            os.close(target)
    t = threading.Thread(target=make, name="uevent-netns")
    t.start()
    t.join()
    if errors:
        raise errors[0]
    return out[0]


def inject(netns: str, event: UEvent) -> None:
    """Send `event` to the uevent listeners in the network namespace at `netns` (the container's)."""
    s = uevent_socket_in(netns)
    try:
        s.sendto(event.raw, (0, KERNEL_GROUP))
    finally:
        s.close()


class HotplugHub:
    def __init__(self, sysfs: Path = SYSFS, netns: str | None = None) -> None:
        self.sysfs = sysfs
        self.netns = netns
        self.handlers: dict[str, Handler] = {}  # container uuid -> its hotplug handler
        self.stop_container: Callable[[str], Awaitable[None]] | None = None  # set by cmld's main
        self.sock: socket.socket | None = None
        self.events = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        try:
            sock = uevent_socket_in(self.netns)
            sock.bind((0, KERNEL_GROUP))
        except OSError as e:
            log.error("no uevent listener (USB hotplug and uevent forwarding are off): %s", e)
            return
        sock.setblocking(False)
        self.sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)
        log.info("uevent listener in %s", self.netns or "cmld's network namespace")

    def close(self) -> None:
        if self.sock is not None:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None

    def _readable(self) -> None:
        assert self.sock is not None
        try:
            data, (portid, _groups) = self.sock.recvfrom(MAX_UEVENT + 1)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:  # ENOBUFS: events were lost under load
            log.warning("uevent listener: %s", e)
            return
        if portid != 0 and self.netns is None:
            log.warning("uevent from user space (port id %d) ignored: only the kernel's count", portid)
            return
        try:
            event = parse(data)
        except UEventError as e:
            log.warning("malformed uevent ignored: %s", e)
            return
        self.events += 1
        for uuid, handler in list(self.handlers.items()):
            task = asyncio.ensure_future(self._run(uuid, handler, event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _run(uuid: str, handler: Handler, event: UEvent) -> None:
        try:
            await handler(event)
        except Exception:  # one container's failure must not stop the others' hotplug
            log.exception("container %s: handling uevent %s %s", uuid, event.action, event.devpath)
