"""KVM when it really works, TCG otherwise. A /dev/kvm alone is not enough: on our build machines
it is KVM-PVM (no VMX/SVM), where a normal Debian kernel hangs right after the firmware."""

from __future__ import annotations

import os
from pathlib import Path


def kvm_usable() -> bool:
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    flags: set[str] = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return bool(flags & {"vmx", "svm"})


def choose() -> str:
    """$CML_QEMU_ACCEL (kvm or tcg) if set, else kvm when usable, else tcg."""
    forced = os.environ.get("CML_QEMU_ACCEL")
    if forced in ("kvm", "tcg"):
        return forced
    return "kvm" if kvm_usable() else "tcg"
