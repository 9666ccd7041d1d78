"""The guest root file system as a tarball, made by mmdebstrap from Debian packages only, with
the suite's Python dependencies installed from the wheelhouse. Cached by package list, suite,
mirror and wheelhouse, so it is rebuilt (~1 min) only when one of those changes."""

from __future__ import annotations

import shlex
from pathlib import Path

from . import cache, wheels
from .tools import run

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = (
    "systemd-sysv", "udev", "dbus", "procps", "mount", "util-linux", "kmod",  # systemd as PID 1
    "python3", "python3-pip",                                                   # the suite, its wheel install
    "cryptsetup-bin", "dmsetup",                                                # dm-crypt/integrity/verity tools
    "tpm2-tools",                                                               # PCR read, event log replay
    "iproute2", "nftables", "e2fsprogs",                                        # cmld's runtime tools
    "libpcsclite1", "libseccomp2", "libsystemd0",                               # pyscard, pyseccomp, systemd-python
    "libtss2-esys-3.0.2-0", "libtss2-fapi1", "libtss2-tctildr0", "libtss2-tcti-device0",  # tpm2-pytss (tpm2d)
)
EXCLUDES = ("/usr/share/man/*", "/usr/share/doc/*", "/usr/share/locale/*", "/usr/share/info/*")


def key() -> str:
    return cache.digest("rootfs", SUITE, MIRROR, *PACKAGES, *EXCLUDES, wheels.wheelhouse_key())


def build(root: Path | None = None) -> Path:
    """rootfs.tar of the current key; built with mmdebstrap when missing."""
    final = (root or cache.cache_root()) / "rootfs" / key()
    out = final / "rootfs.tar"
    if out.exists():
        cache.hit(final)
        return out
    house = wheels.wheelhouse(root)
    pip_install = ["python3", "-m", "pip", "install", "-q", "--no-index", "--no-cache-dir", "--find-links",
                   "/tmp/wheelhouse", "--break-system-packages", *wheels.dependencies()]  # noqa: S108 (in the chroot)  # noqa: S108 (in the chroot)
    with cache.publish(final) as tmp:
        argv: list[str | Path] = [
            "mmdebstrap", "--quiet", "--variant=essential", "--mode=root", f"--include={','.join(PACKAGES)}",
            *[f"--dpkgopt=path-exclude={e}" for e in EXCLUDES],
            f"--customize-hook=copy-in {house} /tmp",
            f"--customize-hook=mv \"$1\"/tmp/{house.name} \"$1\"/tmp/wheelhouse",
            "--customize-hook=chroot \"$1\" " + shlex.join(pip_install),
            "--customize-hook=rm -rf \"$1\"/tmp/wheelhouse",
            SUITE, tmp / "rootfs.tar", MIRROR,
        ]
        run(argv, timeout=1200)
    prune(final)
    return out


def prune(final: Path) -> None:
    cache.prune(final.parent, final.name)
