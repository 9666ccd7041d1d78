"""The A/B boot-slot update's logic (device/ab_update.py, device/efivars.py) against a directory
laid out as efivarfs (4 attribute bytes + data per variable) and an ESP directory. The real
partition lookup (blkid) and a real cmld flashing a slot are in tests/host/test_ab_update.py."""

from __future__ import annotations

import logging
import struct
import uuid
from pathlib import Path

import pytest

from cmld.device import ab_update, efivars
from cmld.device.ab_update import ABUpdate, Slot, Stage
from cmld.device.efivars import EfiError, EfiVars, EspPartition, LoadOption

pytestmark = pytest.mark.unit
PART = EspPartition(1, 2048, 65536, uuid.UUID("0d1b5c5e-3f1e-4b7e-9a53-7c2d3c1e9f01"))


def test_load_option_layout_is_the_uefi_one() -> None:
    """UEFI 2.x §3.1.3: attributes u32, FilePathListLength u16, description UTF-16 + NUL, path."""
    dp = efivars.file_device_path(PART, "\\EFI\\BOOT\\BOOTX64.EFI")
    raw = LoadOption(1, "GyroidosA", dp).encode()
    assert raw[:6] == struct.pack("<IH", 1, len(dp))
    desc = "GyroidosA\0".encode("utf-16-le")
    assert raw[6:6 + len(desc)] == desc and raw[6 + len(desc):] == dp
    # HD node: type 4, subtype 1, length 42, partition 1, start, size, GUID mixed-endian, GPT (2), GUID sig (2)
    assert dp[:4] == bytes([4, 1, 42, 0])
    assert struct.unpack_from("<IQQ", dp, 4) == (1, 2048, 65536) and dp[24:40] == PART.guid.bytes_le
    assert dp[40:42] == bytes([2, 2])
    assert dp[-4:] == bytes([0x7F, 0xFF, 4, 0])
    assert LoadOption.decode(raw) == LoadOption(1, "GyroidosA", dp)
    assert efivars.describe_device_path(dp) == \
        f"HD(1,GPT,{PART.guid},0x800,0x10000)/File(\\EFI\\BOOT\\BOOTX64.EFI)"


@pytest.mark.parametrize("raw", [b"", b"\x01\x00\x00\x00\x04", b"\x01\x00\x00\x00\x04\x00G\x00",
                                 struct.pack("<IH", 1, 40) + "x\0".encode("utf-16-le") + b"\x7f\xff\x04\x00"])
def test_malformed_load_options_are_errors(raw: bytes) -> None:
    with pytest.raises(EfiError):
        LoadOption.decode(raw)


def test_relative_file_path_is_refused() -> None:
    with pytest.raises(EfiError, match="backslash"):
        efivars.file_device_path(PART, "EFI/BOOT/BOOTX64.EFI")


def test_variables_as_efivarfs_lays_them_out(tmp_path: Path) -> None:
    efi = EfiVars(tmp_path)
    assert efi.boot_current() is None and efi.boot_order() == []
    efi.set_boot_order([0, 1, 7])
    raw = efi.path("BootOrder").read_bytes()
    assert raw == struct.pack("<IHHH", 7, 0, 1, 7)  # NV|BS|RT, then the entries
    efi.set_boot_order([1])
    assert efi.boot_order() == [1]  # a shorter value replaces the longer one whole
    efi.set_boot_next(1)
    assert efi.boot_next() == 1
    efi.path("BootCurrent").write_bytes(b"\x06\x00\x00")
    with pytest.raises(EfiError, match="not an efivarfs variable"):
        efi.boot_current()
    efi.path("BootCurrent").write_bytes(b"\x06\x00\x00\x00\x01\x00\x00")
    with pytest.raises(EfiError, match="not 2"):
        efi.boot_current()
    efi.path("BootOrder").write_bytes(b"\x07\x00\x00\x00\x01")
    with pytest.raises(EfiError, match="odd"):
        efi.boot_order()


