"""One call that yields a bootable image: kernel, stage-1 initrd and root disk, each cached."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from . import disk, initrd, kernel


@dataclass(frozen=True)
class Image:
    vmlinuz: Path
    initrd: Path
    disk: Path
    timings: dict[str, float] = field(default_factory=dict, compare=False)


def build(root: Path | None = None) -> Image:
    """Build what is missing (cold: ~2 min; unchanged: about a second) and return the paths."""
    t: dict[str, float] = {}
    t0 = time.monotonic()
    k = kernel.fetch(root)
    t["kernel"] = time.monotonic() - t0
    t1 = time.monotonic()
    rd = initrd.build(k, root)
    t["initrd"] = time.monotonic() - t1
    t2 = time.monotonic()
    img = disk.build(k, root)
    t["disk"] = time.monotonic() - t2
    t["total"] = time.monotonic() - t0
    return Image(k.vmlinuz, rd, img, t)
