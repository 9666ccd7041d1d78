"""The guest's root disk: the cached rootfs tarball, the kernel's modules, the project wheel,
its systemd units, a hosted-mode device.conf, the demo GuestOS and the in-container service
`cservice`, packed into an ext4 image by `mke2fs -d` (no loop device, no device-mapper on the
host). Cached by all of those inputs, so a code change repacks only this image (seconds)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from . import cache, rootfs, wheels
from .kernel import Kernel
from .tools import run

REPO = wheels.REPO
GUEST_IMAGE = REPO / "qemu" / "guest" / "image"
# Inputs of the disk besides rootfs, kernel and wheel: units, files, GuestOS builder, this module.
PAYLOAD = ("systemd", "qemu/guest/image", "scripts/build-guestos.py", "scripts/build-service.sh", "service",
           "qemu/cmlvm/disk.py")
# Module subtrees the guest needs (the full tree is 390 MB, mostly hardware drivers).
MODULE_TREES = ("arch", "block", "crypto", "fs", "lib", "mm", "net", "virt", "drivers/md", "drivers/block",
                "drivers/virtio", "drivers/char", "drivers/net/ipvlan")
MODULE_FILES = ("drivers/net/veth.ko", "drivers/net/macvlan.ko", "drivers/net/tun.ko", "drivers/net/dummy.ko",
                "drivers/net/virtio_net.ko", "drivers/net/net_failover.ko", "drivers/net/ipvlan/ipvlan.ko")
ENTRY_POINTS = ("cmld", "scd", "tpm2d", "cml-control", "cml-sign", "cml-sysdata")
UNITS = ("cml-tpm2d.service", "cml-scd.service", "cmld.service", "cml-sysdata.service", "cml-vmtest.service")
MASKED = ("serial-getty@ttyS0.service", "getty@tty1.service", "apt-daily.timer", "apt-daily-upgrade.timer",
          "e2scrub_all.timer", "fstrim.timer", "systemd-tmpfiles-clean.timer")
HEADROOM = 1 << 30  # free space for container images, logs and the dm test files


def key(k: Kernel) -> str:
    return cache.digest("disk", rootfs.key(), k.release, str(k.root), wheels.project_key(),
                        cache.tree_digest([REPO / p for p in PAYLOAD], REPO))


def copy_modules(k: Kernel, dest: Path) -> None:
    src = k.modules
    out = dest / "lib" / "modules" / k.release
    for t in MODULE_TREES:
        if (src / "kernel" / t).is_dir():
            shutil.copytree(src / "kernel" / t, out / "kernel" / t, dirs_exist_ok=True)
    for f in MODULE_FILES:
        (out / "kernel" / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / "kernel" / f, out / "kernel" / f)
    for meta in src.glob("modules.builtin*"):
        shutil.copy2(meta, out / meta.name)
    shutil.copy2(src / "modules.order", out / "modules.order")
    run(["depmod", "-b", dest, k.release])


def install_suite(stage: Path) -> None:
    """The project wheel into /usr/local (pip inside the chroot), entry points linked into /usr/bin
    where the units expect them, and the units enabled offline."""
    whl = wheels.project_wheel()
    shutil.copy2(whl, stage / "tmp" / whl.name)
    run(["chroot", stage, "python3", "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--no-cache-dir",
         "--break-system-packages", f"/tmp/{whl.name}"])  # noqa: S108 (inside the chroot)  # noqa: S108 (inside the chroot)
    (stage / "tmp" / whl.name).unlink()
    for ep in ENTRY_POINTS:
        link = stage / "usr" / "bin" / ep
        link.unlink(missing_ok=True)
        link.symlink_to(f"/usr/local/bin/{ep}")
    for unit_file in (REPO / "systemd").glob("*.service"):
        shutil.copy2(unit_file, stage / "etc" / "systemd" / "system" / unit_file.name)
    shutil.copytree(GUEST_IMAGE, stage, dirs_exist_ok=True, symlinks=True)
    (stage / "var" / "lib" / "cml" / "containers").mkdir(parents=True, exist_ok=True)
    run(["systemctl", f"--root={stage}", "enable", *UNITS])
    run(["systemctl", f"--root={stage}", "mask", *MASKED])
    gos = stage / "var" / "lib" / "cml" / "operatingsystems"
    run([sys.executable, REPO / "scripts" / "build-guestos.py", gos])
    # The same busybox with a dm-verity hash tree: opened block-verified instead of hashed in full.
    run([sys.executable, REPO / "scripts" / "build-guestos.py", gos, "--name", "busyverity", "--verity"])
    install_cservice(stage)


def install_cservice(stage: Path) -> None:
    """The in-container service where cmld looks first (/usr/libexec/cml/cservice): the demo
    GuestOS, like every GyroidOS GuestOS, runs /sbin/cservice as init."""
    with tempfile.TemporaryDirectory(prefix="cservice-") as tmp:
        run(["bash", REPO / "scripts" / "build-service.sh", Path(tmp) / "cservice"])
        dest = stage / "usr" / "libexec" / "cml" / "cservice"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(tmp) / "cservice", dest)
        dest.chmod(0o755)


def tree_size(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            st = os.lstat(os.path.join(dirpath, f))
            total += st.st_blocks * 512
    return total


def build(k: Kernel, root: Path | None = None) -> Path:
    """disk.img of the current inputs (built when missing); returns its path."""
    final = (root or cache.cache_root()) / "disk" / key(k)
    out = final / "disk.img"
    if out.exists():
        cache.hit(final)
        return out
    tar = rootfs.build(root)
    with cache.publish(final) as tmp, tempfile.TemporaryDirectory(dir=tmp) as sdir:
        stage = Path(sdir)
        run(["tar", "-xpf", tar, "-C", stage, "--numeric-owner"])
        copy_modules(k, stage)
        install_suite(stage)
        size_mb = (tree_size(stage) * 5 // 4 + HEADROOM) >> 20
        run(["mke2fs", "-q", "-t", "ext4", "-d", stage, "-L", "cmlroot", "-E", "root_owner=0:0",
             tmp / "disk.img", f"{size_mb}M"])
    cache.prune(final.parent, final.name, max_entries=3)
    return out
