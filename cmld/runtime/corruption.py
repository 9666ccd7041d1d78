"""Tampered volumes of running containers: the kernel reports a block that fails its dm-integrity
tag or its dm-verity hash on /dev/kmsg (the container itself gets EIO); this monitor maps the
device to its container, logs device, sector and container, and ends that container as corrupted:
it is killed and becomes ZOMBIE, until a wipe (writable volumes) or a repaired GuestOS image.
No other container is touched. The background check of verity images reports here too."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from cmld.crypt import dm, kmsg

log = logging.getLogger(__name__)


class Corruptible(Protocol):
    """The part of a compartment this needs (the registry's compartments)."""

    corrupted: str  # set: the container becomes ZOMBIE once it is down

    @property
    def name(self) -> str: ...

    def kill(self) -> None: ...


@dataclass(frozen=True)
class Watched:
    uuid: str
    image: str


class CorruptionMonitor:
    def __init__(self, compartments: Mapping[str, Corruptible]) -> None:
        """`compartments`: uuid -> compartment (the registry's own dict, read at each event)."""
        self.compartments = compartments
        self.watched: dict[str, Watched] = {}
        self.reader: kmsg.KmsgReader | None = None

    def start(self) -> None:
        """Follow the kernel log from now on (only where device-mapper is used)."""
        try:
            self.reader = kmsg.KmsgReader()
        except OSError as e:
            log.error("cannot read the kernel log (%s): tampered volumes of running containers will only "
                      "show as I/O errors inside them", e)
            return
        asyncio.get_running_loop().add_reader(self.reader.fd, self._readable)

    def close(self) -> None:
        if self.reader is not None:
            asyncio.get_running_loop().remove_reader(self.reader.fd)
            self.reader.close()
            self.reader = None

    # ------------------------------------------------------------------ the modules' side

    def watch(self, dm_name: str, uuid: str, image: str) -> None:
        self.watched[dm_name] = Watched(uuid, image)

    def forget(self, uuid: str) -> None:
        for name in [n for n, w in self.watched.items() if w.uuid == uuid]:
            del self.watched[name]

    def report(self, uuid: str, message: str, *, corrupted: bool) -> None:
        comp = self.compartments.get(uuid)
        if comp is None:
            return
        if corrupted and not comp.corrupted:
            comp.corrupted = message
        comp.kill()

    # ------------------------------------------------------------------ the kernel's side

    def _readable(self) -> None:
        assert self.reader is not None
        try:
            records = self.reader.read_available()
        except OSError as e:
            log.error("reading the kernel log failed (%s); no longer following it", e)
            self.close()
            return
        for rec in records:
            event = kmsg.parse(rec)
            if event is not None:
                self.handle(event)

    def handle(self, event: kmsg.DmCorruption) -> None:
        dev = dm.holder_of(event.device) if event.target == "verity" else dm.by_kname(event.device)
        w = self.watched.get(dev.name) if dev is not None else None
        if dev is None or w is None:
            log.debug("dm error on a device that is not a running container's: %s", event.line)
            return
        comp = self.compartments.get(w.uuid)
        name = comp.name if comp is not None else "?"
        message = (f"volume {w.image} is corrupted: dm-{event.target} on {dev.kname} (/dev/mapper/{dev.name}) "
                   f"failed at {event.where}")
        log.error("container %s (%s): %s (kernel: %s)", name, w.uuid, message, event.line)
        self.report(w.uuid, message, corrupted=True)
