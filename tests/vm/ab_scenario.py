"""Host side of the A/B update scenario (tests/vm/test_ab_update.py): what the guest gets besides
the image. The boot disk (qemu/cmlvm/bootdisk.py) holds slot A's UKI; the overlay makes the
guest a device (c0, not hosted) whose cmld runs with --a-b-update on the ESP mounted at /boot,
trusts a development PKI's software-signing root, and runs the checks only on a boot through a
slot entry; the share's `extra/` holds two signed `kernel` updates and what the checks expect.

    kernel-1  a UKI of the same kernel and initrd whose command line carries MARKER
    kernel-2  a file that is no PE image: the firmware cannot start it
    kernel-3  a UKI the firmware starts whose kernel panics at once (no init, no root file system)
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cml_common.messages.guestos_pb2 import GuestOSConfig, GuestOSMount
from cml_common.textconfig import to_text
from tests.conftest import BIN

from .harness import Boot, Image, bootdisk

MARKER = "cml.abvm=kernel-update-1"
# The stage-1 initrd's /init is not what rdinit names and root= names no device: the kernel
# panics ("VFS: Unable to mount root fs"), panic=-1 reboots at once.
PANIC_CMDLINE = "rdinit=/cml-abvm-no-such-init root=/dev/cml-abvm-no-such-disk cml.abvm=kernel-update-3"
BROKEN = b"CML A/B VM test: this kernel update is no PE image, the firmware cannot start it.\n" * 1024
ESP_DEVICE = "/dev/vdc1"  # the third virtio disk (root vda, data vdb), partition 1
GUEST_EXTRA = "/mnt/host/extra"  # where the guest sees `extra/` (the share, cml-vmtest.service)
KERNEL_A = "/boot/EFI/BOOT/BOOTX64.EFI"
DEVICE_CONF = 'hostedmode: false\nsigned_configs: false\ntpm_enabled: true\nc0os: "busybox"\n'
CMLD = ("/usr/bin/cmld --foreground --base-dir /var/lib/cml --socket /run/socket/cml-control --log-dir /var/log/cml "
        f"--wait-services --a-b-update --esp /boot --esp-device {ESP_DEVICE}")
# ExecCondition of cml-vmtest: the checks run on boots through GyroidosA/B only. The boot before
# (the firmware's own entry for the disk) is cmld's set-up, which reboots; should it not, the
# checks run after 10 min and fail saying what BootCurrent was.
SLOT_BOOT = """#!/bin/sh
v=$(od -An -tx1 -j4 -N2 /sys/firmware/efi/efivars/BootCurrent-8be4df61-93ca-11d2-aa0d-00e098032b8c)
case "$v" in " 00 00"|" 01 00") exit 0;; esac
echo "cml-abvm: BootCurrent$v is no slot entry: waiting for cmld's A/B set-up to reboot" > /dev/console
sleep 600
exit 0
"""
DEVICE_CONF_ONCE = """#!/bin/sh
# A device (c0) from the first start on; once the A/B set-up has copied device.conf to the
# slots, the plain one is cmld's to remove.
[ -e /var/lib/cml/device.conf.A ] || cp /etc/cml-abvm/device.conf /var/lib/cml/device.conf
"""
BOOT_MOUNT = f"""[Unit]
Description=EFI System Partition (A/B boot slots)

