"""Stage-1 initrd: static busybox, the few modules needed to reach the root disk and the 9p share,
and an /init that mounts the disk and switches to systemd. A tiny initrd, because OVMF loads it
through fw_cfg, which is slow under TCG (a 150 MB initramfs costs ~30 s)."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import cache
from .kernel import Kernel
from .tools import ToolError, run

BUSYBOX = Path("/bin/busybox")
INIT = Path(__file__).resolve().parent.parent / "guest" / "stage1-init.sh"
# The root disk (virtio-blk, ext4) and the share (virtio 9p), as modprobe resolves them.
MODULES = ("virtio_pci", "virtio_blk", "ext4", "9pnet_virtio", "9p")


def module_files(k: Kernel) -> list[Path]:
    """The .ko files of MODULES with their dependencies, in load order, each once."""
    seen: list[Path] = []
    for m in MODULES:
        out = run(["modprobe", "-d", k.root, "-S", k.release, "--show-depends", m])
        for line in out.splitlines():
            parts = line.split()
            if parts and parts[0] == "insmod":
                p = Path(parts[1]).resolve()
                if p not in seen:
                    seen.append(p)
    return seen


def build(k: Kernel, root: Path | None = None) -> Path:
    """The gzip'd newc cpio, cached by kernel and /init; returns its path."""
    final = (root or cache.cache_root()) / "initrd" / cache.digest(k.release, str(k.root), INIT.read_bytes(),
                                                                     BUSYBOX.read_bytes())
    out = final / "stage1.cpio.gz"
    if out.exists():
        cache.hit(final)
        return out
    with cache.publish(final) as tmp, tempfile.TemporaryDirectory(dir=tmp) as sdir:
        stage = Path(sdir)
        (stage / "bin").mkdir()
        (stage / "lib" / "modules").mkdir(parents=True)
        shutil.copy2(BUSYBOX, stage / "bin" / "busybox")
        shutil.copy2(INIT, stage / "init")
        (stage / "init").chmod(0o755)
        names = []
        for ko in module_files(k):
            shutil.copy2(ko, stage / "lib" / "modules" / ko.name)
            names.append(ko.name)
        (stage / "modules.list").write_text("\n".join(names) + "\n")
        listing = sorted(str(p.relative_to(stage)) for p in stage.rglob("*"))
        p = subprocess.run(["cpio", "-o", "-H", "newc", "--reproducible", "--quiet"], cwd=stage,
                           input="\n".join(listing).encode(), capture_output=True, check=False)
        if p.returncode != 0:
            raise ToolError(f"cpio failed with exit status {p.returncode}: {p.stderr.decode(errors='replace')}")
        (tmp / "stage1.cpio.gz").write_bytes(gzip.compress(p.stdout, compresslevel=6, mtime=0))
    cache.prune(final.parent, final.name)
    return out
