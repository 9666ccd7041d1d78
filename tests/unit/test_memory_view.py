"""The container's memory view: cgroup values -> /proc/meminfo text and struct sysinfo."""

from __future__ import annotations

from pathlib import Path

import pytest

from cmld.cgroups.memory import SYSINFO, MemoryUse, host_meminfo, meminfo_text, read_v1, read_v2, sysinfo_bytes, view

pytestmark = pytest.mark.unit
HOST = {"MemTotal": 8 << 30, "SwapTotal": 1 << 30, "SwapFree": 1 << 29}


def test_limit_is_the_total_and_usage_is_used() -> None:
    v = view(MemoryUse(limit=96 << 20, usage=10 << 20, file=4 << 20, inactive_file=3 << 20, shmem=1 << 20,
                       swap_limit=0, swap_usage=0), HOST)
    assert (v.total, v.free, v.available, v.cached, v.shared) == (96 << 20, 86 << 20, 89 << 20, 4 << 20, 1 << 20)
    assert (v.swap_total, v.swap_free) == (0, 0)
    text = meminfo_text(v)
    assert "MemTotal:          98304 kB\n" in text and "MemFree:           88064 kB\n" in text


def test_no_limit_shows_the_host_and_usage_never_exceeds_the_total() -> None:
    v = view(MemoryUse(limit=None, usage=1 << 20, file=0, inactive_file=0, shmem=0, swap_limit=None,
                       swap_usage=0), HOST)
    assert v.total == 8 << 30 and v.swap_total == 1 << 30 and v.swap_free == 1 << 29
    v = view(MemoryUse(limit=1 << 20, usage=5 << 20, file=9 << 20, inactive_file=0, shmem=0, swap_limit=0,
                       swap_usage=0), HOST)
    assert v.free == 0 and v.cached <= v.total


def test_sysinfo_layout() -> None:
    v = view(MemoryUse(limit=96 << 20, usage=0, file=0, inactive_file=0, shmem=0, swap_limit=0, swap_usage=0), HOST)
    raw = sysinfo_bytes(v, uptime=42, loads=(1, 2, 3), procs=70000)
    assert len(raw) == 112
    fields = SYSINFO.unpack(raw)
    assert fields[0] == 42 and fields[1:4] == (1, 2, 3) and fields[4] == 96 << 20
    assert fields[10] == 0xFFFF and fields[-1] == 1  # procs saturates; mem_unit 1


def test_cgroup_files(tmp_path: Path) -> None:
    (tmp_path / "memory.max").write_text("max\n")
    (tmp_path / "memory.current").write_text("4096\n")
    (tmp_path / "memory.stat").write_text("anon 1\nfile 2048\ninactive_file 1024\nshmem 7\n")
    (tmp_path / "memory.swap.max").write_text("0\n")
    (tmp_path / "memory.swap.current").write_text("0\n")
    u = read_v2(tmp_path)
    assert (u.limit, u.usage, u.file, u.inactive_file, u.shmem, u.swap_limit) == (None, 4096, 2048, 1024, 7, 0)
    v1 = tmp_path / "v1"
    v1.mkdir()
    (v1 / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (v1 / "memory.usage_in_bytes").write_text("100\n")
    (v1 / "memory.stat").write_text("cache 1\ntotal_cache 50\ntotal_inactive_file 20\ntotal_shmem 3\n")
    u = read_v1(v1)
    assert (u.limit, u.usage, u.file, u.inactive_file, u.shmem) == (None, 100, 50, 20, 3)
    (tmp_path / "meminfo").write_text("MemTotal:       1000 kB\nHugePages_Total:       0\n")
    assert host_meminfo(tmp_path / "meminfo") == {"MemTotal": 1024000, "HugePages_Total": 0}
