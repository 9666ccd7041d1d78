"""Container cgroups: resource limits, freezer, kill and device access on cgroup v1 or v2.

cmld calls `detect()` once and then only uses `CgroupDriver` / `ContainerCgroup`, so the
container code never branches on the cgroup version.
"""

from cmld.cgroups.detect import detect
from cmld.cgroups.device_rules import GENERIC_ALLOW, KVM_ALLOW, DevicePolicy, DeviceRule, format_rule, parse_rule
from cmld.cgroups.driver import CgroupDriver, CgroupLimits, ContainerCgroup

__all__ = [
    "GENERIC_ALLOW",
    "KVM_ALLOW",
    "CgroupDriver",
    "CgroupLimits",
    "ContainerCgroup",
    "DevicePolicy",
    "DeviceRule",
    "detect",
    "format_rule",
    "parse_rule",
]
