"""FLASH images and the `kernel` pseudo-GuestOS, pushed to the real cmld: partitions (loop devices
of the test) written with the image after a whole-partition backup in `os_update_bak/`; an
unchanged partition left alone; a failure half-way restores what was written and deletes the
failed `kernel` update; targets that must not be written (not a block device, mounted, too small)
refused before anything is fetched or written."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cml_common.messages.guestos_pb2 import GuestOSConfig, GuestOSMount
from cml_common.textconfig import to_text

from ..conftest import Daemon, DaemonFactory, cli, is_root

pytestmark = [pytest.mark.host, pytest.mark.skipif(not is_root(), reason="needs root")]
UNSIGNED = "hostedmode: true\nsigned_configs: false\ntpm_enabled: false\n"
PART = 4 << 20


class Loops:
    """Loop devices over files of the test, detached at the end whatever happens."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.devices: list[str] = []

    def make(self, name: str, fill: bytes, *, readonly: bool = False) -> tuple[Path, Path]:
        backing = self.tmp / f"{name}.part"
        backing.write_bytes((fill * (PART // len(fill) + 1))[:PART])
        args = ["losetup", "-f", "--show"] + (["-r"] if readonly else []) + [str(backing)]
        dev = subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()
        self.devices.append(dev)
        return Path(dev), backing

    def close(self) -> None:
        for dev in self.devices:
            subprocess.run(["losetup", "-d", dev], check=False, capture_output=True)


@pytest.fixture
def loops(tmp_path: Path) -> Iterator[Loops]:
    lp = Loops(tmp_path)
    try:
        yield lp
    finally:
        lp.close()


def publish(repo: Path, out: Path, version: int, images: dict[str, tuple[bytes, Path]]) -> Path:
    """A `kernel` GuestOS whose FLASH images go to the given devices, served from repo (file://)."""
    cfg = GuestOSConfig(name="kernel", hardware="x86", version=version, update_base_url=f"file://{repo}")
    cfg.description.en = "CML update"
    img_dir = repo / "operatingsystems" / "x86" / f"kernel-{version}"
    img_dir.mkdir(parents=True, exist_ok=True)
    for name, (data, device) in images.items():
        (img_dir / f"{name}.img").write_bytes(data)
        cfg.mounts.add(image_file=name, mount_point=str(device), fs_type="none", mount_type=GuestOSMount.FLASH,
                       image_size=len(data), image_sha2_256=hashlib.sha256(data).hexdigest())
    conf = out / f"kernel-{version}.conf"
    conf.write_text(to_text(cfg))
    return conf


def push(d: Daemon, conf: Path) -> tuple[int, str]:
    r = cli(d.socket, "push_guestos_config", str(conf), timeout=120)
    return r.rc, r.out + r.err


def test_kernel_update_flashes_with_backup_and_rolls_back(cmld_factory: DaemonFactory, loops: Loops) -> None:
    tmp = cmld_factory.tmp
    repo = tmp / "repo"
    d = cmld_factory.start(base=tmp / "cmld-base", device_conf=UNSIGNED)
    kdev, kfile = loops.make("kpart", b"old kernel ")
    bdev, bfile = loops.make("bpart", b"old boot ")
    old_k, old_b = kfile.read_bytes(), bfile.read_bytes()
    kernel, boot = os.urandom(1 << 20), os.urandom(300 * 1024)

    rc, out = push(d, publish(repo, tmp, 1, {"kernel": (kernel, kdev), "boot": (boot, bdev)}))
    assert rc == 0 and "GUESTOS_MGR_INSTALL_COMPLETED" in out, out
    now_k, now_b = kfile.read_bytes(), bfile.read_bytes()
    assert now_k[:len(kernel)] == kernel and now_k[len(kernel):] == old_k[len(kernel):]
    assert now_b[:len(boot)] == boot
    bak = d.base / "os_update_bak" / "kernel-1"
    assert (bak / "kernel").read_bytes() == old_k and (bak / "boot").read_bytes() == old_b

    # the same images again: nothing to flash, no backup
    rc, out = push(d, publish(repo, tmp, 2, {"kernel": (kernel, kdev), "boot": (boot, bdev)}))
    assert rc == 0 and "GUESTOS_MGR_INSTALL_COMPLETED" in out, out
    assert not (d.base / "os_update_bak" / "kernel-2").exists()

    # a target that cannot be written: the kernel partition, flashed first, is restored from its
    # backup and the failed update is deleted
    rodev, _ = loops.make("ropart", b"read-only ", readonly=True)
    before = kfile.read_bytes()
    rc, out = push(d, publish(repo, tmp, 3, {"kernel": (os.urandom(1 << 20), kdev), "boot": (boot, rodev)}))
    assert rc != 0 and "GUESTOS_MGR_INSTALL_FAILED" in out and "flashing failed" in out, out
    assert kfile.read_bytes() == before
    assert not (d.base / "operatingsystems" / "kernel-3.conf").exists()
    log = d.log_text()
    assert f"{kdev} restored from" in log and "update kernel-3 failed" in log, log
    # the kernel partition's backup has served and is gone; the one whose restore failed is kept
    assert not (d.base / "os_update_bak" / "kernel-3" / "kernel").exists()
    assert (d.base / "os_update_bak" / "kernel-3" / "boot").exists()
    assert cli(d.socket, "list_guestos").rc == 0


def test_flash_targets_that_must_not_be_written_are_refused_first(cmld_factory: DaemonFactory, loops: Loops,
                                                                   tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    d = cmld_factory.start(base=tmp_path / "cmld-base", device_conf=UNSIGNED)
    regular = tmp_path / "not-a-device"
    regular.write_bytes(b"keep me")
    small, _ = loops.make("small", b"s")
    mdev, _ = loops.make("mounted", b"\0")
    subprocess.run(["mkfs.ext4", "-q", "-F", str(mdev)], check=True, capture_output=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", str(mdev), str(mnt)], check=True)
    try:
        cases = [(regular, 4096, "is not a block device"), (small, PART + 512, "do not fit on"),
                 (mdev, 4096, "is mounted"), (Path("dev/relative"), 4096, "not an absolute device path")]
        for version, (target, size, why) in enumerate(cases, start=10):
            rc, out = push(d, publish(repo, tmp_path, version, {"kernel": (os.urandom(size), target)}))
            assert rc != 0 and why in out, (target, out)
            assert not (d.base / "operatingsystems" / f"kernel-{version}").exists()
        assert regular.read_bytes() == b"keep me"
        assert not (d.base / "os_update_bak").exists()
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
