"""GET_DEVICE_STATS: disk usage of the data and containers file systems, and memory."""

from __future__ import annotations

import os
from pathlib import Path

from cml_common.messages.control_pb2 import DeviceStats


def _disk(path: Path) -> tuple[int, int, int]:
    st = os.statvfs(path)
    total = st.f_blocks * st.f_frsize
    free = st.f_bavail * st.f_frsize
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    return total, free, used


def read_meminfo(path: Path = Path("/proc/meminfo")) -> dict[str, int]:
    values: dict[str, int] = {}
    for line in path.read_text().splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            factor = 1024 if len(parts) > 1 and parts[1] == "kB" else 1
            values[key] = int(parts[0]) * factor
    return values


def device_stats(base: Path, containers: Path) -> DeviceStats:
    total, free, used = _disk(base)
    stats = DeviceStats(disk_system=total, disk_system_free=free, disk_system_used=used)
    if containers.is_dir() and os.stat(containers).st_dev != os.stat(base).st_dev:
        ctotal, cfree, cused = _disk(containers)
        stats.disk_containers, stats.disk_containers_free, stats.disk_containers_used = ctotal, cfree, cused
    mem = read_meminfo()
    if "MemTotal" in mem:
        stats.mem_total = mem["MemTotal"]
    if "MemFree" in mem:
        stats.mem_free = mem["MemFree"]
    if "MemAvailable" in mem:
        stats.mem_available = mem["MemAvailable"]
    return stats
