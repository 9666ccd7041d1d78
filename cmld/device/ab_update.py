"""The A/B EFI boot-slot update, as the original's daemon/a_b_update (built with A_B_UPDATE=y; here
cmld's `--a-b-update`): two kernels on the ESP, two boot entries, a kernel update always goes to
the slot that is not running and is booted once through BootNext; only a boot that brings c0 up
makes that slot the default (BootOrder). A kernel that does not boot leaves BootOrder as it was,
so the firmware's next boot is the old slot again.

Files and entries as the original: `<esp>/EFI/BOOT/BOOTX64.EFI` (slot A) and `BOOTX64.EFI.B`,
`device.conf.A` / `.B` beside the plain `device.conf`, `Boot0000` "GyroidosA" and `Boot0001`
"GyroidosB" (HD(ESP)/File(\\EFI\\BOOT\\...)). Set-up is staged with a reboot in between:

    NONE      nothing set up: copy kernel A to B and device.conf to .A and .B, write both entries,
              BootOrder 0000,0001, reboot
    STAGE_1   all of that exists, but this boot was not from either entry: reboot (once, see below)
    STAGE_2   booted from an entry: the plain device.conf is removed
    COMPLETE  device.conf is read from the booted slot's file (ab_slot.py)

Where we differ: the original reboots in STAGE_1 on every start, so a firmware that never boots
our entries reboots forever; here a marker allows one such reboot, then cmld carries on without
A/B and says why. A kernel update from slot B to slot A is written to slot A's kernel
(`BOOTX64.EFI`); the original appends ".A" to the path, a file no entry boots. And the original
says nothing when an updated slot does not boot (the firmware just falls back to BootOrder);
here the slot BootNext named is kept in a marker, and the next start logs whether the firmware
booted it or fell back (proven on OVMF in tests/vm/test_ab_update.py).
"""

from __future__ import annotations

import enum
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from cml_common.fsutil import write_atomic
from cmld.device.efivars import LOAD_OPTION_ACTIVE, EfiError, EfiVars, LoadOption, esp_partition, file_device_path
from cmld.errors import InstallError

log = logging.getLogger(__name__)
ESP = Path("/boot")
ESP_DEVICE = Path("/dev/disk/by-label/boot")
KERNEL_DIR = ("EFI", "BOOT")
KERNEL = "BOOTX64.EFI"
REBOOT_MARKER = ".ab-update-reboot"
PENDING_MARKER = ".ab-update-pending"  # the slot BootNext names after a kernel update, until it is known how it booted


class Slot(enum.IntEnum):
    A = 0
    B = 1

    @property
    def other(self) -> Slot:
        return Slot.B if self is Slot.A else Slot.A

    @property
    def suffix(self) -> str:
        return ".A" if self is Slot.A else ".B"

    @property
    def label(self) -> str:
        return f"Gyroidos{self.name}"


class Stage(enum.IntEnum):
    NONE = 0
    STAGE_1 = 1
    STAGE_2 = 2
    COMPLETE = 3