[Mount]
What={ESP_DEVICE}
Where=/boot
Type=vfat
Options=umask=0077
"""


@dataclass
class AbBoot:
    boot: Boot
    expect: dict[str, Any]


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def overlay(root: Path, pki: Path) -> Path:
    root.mkdir()
    root.chmod(0o755)  # stage 1 copies the overlay's root onto the guest's /, mode included
    for d in ("etc", "etc/systemd", "etc/systemd/system", "usr", "usr/local", "var", "var/lib", "var/lib/cml"):
        (root / d).mkdir(exist_ok=True)
        (root / d).chmod(0o755)
    system = root / "etc" / "systemd" / "system"
    _write(system / "boot.mount", BOOT_MOUNT)
    _write(system / "cmld.service.d" / "abvm.conf",
           "[Unit]\nRequiresMountsFor=/boot\n\n[Service]\nExecStartPre=/usr/local/libexec/cml-abvm-device-conf\n"
           f"ExecStart=\nExecStart={CMLD}\n")
    _write(system / "cml-vmtest.service.d" / "abvm.conf",
           "[Service]\nExecCondition=/usr/local/libexec/cml-abvm-slot-boot\n")
    _write(root / "usr" / "local" / "libexec" / "cml-abvm-slot-boot", SLOT_BOOT, 0o755)
    _write(root / "usr" / "local" / "libexec" / "cml-abvm-device-conf", DEVICE_CONF_ONCE, 0o755)
    _write(root / "etc" / "cml-abvm" / "device.conf", DEVICE_CONF)
    tokens = root / "var" / "lib" / "cml" / "tokens"
    tokens.mkdir()
    tokens.chmod(0o700)
    (tokens / "ssig_rootca.cert").write_bytes((pki / "ssig_rootca.cert").read_bytes())
    return root


def kernel_update(extra: Path, pki: Path, version: int, image: bytes) -> None:
    """A `kernel` GuestOS whose one FLASH image targets slot A's kernel path (cmld retargets it
    to the slot not running), served from the share, signed with the PKI's signing key."""
    repo = extra / "repo" / "operatingsystems" / "x86" / f"kernel-{version}"
    repo.mkdir(parents=True)
    (repo / "bootx64.img").write_bytes(image)
    cfg = GuestOSConfig(name="kernel", hardware="x86", version=version, update_base_url=f"file://{GUEST_EXTRA}/repo")
    cfg.description.en = f"CML kernel update {version} (A/B VM test)"
    cfg.mounts.add(image_file="bootx64", mount_point=KERNEL_A, fs_type="none", mount_type=GuestOSMount.FLASH,
                   image_size=len(image), image_sha2_256=hashlib.sha256(image).hexdigest())
    conf = extra / f"kernel-{version}.conf"
    conf.write_text(to_text(cfg))
    r = subprocess.run([str(BIN / "cml-sign"), "sign", str(conf), "-k", str(pki / "ssig_cml.key"), "--cert",
                        str(pki / "ssig_cml.chain")], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"cml-sign sign {conf} failed: {r.stderr}")


def prepare(img: Image, disk: bootdisk.BootDisk, work: Path) -> tuple[Path, Path, dict[str, Any]]:
    """(overlay, extra, expect) for the scenario, in `work`."""
    pki = work / "pki"
    r = subprocess.run([str(BIN / "cml-sign"), "pki", str(pki), "--key-type", "ec256"], capture_output=True,
                       text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"cml-sign pki failed: {r.stderr}")
    extra = work / "extra"
    extra.mkdir()
    uki = bootdisk.make_uki(img.vmlinuz, img.initrd, f"{bootdisk.CMDLINE} {MARKER}", work / "uki-update.efi")
    kernel_update(extra, pki, 1, uki.read_bytes())
    kernel_update(extra, pki, 2, BROKEN)
    panics = bootdisk.make_uki(img.vmlinuz, img.initrd, f"{bootdisk.CMDLINE} {PANIC_CMDLINE}", work / "uki-panic.efi")
    kernel_update(extra, pki, 3, panics.read_bytes())
    expect = {"esp_device": ESP_DEVICE, "esp_guid": disk.esp_guid, "esp_start": disk.esp_start,
              "esp_sectors": disk.esp_sectors, "marker": MARKER,
              "uki_sha256": hashlib.sha256(disk.uki.read_bytes()).hexdigest(),
              "update_sha256": hashlib.sha256(uki.read_bytes()).hexdigest(),
              "broken_sha256": hashlib.sha256(BROKEN).hexdigest(),
              "panic_sha256": hashlib.sha256(panics.read_bytes()).hexdigest()}
    (extra / "expect.json").write_text(json.dumps(expect, indent=1))
    return overlay(work / "overlay", pki), extra, expect
