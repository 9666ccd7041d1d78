"""A container's memory as it should see it (the original gets it from lxcfs and its seccomp
sysinfo emulation): the cgroup's limit as the total, its usage as what is used. Read from the
cgroup files (v1 or v2), and rendered as /proc/meminfo text and as `struct sysinfo`."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from cmld.cgroups.fs import read_file, read_keyed

UNLIMITED_V1 = 1 << 62  # v1 reports "no limit" as a huge page-rounded number


@dataclass
class MemoryUse:
    limit: int | None  # bytes; None: not limited
    usage: int  # bytes charged to the group (incl. page cache)
    file: int  # page cache
    inactive_file: int  # reclaimable page cache
    shmem: int
    swap_limit: int | None  # bytes; None: not limited (the host's swap applies)
    swap_usage: int


def _int_or_none(text: str) -> int | None:
    if text == "max" or not text.isdigit():
        return None
    value = int(text)
    return None if value >= UNLIMITED_V1 else value


def read_v2(d: Path) -> MemoryUse:
    stat = read_keyed(d / "memory.stat")
    swap_max = d / "memory.swap.max"
    return MemoryUse(limit=_int_or_none(read_file(d / "memory.max")), usage=int(read_file(d / "memory.current")),
                     file=stat.get("file", 0), inactive_file=stat.get("inactive_file", 0), shmem=stat.get("shmem", 0),
                     swap_limit=_int_or_none(read_file(swap_max)) if swap_max.exists() else 0,
                     swap_usage=int(read_file(d / "memory.swap.current")) if swap_max.exists() else 0)


def read_v1(d: Path) -> MemoryUse:
    stat = read_keyed(d / "memory.stat")
    return MemoryUse(limit=_int_or_none(read_file(d / "memory.limit_in_bytes")),
                     usage=int(read_file(d / "memory.usage_in_bytes")), file=stat.get("total_cache", 0),
                     inactive_file=stat.get("total_inactive_file", 0), shmem=stat.get("total_shmem", 0),
                     swap_limit=None, swap_usage=0)


@dataclass
class MemoryView:
    """Bytes as the container sees them."""

    total: int
    free: int
    available: int
    cached: int
    shared: int
    swap_total: int
    swap_free: int


def view(use: MemoryUse, host: dict[str, int]) -> MemoryView:
    """`host`: the host's /proc/meminfo in bytes (MemTotal, SwapTotal, SwapFree...)."""
    total = min(use.limit, host["MemTotal"]) if use.limit is not None else host["MemTotal"]
    usage = min(use.usage, total)
    cached = min(use.file, usage)
    if use.swap_limit is None:
        swap_total, swap_free = host.get("SwapTotal", 0), host.get("SwapFree", 0)
    else:
        swap_total = min(use.swap_limit, host.get("SwapTotal", 0))
        swap_free = max(swap_total - use.swap_usage, 0)
    return MemoryView(total=total, free=total - usage, available=min(total, total - usage + use.inactive_file),
                      cached=cached, shared=min(use.shmem, usage), swap_total=swap_total, swap_free=swap_free)


def meminfo_text(v: MemoryView) -> str:
    """The lines of /proc/meminfo a container's tools read (free, top, ps), in the kernel's format;
    what is not the container's own is not shown."""
    rows = [("MemTotal", v.total), ("MemFree", v.free), ("MemAvailable", v.available), ("Buffers", 0),
            ("Cached", v.cached), ("SwapCached", 0), ("Shmem", v.shared), ("SwapTotal", v.swap_total),
            ("SwapFree", v.swap_free), ("SReclaimable", 0)]
    return "".join(f"{name + ':':<16}{value // 1024:>8} kB\n" for name, value in rows)


# struct sysinfo on x86-64 (112 bytes): uptime, loads[3], totalram, freeram, sharedram, bufferram,
# totalswap, freeswap, procs, pad, totalhigh, freehigh, mem_unit
SYSINFO = struct.Struct("<q3Q6QHH4xQQI4x")


def sysinfo_bytes(v: MemoryView, *, uptime: int, loads: tuple[int, int, int], procs: int) -> bytes:
    return SYSINFO.pack(uptime, *loads, v.total, v.free, v.shared, 0, v.swap_total, v.swap_free,
                        min(procs, 0xFFFF), 0, 0, 0, 1)


def host_meminfo(path: Path = Path("/proc/meminfo")) -> dict[str, int]:
    """The host's /proc/meminfo, in bytes (read by cmld, never by a container)."""
    out: dict[str, int] = {}
    for line in path.read_text().splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return out
