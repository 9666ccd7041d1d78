"""The two by-hand commands: qemu/build.py (build the image) and qemu/run.py (boot it once)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import bootdisk, image, runner

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
ALL_CHECKS = "units,tpm,cgroups,dm,container"


def build_main() -> int:
    """Build (or find in the cache) the kernel, initrd and disk; print paths and times."""
    img = image.build()
    print(f"kernel  {img.vmlinuz}\ninitrd  {img.initrd}\ndisk    {img.disk}")
    print("build   " + ", ".join(f"{k} {v:.1f} s" for k, v in img.timings.items()))
    return 0


def run_main() -> int:
    """Boot once, run the guest checks and print their results as JSON."""
    ap = argparse.ArgumentParser(description="Boot the system-test image once and run guest checks.")
    ap.add_argument("--checks", default=ALL_CHECKS, help="comma-separated guest checks (default %(default)s)")
    ap.add_argument("--overlay", type=Path, help="directory copied over the guest root before systemd starts")
    ap.add_argument("--console", type=Path, default=ARTIFACTS / "console-manual.log", help="default %(default)s")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--boot-disk", action="store_true",
                    help="no -kernel: the firmware boots a UKI from a disk's ESP (qemu/cmlvm/bootdisk.py)")
    args = ap.parse_args()
    img = image.build()
    disk = bootdisk.build(img).disk if args.boot_disk else None
    print("build: " + ", ".join(f"{k} {v:.1f} s" for k, v in img.timings.items()), file=sys.stderr)
    b = runner.boot(img, {"checks": args.checks.split(",")}, args.console, overlay=args.overlay,
                    timeout=args.timeout, boot_disk=disk)
    print(f"boot: {b.seconds:.1f} s wall ({b.accel}), qemu exit {b.qemu_status}, timed out {b.timed_out}, "
          f"console {b.console_path}", file=sys.stderr)
    if b.results is None:
        print(b.console_tail(), file=sys.stderr)
        return 1
    print(json.dumps(b.results, indent=1))
    return 0 if all(c["ok"] for c in b.results["checks"].values()) else 1
