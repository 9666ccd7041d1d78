"""A disk the firmware boots by itself (no `-kernel`): GPT, one EFI System partition (FAT) whose
`\\EFI\\BOOT\\BOOTX64.EFI` is a unified kernel image (UKI) of the image's own kernel, stage-1
initrd and command line. The A/B update scenario boots it through OVMF's boot manager.

The UKI is systemd's EFI stub (`linuxx64.efi.stub`, Debian's systemd-boot-efi) with the kernel,
initrd, command line and an os-release added as PE sections by objcopy, as systemd 252's
documentation shows (Debian 12 has no ukify). Each section starts on a page boundary after the
one before it, so the image is as big as its parts (not the 50 MB a fixed layout would make).

The disk is made without loop devices or root mounts: sfdisk writes the GPT into the file,
mkfs.vfat --offset formats the partition inside it, mtools copies the files in. Cached by its
inputs, so a session builds it once (about a second).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from . import cache
from .image import Image
from .tools import ToolError, run

STUB = Path("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")
CMDLINE = "console=ttyS0 panic=-1 loglevel=4 cml.share=1 systemd.show_status=1"
OS_RELEASE = 'NAME="CML VM test"\nID=cmlvm\nPRETTY_NAME="CML VM test (A/B boot disk)"\n'
SECTOR = 512
ESP_START = 2048  # sectors: 1 MiB, where sfdisk puts the first partition
ESP_MIB = 96  # two slots of ~10 MB each, with room for bigger kernels
DISK_MIB = ESP_MIB + 2  # the primary and backup GPT around it
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
# Fixed, so the host knows which partition the guest's boot entries must name.
ESP_GUID = uuid.UUID("5c3a0f4e-cb1d-4a5e-9e0a-ab0000000001")
ESP_LABEL = "CMLESP"
ALIGN = 0x1000


@dataclass(frozen=True)
class BootDisk:
    """The raw disk image, the UKI on it and the ESP's GPT entry (for checks)."""

    disk: Path
    uki: Path
    esp_guid: str
    esp_start: int
    esp_sectors: int


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def stub_end(stub: Path) -> int:
    """The first address after the stub's own sections (objdump -h: VMA + size)."""
    out = run(["objdump", "-h", stub])
    end = 0
    for m in re.finditer(r"^\s*\d+\s+\S+\s+([0-9a-f]+)\s+([0-9a-f]+)\s", out, re.MULTILINE):
        end = max(end, int(m.group(2), 16) + int(m.group(1), 16))
    if not end:
        raise ToolError(f"objdump -h {stub}: no sections found in:\n{out}")
    return end


def make_uki(vmlinuz: Path, initrd: Path, cmdline: str, out: Path) -> Path:
    """objcopy the stub with .osrel, .cmdline, .linux and .initrd, each page-aligned after the last."""
    if not STUB.exists():
        raise ToolError(f"{STUB}: missing; install systemd-boot-efi (scripts/setup.sh)")
    work = out.parent
    osrel, cmd = work / f"{out.name}.osrel", work / f"{out.name}.cmdline"
    osrel.write_text(OS_RELEASE)
    cmd.write_text(cmdline)
    argv: list[str | Path] = ["objcopy"]
    at = _align(stub_end(STUB))
    for name, path in ((".osrel", osrel), (".cmdline", cmd), (".linux", vmlinuz), (".initrd", initrd)):
        argv += ["--add-section", f"{name}={path}", "--change-section-vma", f"{name}={at:#x}"]
        at = _align(at + path.stat().st_size)
    run([*argv, STUB, out])
    osrel.unlink()
    cmd.unlink()
    return out


def key(img: Image, cmdline: str) -> str:
    return cache.digest("bootdisk", img.vmlinuz.read_bytes(), img.initrd.read_bytes(), cmdline, STUB.read_bytes(),
                        Path(__file__).read_bytes())


def _write_disk(uki: Path, disk: Path) -> None:
    with disk.open("wb") as f:
        f.truncate(DISK_MIB << 20)
    table = (f"label: gpt\nstart={ESP_START}, size={ESP_MIB}MiB, type={ESP_TYPE}, uuid={ESP_GUID}, "
             'name="EFI System"\n')
    run(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", disk], input_bytes=table.encode())
    run(["mkfs.vfat", "-F", "32", "-n", ESP_LABEL, "--offset", str(ESP_START), disk, str(ESP_MIB << 10)])
    img = f"{disk}@@{ESP_START * SECTOR}"
    run(["mmd", "-i", img, "::/EFI", "::/EFI/BOOT"])
    run(["mcopy", "-i", img, uki, "::/EFI/BOOT/BOOTX64.EFI"])


def build(img: Image, root: Path | None = None, cmdline: str = CMDLINE) -> BootDisk:
    """The boot disk for `img` (made when missing) and the GPT facts of its ESP."""
    final = (root or cache.cache_root()) / "bootdisk" / key(img, cmdline)
    if not (final / "disk.img").exists():
        with cache.publish(final) as tmp:
            make_uki(img.vmlinuz, img.initrd, cmdline, tmp / "uki.efi")
            _write_disk(tmp / "uki.efi", tmp / "disk.img")
            parts = json.loads(run(["sfdisk", "-J", tmp / "disk.img"]))["partitiontable"]["partitions"]
            (tmp / "esp.json").write_text(json.dumps(parts[0]))
        cache.prune(final.parent, final.name)
    part = json.loads((final / "esp.json").read_text())
    return BootDisk(final / "disk.img", final / "uki.efi", part["uuid"].lower(), int(part["start"]),
                    int(part["size"]))
