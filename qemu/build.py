#!/usr/bin/env python3
"""Builds the system-test image (one command) and prints the artefact paths and build times.

    .venv/bin/python qemu/build.py        # cache: $CML_QEMU_CACHE or /var/cache/cml-qemu
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cmlvm import image  # noqa: E402


def main() -> int:
    img = image.build()
    print(f"kernel  {img.vmlinuz}\ninitrd  {img.initrd}\ndisk    {img.disk}")
    print("build   " + ", ".join(f"{k} {v:.1f} s" for k, v in img.timings.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
