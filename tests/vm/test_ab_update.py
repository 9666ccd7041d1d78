"""The A/B EFI boot-slot update on real firmware: OVMF boots the guest from its ESP by the boot
entries cmld writes through efivarfs (no -kernel), QEMU restarted on every guest reboot with the
same firmware variables (vars.fd), disks and TPM state. Four boots (see tests/vm/ab_scenario.py
and qemu/guest/vmcheck/abupdate.py):

    1  the firmware's own entry for the disk; cmld sets the slots up and reboots
    2  Boot0000 GyroidosA; a signed kernel update (a UKI with a marker) goes to slot B, BootNext 0001
    3  Boot0001 GyroidosB once: the marker kernel runs, c0 up makes 0001 first in BootOrder; a
       broken kernel update goes to slot A, BootNext 0000
    4  the firmware cannot start slot A and boots by BootOrder: slot B again, cmld says so; a
       kernel update that panics at once goes to slot A, BootNext 0000
    5  Boot0000 GyroidosA: the firmware starts it, the kernel panics, the guest reboots
    6  BootNext was spent: the firmware boots by BootOrder, slot B again, cmld says so

The firmware's own console lines (BdsDxe: loading/starting/failed to load Boot####) are checked
too: they are what the firmware did, not what the guest inferred.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from . import harness
from .ab_scenario import AbBoot

pytestmark = harness.VM_MARKS


def facts(ab: AbBoot, check: str) -> dict[str, Any]:
    return harness.guest_check(ab.boot, f"abupdate.{check}")


def logged(data: dict[str, Any], text: str) -> bool:
    return any(text in line for line in data["ab_log"])


def firmware_lines(ab: AbBoot) -> list[str]:
    return [line.strip() for line in ab.boot.console.splitlines() if "BdsDxe:" in line]


def entry_path(ab: AbBoot, file: str) -> str:
    e = ab.expect
    return f"HD(1,GPT,{e['esp_guid']},{e['esp_start']:#x},{e['esp_sectors']:#x})/File({file})"


def test_boot_disk_holds_the_uki_on_a_gpt_esp(vm_image: harness.Image, tmp_path: Path) -> None:
    """The disk the firmware boots, read back with other tools than the ones that made it: the
    GPT names an EFI System partition with the GUID the checks expect, and its FAT holds the
    UKI whose sections are the image's own kernel, initrd and command line."""
    disk = harness.bootdisk.build(vm_image)
    part = json.loads(subprocess.run(["sfdisk", "-J", str(disk.disk)], capture_output=True, text=True,
                                     check=True).stdout)["partitiontable"]["partitions"]
    assert len(part) == 1 and part[0]["type"] == harness.bootdisk.ESP_TYPE, part
    assert part[0]["uuid"].lower() == disk.esp_guid and part[0]["start"] == disk.esp_start, part
    on_fat = subprocess.run(["mtype", "-i", f"{disk.disk}@@{disk.esp_start * 512}", "::/EFI/BOOT/BOOTX64.EFI"],
                            capture_output=True, check=True).stdout
    assert on_fat == disk.uki.read_bytes()
    for section, want in ((".linux", vm_image.vmlinuz.read_bytes()), (".initrd", vm_image.initrd.read_bytes()),
                          (".cmdline", harness.bootdisk.CMDLINE.encode())):
        out = tmp_path / section.lstrip(".")
        subprocess.run(["objcopy", "-O", "binary", f"--only-section={section}", str(disk.uki), str(out)],
                       check=True, capture_output=True)
        assert out.read_bytes() == want, section


def test_timings_are_recorded(ab_boot: AbBoot) -> None:
    b = ab_boot.boot
    if b.results is not None:
        for i, up in enumerate([b.results["uptime_at_start"], *b.results.get("boot_uptimes", [])], 2):
            harness.record_timing(f"guest_uptime_ab_boot{i}_checks_start", up)
    assert len(b.run_seconds) == 6, f"expected 6 QEMU runs (boots), got {b.run_seconds}: {b.console_tail()}"


def test_first_boot_sets_up_the_slots_and_reboots_into_slot_a(ab_boot: AbBoot) -> None:
    d = facts(ab_boot, "slot_a")
    efi = d["efi"]
    fw = firmware_lines(ab_boot)
    # boot 1 came from the firmware's own entry for the disk, boot 2 from the entry cmld wrote
    assert any("starting Boot" in line and "UEFI Misc Device" in line for line in fw), fw
    assert any('starting Boot0000 "GyroidosA"' in line for line in fw), fw
    assert efi["boot_current"] == 0, efi["listing"]
    assert efi["boot_order"][:2] == [0, 1], efi["listing"]
    a, b = efi["entries"]["0000"], efi["entries"]["0001"]
    assert (a["description"], a["active"], a["optional_data"]) == ("GyroidosA", True, 0), efi["listing"]
    assert (b["description"], b["active"], b["optional_data"]) == ("GyroidosB", True, 0), efi["listing"]
    # the device path names the ESP's own GPT partition (the GUID the host gave it), as blkid sees it
    assert a["path"] == entry_path(ab_boot, "\\EFI\\BOOT\\BOOTX64.EFI"), efi["listing"]
    assert b["path"] == entry_path(ab_boot, "\\EFI\\BOOT\\BOOTX64.EFI.B"), efi["listing"]
    assert d["esp"].get("PART_ENTRY_UUID") == ab_boot.expect["esp_guid"], d["esp"]
    assert logged(d, "set-up is in stage 0/3 (NONE)") and logged(d, "rebooting into boot entry GyroidosA"), \
        d["ab_log"]
    assert logged(d, "the plain device.conf is removed, set-up complete"), d["ab_log"]
    f = d["files_before"]
    assert (f["device_conf"], f["device_conf_a"], f["device_conf_b"]) == (False, True, True), f
    assert f["kernel_a"] == f["kernel_b"] == ab_boot.expect["uki_sha256"], f
    assert d["c0_state"] == "RUNNING"


