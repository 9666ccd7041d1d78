"""Debian's own kernel package, fetched with apt and unpacked without installing it on the host.

Keyed by the package name and version of the ABI that `linux-image-amd64` currently depends on,
so a Debian kernel update makes a new entry and an unchanged one is reused.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from . import cache
from .tools import run

META_PACKAGE = "linux-image-amd64"


@dataclass(frozen=True)
class Kernel:
    """An unpacked kernel package: the bzImage and its module tree."""

    release: str  # e.g. 6.1.0-56-amd64
    root: Path  # dpkg-deb -x output

    @property
    def vmlinuz(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.release}"

    @property
    def modules(self) -> Path:
        return self.root / "lib" / "modules" / self.release


def current_package() -> tuple[str, str]:
    """(package, version) of the kernel ABI package the meta package depends on."""
    out = run(["apt-cache", "show", "--no-all-versions", META_PACKAGE])
    m = re.search(r"^Depends:.*?\b(linux-image-[0-9][^ ,]*-amd64) \(= ([^)]+)\)", out, re.MULTILINE)
    if not m:
        raise RuntimeError(f"apt-cache show {META_PACKAGE}: no linux-image-*-amd64 dependency in:\n{out}")
    return m.group(1), m.group(2)


def fetch(root: Path | None = None) -> Kernel:
    """Download and unpack the current kernel once; later calls return the cached tree."""
    pkg, version = current_package()
    release = pkg.removeprefix("linux-image-")
    final = (root or cache.cache_root()) / "kernel" / cache.digest(pkg, version)
    if (final / "boot" / f"vmlinuz-{release}").exists():
        cache.hit(final)
    else:
        with cache.publish(final) as tmp:
            dl = tmp / "download"
            dl.mkdir()
            run(["apt-get", "download", f"{pkg}={version}"], cwd=dl, timeout=600)
            debs = list(dl.glob("*.deb"))
            if len(debs) != 1:
                raise RuntimeError(f"apt-get download {pkg}: expected one .deb, got {debs}")
            run(["dpkg-deb", "-x", debs[0], tmp])
            shutil.rmtree(dl)
            run(["depmod", "-b", tmp, release])
    return Kernel(release, final)