class Device:
    """An ESP, a device.conf and efivars in a temp dir; BootCurrent is what the firmware booted."""

    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(ab_update, "esp_partition", lambda dev: PART)
        self.efi = EfiVars(tmp / "efivars")
        self.efi.root.mkdir()
        self.esp = tmp / "boot"
        (self.esp / "EFI" / "BOOT").mkdir(parents=True)
        (self.esp / "EFI" / "BOOT" / "BOOTX64.EFI").write_bytes(b"kernel v1")
        self.conf = tmp / "cml" / "device.conf"
        self.conf.parent.mkdir()
        self.conf.write_text("hostedmode: false\n")
        self.ab = ABUpdate(self.efi, self.conf, self.esp, Path("/dev/esp"))

    def boot(self, entry: int | None) -> None:
        """The firmware boots `entry`, consuming BootNext as UEFI does."""
        if entry is None:
            self.efi.path("BootCurrent").unlink(missing_ok=True)
        else:
            self.efi.set("BootCurrent", struct.pack("<H", entry), 6)
        self.efi.path("BootNext").unlink(missing_ok=True)


@pytest.fixture
def dev(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Device:
    return Device(tmp_path, monkeypatch)


def set_up(dev: Device) -> None:
    """The original's staged set-up: first start (copies, entries, reboot), then a boot from
    GyroidosA (plain device.conf removed)."""
    assert dev.ab.stage() is Stage.NONE
    assert dev.ab.init() is True
    dev.boot(0)
    assert dev.ab.stage() is Stage.STAGE_2
    assert dev.ab.init() is False
    assert dev.ab.stage() is Stage.COMPLETE


def test_staged_set_up_as_the_original(dev: Device) -> None:
    assert dev.ab.init() is True  # NONE: everything made, then a reboot
    kb = dev.esp / "EFI" / "BOOT" / "BOOTX64.EFI.B"
    assert kb.read_bytes() == b"kernel v1"
    assert dev.conf.with_name("device.conf.A").read_text() == dev.conf.with_name("device.conf.B").read_text() \
        == "hostedmode: false\n"
    a, b = dev.efi.load_option(0), dev.efi.load_option(1)
    assert a is not None and a.description == "GyroidosA" and a.attributes == 1
    assert b is not None and b.description == "GyroidosB"
    assert "File(\\EFI\\BOOT\\BOOTX64.EFI.B)" in efivars.describe_device_path(b.device_path)
    assert dev.efi.boot_order() == [0, 1]
    dev.boot(0)
    assert dev.ab.init() is False and not dev.conf.exists()  # STAGE_2: the plain device.conf goes
    assert dev.ab.stage() is Stage.COMPLETE and dev.ab.current() is Slot.A


def test_a_firmware_that_does_not_boot_the_entries_gets_one_reboot_not_a_loop(dev: Device) -> None:
    assert dev.ab.init() is True  # set up, the reboot into GyroidosA
    dev.boot(3)  # the firmware's own entry, not GyroidosA/B
    assert dev.ab.stage() is Stage.STAGE_1
    assert dev.ab.init() is False  # the original reboots again, forever; here: no, carry on without A/B
    assert dev.ab.init() is False and dev.conf.exists()
    dev.conf.with_name("device.conf.A").unlink()  # set-up redone from NONE: one reboot again
    assert dev.ab.init() is True
    dev.boot(0)
    assert dev.ab.init() is False and dev.ab.stage() is Stage.COMPLETE and not dev.ab.marker.exists()


def test_changed_boot_entry_means_set_up_again(dev: Device) -> None:
    set_up(dev)
    other = LoadOption(1, "GyroidosA", efivars.file_device_path(PART, "\\EFI\\other.efi"))
    dev.efi.set_load_option(0, other)
    assert dev.ab.stage() is Stage.NONE


def test_kernel_update_goes_to_the_other_slot_and_is_booted_once(dev: Device) -> None:
    set_up(dev)
    ka, kb = dev.ab.kernel(Slot.A), dev.ab.kernel(Slot.B)
    assert dev.ab.flash_target(str(ka)) == (kb, True)
    assert dev.ab.flash_target("/dev/disk/by-partlabel/rootfs") == (Path("/dev/disk/by-partlabel/rootfs.B"), False)
    dev.ab.boot_other_once()
    assert dev.efi.boot_next() == 1 and dev.efi.boot_order() == [0, 1]
    dev.boot(1)  # BootNext: slot B once
    dev.ab.confirm_boot()  # c0 came up on B: B becomes the default
    assert dev.efi.boot_order() == [1, 0]
    # From B the update goes to A's own kernel file (the original appended ".A" to it).
    assert dev.ab.flash_target(str(ka)) == (ka, True)
    dev.ab.boot_other_once()
    assert dev.efi.boot_next() == 0
    dev.boot(1)  # A did not boot: the firmware fell back to BootOrder's first, B; nothing confirmed A
    dev.ab.confirm_boot()
    assert dev.efi.boot_order() == [1, 0] and dev.ab.current() is Slot.B


def test_no_set_up_means_plain_targets_and_no_boot_next(dev: Device) -> None:
    ka = dev.ab.kernel(Slot.A)
    assert dev.ab.flash_target(str(ka)) == (ka, False)
    dev.ab.boot_other_once()
    assert dev.efi.boot_next() is None


def test_failed_set_up_leaves_stage_none_and_is_retried(dev: Device) -> None:
    dev.conf.unlink()
    with pytest.raises(OSError):
        dev.ab.init()
    assert dev.ab.stage() is Stage.NONE and not list(dev.conf.parent.glob(".*.tmp"))
    assert dev.efi.load_option(0) is None  # no entry written for a set-up that did not finish


def test_the_start_after_a_kernel_update_says_how_it_booted(dev: Device, caplog: pytest.LogCaptureFixture) -> None:
    """BootNext names the updated slot once; the next start logs whether the firmware booted it
    or fell back to BootOrder (the original says nothing), once, and while BootNext is still set
    (cmld restarted, no reboot yet) that it is still to come."""
    caplog.set_level(logging.INFO)
    set_up(dev)
    dev.ab.boot_other_once()
    assert dev.ab.pending.read_text() == "B\n"
    caplog.clear()
    dev.ab.init()  # restarted before the reboot: BootNext is still there
    assert "booted at the next reboot" in caplog.text and dev.ab.pending.exists()
    dev.boot(1)
    caplog.clear()
    dev.ab.init()
    assert "this boot is slot B's kernel update" in caplog.text and not dev.ab.pending.exists()
    dev.ab.confirm_boot()
    dev.ab.boot_other_once()
    assert dev.efi.boot_next() == 0 and dev.ab.pending.read_text() == "A\n"
    dev.boot(1)  # slot A's kernel did not start: the firmware took BootOrder's first, B
    caplog.clear()
    dev.ab.init()
    assert "slot A's kernel update did not boot" in caplog.text and "BootCurrent 0001 (slot B)" in caplog.text
    assert not dev.ab.pending.exists() and dev.efi.boot_order() == [1, 0]
    caplog.clear()
    dev.ab.init()
    assert "did not boot" not in caplog.text  # said once


@pytest.mark.parametrize("content", [b"C\n", b"\xff\xfe", b"B" * 5000])
def test_a_hostile_pending_marker_is_removed_with_a_warning(dev: Device, content: bytes,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    set_up(dev)
    dev.ab.pending.write_bytes(content)
    dev.ab.init()
    assert not dev.ab.pending.exists() and "A/B update:" in caplog.text


def test_a_pending_marker_that_is_a_directory_does_not_stop_the_start(dev: Device,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    set_up(dev)
    dev.ab.pending.mkdir()
    (dev.ab.pending / "x").write_text("B")
    assert dev.ab.init() is False  # no exception out of the start
    assert "cannot be read" in caplog.text and "cannot be removed" in caplog.text


def test_pending_marker_replaces_a_planted_symlink_instead_of_writing_through_it(dev: Device, tmp_path: Path) -> None:
    set_up(dev)
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    dev.ab.pending.symlink_to(victim)
    dev.ab.boot_other_once()
    assert victim.read_text() == "keep me"
    assert not dev.ab.pending.is_symlink() and dev.ab.pending.read_text() == "B\n"