def test_kernel_update_goes_to_slot_b_and_names_it_in_boot_next(ab_boot: AbBoot) -> None:
    d = facts(ab_boot, "slot_a")
    p = d["push"]
    assert p["rc"] == 0 and "GUESTOS_MGR_INSTALL_COMPLETED" in p["out"], json.dumps(p) + "\n" + "\n".join(d["ab_log"])
    f = d["files_after"]
    assert f["kernel_b"] == ab_boot.expect["update_sha256"], f
    assert f["kernel_a"] == ab_boot.expect["uki_sha256"], f  # the running slot is untouched
    assert f["pending"] == "B", f
    efi = d["efi_after"]
    assert efi["boot_next"] == 1 and efi["boot_order"][0] == 0, efi["listing"]
    assert logged(d, "the next boot starts slot B once (BootNext 0001)"), d["ab_log"]


def test_firmware_boots_slot_b_once_and_c0_makes_it_the_default(ab_boot: AbBoot) -> None:
    d = facts(ab_boot, "slot_b")
    efi = d["efi"]
    assert any('starting Boot0001 "GyroidosB"' in line for line in firmware_lines(ab_boot)), firmware_lines(ab_boot)
    assert efi["boot_current"] == 1, efi["listing"]
    assert ab_boot.expect["marker"] in d["cmdline"].split(), d["cmdline"]  # the updated kernel really runs
    assert efi["boot_next"] is None, efi["listing"]  # BootNext is for one boot only
    assert efi["boot_order"][0] == 0, efi["listing"]  # not yet confirmed at boot
    assert d["efi_confirmed"]["boot_order"][:2] == [1, 0], d["efi_confirmed"]["listing"]
    assert logged(d, "this boot is slot B's kernel update"), d["ab_log"]
    assert logged(d, "slot B booted and brought c0 up; BootOrder is now 0001,0000"), d["ab_log"]


def test_broken_kernel_update_falls_back_to_the_running_slot(ab_boot: AbBoot) -> None:
    before = facts(ab_boot, "slot_b")
    p = before["push"]
    assert p["rc"] == 0 and "GUESTOS_MGR_INSTALL_COMPLETED" in p["out"], json.dumps(p)
    assert before["files_after"]["kernel_a"] == ab_boot.expect["broken_sha256"], before["files_after"]
    assert before["files_after"]["kernel_b"] == ab_boot.expect["update_sha256"], before["files_after"]
    assert before["efi_after"]["boot_next"] == 0, before["efi_after"]["listing"]
    d = facts(ab_boot, "fallback")
    fw = firmware_lines(ab_boot)
    # the firmware tried slot A (BootNext) and could not load it, then booted by BootOrder
    assert any('failed to load Boot0000 "GyroidosA"' in line for line in fw), fw
    efi = d["efi"]
    assert efi["boot_current"] == 1 and efi["boot_next"] is None, efi["listing"]
    assert ab_boot.expect["marker"] in d["cmdline"].split(), d["cmdline"]
    assert d["efi_after_c0"]["boot_order"][:2] == [1, 0], d["efi_after_c0"]["listing"]
    assert d["files"]["pending"] is None, d["files"]
    # the file the firmware refused is the broken update, still on the ESP after the power cycle
    assert d["files"]["kernel_a"] == ab_boot.expect["broken_sha256"], d["files"]
    assert logged(d, "slot A's kernel update did not boot") and logged(d, "BootCurrent 0001 (slot B)"), d["ab_log"]
    assert logged(d, "slot B booted and is already first in BootOrder"), d["ab_log"]


def test_kernel_update_that_panics_falls_back_at_the_next_boot(ab_boot: AbBoot) -> None:
    """A failed boot the firmware cannot see: slot A's new kernel starts and panics. BootNext
    was for that one boot only, so the power cycle after the panic boots by BootOrder."""
    before = facts(ab_boot, "fallback")
    p = before["push_panic"]
    assert p["rc"] == 0 and "GUESTOS_MGR_INSTALL_COMPLETED" in p["out"], json.dumps(p)
    assert before["files_after"]["kernel_a"] == ab_boot.expect["panic_sha256"], before["files_after"]
    assert before["efi_after"]["boot_next"] == 0, before["efi_after"]["listing"]
    d = facts(ab_boot, "fallback_panic")
    console = ab_boot.boot.console
    # the firmware started slot A (this time it could load it), and that kernel panicked
    started_a = console.rfind('starting Boot0000 "GyroidosA"')
    panic = console.find("Kernel panic - not syncing", started_a)
    assert started_a >= 0 and panic > started_a, firmware_lines(ab_boot)
    assert "VFS: Unable to mount root fs" in console[panic:panic + 200], console[panic:panic + 200]
    assert console.find('starting Boot0001 "GyroidosB"', panic) > panic, firmware_lines(ab_boot)
    efi = d["efi"]
    assert efi["boot_current"] == 1 and efi["boot_next"] is None, efi["listing"]
    assert ab_boot.expect["marker"] in d["cmdline"].split(), d["cmdline"]  # slot B's kernel, not the panicking one
    assert d["efi_after_c0"]["boot_order"][:2] == [1, 0], d["efi_after_c0"]["listing"]
    assert d["files"]["pending"] is None and d["files"]["kernel_a"] == ab_boot.expect["panic_sha256"], d["files"]
    last = d["last_start_log"]
    assert any("slot A's kernel update did not boot" in line and "BootCurrent 0001 (slot B)" in line
               for line in last), last
    assert any("slot B booted and is already first in BootOrder" in line for line in last), last
