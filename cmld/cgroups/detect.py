"""Which driver this host needs: v2 where cgroup2 carries the controllers, v1 otherwise."""

from __future__ import annotations

from cmld.cgroups.driver import CgroupDriver
from cmld.cgroups.fs import CGROUP_ROOT, cgroup_mounts, read_file
from cmld.cgroups.v1 import V1Driver
from cmld.cgroups.v2 import V2Driver


def detect(daemon_leaf: str = "supervisor") -> CgroupDriver:
    """Pick the driver for this host.

    v2 if /sys/fs/cgroup itself is cgroup2, or if a hybrid host's /sys/fs/cgroup/unified has
    the memory and pids controllers; otherwise v1 (needs at least memory, devices, freezer).
    `daemon_leaf` is the v2 leaf the daemon moves itself into before enabling controllers.
    """
    mounts = cgroup_mounts()
    by_point = {m.mountpoint: m for m in mounts}
    top = by_point.get(CGROUP_ROOT)
    if top is not None and top.fstype == "cgroup2":
        return V2Driver(CGROUP_ROOT, daemon_leaf=daemon_leaf)
    unified = by_point.get(CGROUP_ROOT / "unified")
    if unified is not None and unified.fstype == "cgroup2":
        try:
            ctrls = set(read_file(unified.mountpoint / "cgroup.controllers").split())
        except OSError:
            ctrls = set()
        if {"memory", "pids"} <= ctrls:
            return V2Driver(unified.mountpoint, daemon_leaf=daemon_leaf)
    if any(m.fstype == "cgroup" for m in mounts):
        return V1Driver()
    raise RuntimeError("no usable cgroup hierarchy: /proc/self/mountinfo has neither cgroup2 at "
                       f"{CGROUP_ROOT} nor cgroup v1 controller mounts")