@dataclass
class ABUpdate:
    efi: EfiVars
    device_conf: Path  # the plain device.conf
    esp: Path = ESP
    esp_device: Path = ESP_DEVICE

    # ------------------------------------------------------------------ where things are

    def kernel(self, slot: Slot) -> Path:
        """Slot A's kernel has no suffix (the firmware's default path), slot B's has `.B`."""
        return self.esp.joinpath(*KERNEL_DIR, KERNEL + ("" if slot is Slot.A else slot.suffix))

    @staticmethod
    def efi_path(slot: Slot) -> str:
        return "\\" + "\\".join(KERNEL_DIR) + "\\" + KERNEL + ("" if slot is Slot.A else slot.suffix)

    def conf(self, slot: Slot) -> Path:
        return self.device_conf.with_name(self.device_conf.name + slot.suffix)

    @property
    def marker(self) -> Path:
        return self.device_conf.with_name(REBOOT_MARKER)

    @property
    def pending(self) -> Path:
        return self.device_conf.with_name(PENDING_MARKER)

    def current(self) -> Slot | None:
        """The slot the firmware booted (BootCurrent 0000 or 0001), None for any other entry."""
        try:
            bc = self.efi.boot_current()
        except EfiError as e:
            log.warning("A/B update: %s", e)
            return None
        return Slot(bc) if bc in (0, 1) else None

    def entry(self, slot: Slot) -> LoadOption:
        return LoadOption(LOAD_OPTION_ACTIVE, slot.label,
                          file_device_path(esp_partition(self.esp_device), self.efi_path(slot)))

    def entries_set(self) -> bool:
        try:
            return all(self.efi.load_option(s) == self.entry(s) for s in Slot)
        except EfiError as e:
            log.warning("A/B update: boot entries cannot be checked: %s", e)
            return False

    # ------------------------------------------------------------------ set-up

    def stage(self) -> Stage:
        if not all(p.is_file() for p in (self.kernel(Slot.A), self.kernel(Slot.B), self.conf(Slot.A),
                                          self.conf(Slot.B))) or not self.entries_set():
            return Stage.NONE
        if self.current() is None:
            return Stage.STAGE_1
        if self.device_conf.exists():
            return Stage.STAGE_2
        return Stage.COMPLETE

    def init(self) -> bool:
        """Moves the set-up on by one stage; True when the device has to reboot now. EfiError or
        OSError when a step fails (what was copied by that step is removed again)."""
        stage = self.stage()
        log.info("A/B update: set-up is in stage %d/%d (%s)", stage, Stage.COMPLETE, stage.name)
        if stage is Stage.NONE:
            self.marker.unlink(missing_ok=True)
            self._copy(self.kernel(Slot.A), self.kernel(Slot.B))
            self._copy(self.device_conf, self.conf(Slot.A))
            self._copy(self.device_conf, self.conf(Slot.B))
            for s in Slot:
                self.efi.set_load_option(s, self.entry(s))
            self.efi.set_boot_order([Slot.A, Slot.B])
            stage = Stage.STAGE_1
        if stage is Stage.STAGE_1:
            if self.marker.exists():
                log.error("A/B update: this boot was again not from GyroidosA/B (EFI BootCurrent %s) after the "
                          "reboot that should have used them; no further reboot, cmld runs without A/B update",
                          self._boot_current_text())
                return False
            self.marker.write_bytes(b"")
            log.warning("A/B update: set up; rebooting into boot entry GyroidosA")
            return True
        self.marker.unlink(missing_ok=True)
        if stage is Stage.STAGE_2:
            self.device_conf.unlink()
            log.info("A/B update: booted from a slot entry (BootCurrent %s); the plain device.conf is removed, "
                     "set-up complete", self._boot_current_text())
        self.report_update_boot()
        return False

    def report_update_boot(self) -> None:
        """After a kernel update's reboot: did the firmware boot the updated slot (BootNext), or
        fall back to BootOrder's first because it could not start it? Logged once, then forgotten."""
        try:
            with self.pending.open("rb") as f:
                name = f.read(16).decode("ascii", errors="replace").strip()
        except FileNotFoundError:
            return
        except OSError as e:
            log.warning("A/B update: %s cannot be read (%s); removed", self.pending, e.strerror)
            self._forget_pending()
            return
        want = Slot.__members__.get(name)
        if want is None:
            log.warning("A/B update: %s names no slot (%r); removed", self.pending, name[:20])
            self._forget_pending()
            return
        try:
            boot_next = self.efi.boot_next()
        except EfiError as e:
            log.warning("A/B update: %s", e)
            boot_next = None
        if boot_next == want:  # no reboot since the update (cmld restarted): still to come
            log.info("A/B update: slot %s's kernel update is booted at the next reboot (BootNext %04X)",
                     want.name, want)
            return
        self._forget_pending()
        cur = self.current()
        if cur is want:
            log.warning("A/B update: this boot is slot %s's kernel update, started once through BootNext; it becomes "
                        "the default when c0 comes up", want.name)
        else:
            log.error("A/B update: slot %s's kernel update did not boot: BootNext named it, but the firmware started "
                      "BootCurrent %s (%s) by BootOrder; slot %s keeps the kernel that failed until the next update",
                      want.name, self._boot_current_text(), f"slot {cur.name}" if cur is not None else "no slot entry",
                      want.name)

    def _forget_pending(self) -> None:
        """Never an error for the start: at worst the same report comes again next time."""
        try:
            self.pending.unlink(missing_ok=True)
        except OSError as e:
            log.warning("A/B update: %s cannot be removed (%s)", self.pending, e.strerror)

    def _boot_current_text(self) -> str:
        try:
            bc = self.efi.boot_current()
        except EfiError as e:
            return str(e)
        return "missing" if bc is None else f"{bc:04X}"

    @staticmethod
    def _copy(src: Path, dst: Path) -> None:
        tmp = dst.with_name(f".{dst.name}.tmp")
        try:
            shutil.copyfile(src, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, dst)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise

    # ------------------------------------------------------------------ updates

    def running_slot(self) -> Slot | None:
        """The booted slot once the set-up is complete; None before (updates then use the
        original's plain values)."""
        cur = self.current()
        return cur if cur is not None and self.stage() is Stage.COMPLETE else None

    def flash_target(self, mount_point: str) -> tuple[Path, bool]:
        """Where a FLASH image of the `kernel` GuestOS goes, and whether that is a slot's kernel
        file (a regular file on the ESP) rather than a partition: the slot not running. Before
        the set-up is complete, the mount point itself (the original's plain values)."""
        cur = self.running_slot()
        if cur is None:
            log.warning("A/B update is not set up; FLASH target %s used as it is", mount_point)
            return Path(mount_point), False
        if Path(mount_point) == self.kernel(Slot.A):
            return self.kernel(cur.other), True
        return Path(mount_point + cur.other.suffix), False

    def boot_other_once(self) -> None:
        """After a kernel update: the next boot (only that one) starts the updated slot.
        InstallError when BootNext cannot be set (the update would never be booted)."""
        cur = self.running_slot()
        if cur is None:
            log.error("A/B update is not set up: BootNext is not set; the update takes effect on no slot")
            return
        try:
            self.efi.set_boot_next(cur.other)
        except EfiError as e:
            raise InstallError(f"slot {cur.other.name} is written but the next boot cannot be set to it: {e}") from None
        try:
            write_atomic(self.pending, (cur.other.name + "\n").encode())  # survives the reboot right after
        except OSError as e:  # only the report at the next start is lost, not the update
            log.warning("A/B update: %s cannot be written (%s): the next start cannot say whether slot %s booted",
                        self.pending, e.strerror, cur.other.name)
        log.warning("A/B update: the next boot starts slot %s once (BootNext %04X)", cur.other.name, cur.other)

    def confirm_boot(self) -> None:
        """c0 is up: the slot this boot came from becomes the default (the original's
        a_b_update_set_boot_order)."""
        cur = self.running_slot()
        if cur is None:
            return
        try:
            order = self.efi.boot_order()
            if order and order[0] == cur:
                log.info("A/B update: slot %s booted and is already first in BootOrder", cur.name)
                return
            self.efi.set_boot_order([cur, cur.other])
            log.warning("A/B update: slot %s booted and brought c0 up; BootOrder is now %04X,%04X",
                        cur.name, cur, cur.other)
        except EfiError as e:
            log.error("A/B update: BootOrder could not be changed: %s", e)
