"""The A/B boot-slot update with the real cmld (hosted mode, so no reboot: the original also only
sets it up on a device; a set-up made earlier is used): the ESP's partition is a real GPT
partition of a loop device (blkid reads its entry), the EFI variables a directory laid out as
efivarfs, the boot entries written by this test byte by byte from the UEFI spec, not by cmld's
code. A `kernel` update goes to the slot not booted, as a whole file, with a backup, and BootNext
names that slot once; a hostile slot file is refused before anything is written.

The firmware's side (OVMF booting these entries, BootNext once, the fallback) is proven in the VM
tier: tests/vm/test_ab_update.py."""

from __future__ import annotations

import os
import struct
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import Daemon, DaemonFactory, cli, is_root
from .test_flash_update import UNSIGNED, publish, push

pytestmark = [pytest.mark.host, pytest.mark.skipif(not is_root(), reason="needs root")]
GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"


def run(*argv: str, stdin: str | None = None) -> str:
    return subprocess.run(list(argv), check=True, capture_output=True, text=True, input=stdin).stdout


@pytest.fixture
def esp_partition(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A 64 MiB GPT disk with one EFI System partition, as a loop device and its partition."""
    disk = tmp_path / "disk.img"
    with disk.open("wb") as f:
        f.truncate(64 << 20)
    run("sfdisk", "-q", str(disk), stdin="label: gpt\nsize=32MiB, type=U\n")
    loop = run("losetup", "-f", "--show", str(disk)).strip()
    try:
        run("partx", "-a", loop)  # the loop driver's own scan needs the kernel's GPT parser
        part = Path(f"{loop}p1")
        info = dict(line.split("=", 1) for line in run("blkid", "-p", "-o", "export", str(part)).splitlines())
        yield part, info
    finally:
        subprocess.run(["partx", "-d", loop], check=False, capture_output=True)
        subprocess.run(["losetup", "-d", loop], check=False, capture_output=True)


def var(efivars: Path, name: str, data: bytes) -> None:
    (efivars / f"{name}-{GLOBAL}").write_bytes(struct.pack("<I", 7) + data)


def read_var(efivars: Path, name: str) -> bytes | None:
    p = efivars / f"{name}-{GLOBAL}"
    return p.read_bytes()[4:] if p.exists() else None


def entry(label: str, info: dict[str, str], path: str) -> bytes:
    """A load option as the UEFI spec lays it out, from blkid's view of the partition."""
    hd = struct.pack("<BBHIQQ16sBB", 4, 1, 42, int(info["PART_ENTRY_NUMBER"]), int(info["PART_ENTRY_OFFSET"]),
                     int(info["PART_ENTRY_SIZE"]), uuid.UUID(info["PART_ENTRY_UUID"]).bytes_le, 2, 2)
    fp = (path + "\0").encode("utf-16-le")
    dp = hd + struct.pack("<BBH", 4, 4, 4 + len(fp)) + fp + bytes([0x7F, 0xFF, 4, 0])
    return struct.pack("<IH", 1, len(dp)) + (label + "\0").encode("utf-16-le") + dp


class Device:
    def __init__(self, tmp: Path, part: Path, info: dict[str, str]) -> None:
        self.tmp, self.part = tmp, part
        self.efivars = tmp / "efivars"
        self.efivars.mkdir()
        self.kdir = tmp / "boot" / "EFI" / "BOOT"
        self.kdir.mkdir(parents=True)
        self.ka, self.kb = self.kdir / "BOOTX64.EFI", self.kdir / "BOOTX64.EFI.B"
        self.ka.write_bytes(b"kernel v1 " * 1000)
        self.kb.write_bytes(b"kernel v1 " * 1000)
        self.base = tmp / "cmld-base"
        self.base.mkdir()
        for s in "AB":  # a completed set-up: slot files, no plain device.conf
            (self.base / f"device.conf.{s}").write_text(UNSIGNED)
        var(self.efivars, "Boot0000", entry("GyroidosA", info, "\\EFI\\BOOT\\BOOTX64.EFI"))
        var(self.efivars, "Boot0001", entry("GyroidosB", info, "\\EFI\\BOOT\\BOOTX64.EFI.B"))
        var(self.efivars, "BootOrder", struct.pack("<HH", 0, 1))

    def boot(self, slot: int) -> None:
        var(self.efivars, "BootCurrent", struct.pack("<H", slot))
        (self.efivars / f"BootNext-{GLOBAL}").unlink(missing_ok=True)

    def cmld(self, factory: DaemonFactory) -> Daemon:
        return factory.start("--a-b-update", "--efivars-dir", str(self.efivars), "--esp", str(self.tmp / "boot"),
                             "--esp-device", str(self.part), base=self.base, device_conf=None)


def test_kernel_update_goes_to_the_slot_not_booted_and_is_booted_once(
        cmld_factory: DaemonFactory, esp_partition: tuple[Path, dict[str, str]]) -> None:
    tmp = cmld_factory.tmp
    dev = Device(tmp, *esp_partition)
    dev.boot(0)
    d = dev.cmld(cmld_factory)
    v2 = os.urandom(200 * 1024)
    rc, out = push(d, publish(tmp / "repo", tmp, 1, {"bootx64": (v2, dev.ka)}))
    assert rc == 0 and "GUESTOS_MGR_INSTALL_COMPLETED" in out, out + d.log_text()
    assert dev.ka.read_bytes() == b"kernel v1 " * 1000  # the running slot is untouched
    assert dev.kb.read_bytes() == v2  # the other slot is exactly the image (no old bytes after it)
    assert read_var(dev.efivars, "BootNext") == struct.pack("<H", 1)
    assert read_var(dev.efivars, "BootOrder") == struct.pack("<HH", 0, 1)  # only c0 up on B confirms B
    assert (d.base / "os_update_bak" / "kernel-1" / "bootx64").read_bytes() == b"kernel v1 " * 1000
    assert "device.conf.A" in d.log_text()
    assert (d.base / ".ab-update-pending").read_text() == "B\n"
    d.stop()

    # The firmware booted B once; from there the next update goes to A's own file (the original
    # would write BOOTX64.EFI.A, which no entry boots).
    dev.boot(1)
    d = dev.cmld(cmld_factory)
    assert "device.conf.B" in d.log_text()
    assert "this boot is slot B's kernel update" in d.log_text() and not (d.base / ".ab-update-pending").exists()
    v3 = os.urandom(100 * 1024)
    rc, out = push(d, publish(tmp / "repo", tmp, 2, {"bootx64": (v3, dev.ka)}))
    assert rc == 0 and "GUESTOS_MGR_INSTALL_COMPLETED" in out, out + d.log_text()
    assert dev.ka.read_bytes() == v3 and dev.kb.read_bytes() == v2
    assert read_var(dev.efivars, "BootNext") == struct.pack("<H", 0)
    assert not (dev.kdir / "BOOTX64.EFI.A").exists()
    d.stop()

    # The firmware could not start A and booted B by BootOrder: the next start says so.
    dev.boot(1)
    d = dev.cmld(cmld_factory)
    assert "slot A's kernel update did not boot" in d.log_text(), d.log_text()


def test_hostile_slot_file_is_refused_before_anything_is_written(
        cmld_factory: DaemonFactory, esp_partition: tuple[Path, dict[str, str]]) -> None:
    tmp = cmld_factory.tmp
    dev = Device(tmp, *esp_partition)
    dev.boot(0)
    victim = tmp / "victim"
    victim.write_bytes(b"not a kernel")
    dev.kb.unlink()
    dev.kb.symlink_to(victim)  # slot B's kernel replaced by a link elsewhere
    d = dev.cmld(cmld_factory)
    rc, out = push(d, publish(tmp / "repo", tmp, 1, {"bootx64": (os.urandom(4096), dev.ka)}))
    assert rc != 0 and "not a regular file" in out, out
    assert victim.read_bytes() == b"not a kernel" and read_var(dev.efivars, "BootNext") is None
    assert not (d.base / "operatingsystems" / "kernel-1.conf").exists()
    assert cli(d.socket, "list_guestos").rc == 0


def test_entries_that_do_not_name_the_esp_mean_no_set_up(
        cmld_factory: DaemonFactory, esp_partition: tuple[Path, dict[str, str]]) -> None:
    """Boot entries of another partition (a GUID that is not the ESP's): the set-up is not
    complete, so a kernel update is not retargeted (a file target is then refused as the
    original's plain path would be written, which ours does not allow for a kernel file)."""
    tmp = cmld_factory.tmp
    part, info = esp_partition
    dev = Device(tmp, part, info)
    var(dev.efivars, "Boot0001", entry("GyroidosB", {**info, "PART_ENTRY_UUID": str(uuid.uuid4())},
                                       "\\EFI\\BOOT\\BOOTX64.EFI.B"))
    dev.boot(0)
    d = dev.cmld(cmld_factory)
    rc, out = push(d, publish(tmp / "repo", tmp, 1, {"bootx64": (os.urandom(4096), dev.ka)}))
    assert rc != 0 and "not a block device" in out, out
    assert dev.ka.read_bytes() == dev.kb.read_bytes() == b"kernel v1 " * 1000
    assert read_var(dev.efivars, "BootNext") is None
