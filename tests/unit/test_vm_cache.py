"""The VM image cache's pruning (qemu/cmlvm/cache.py): a build keeps the newest entries of a
kind, but never one used within IN_USE_SECONDS, which may back a boot of another checkout that is
still running (QEMU reopens the disk at every guest reboot; a pruned one failed that boot)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "qemu"))

from cmlvm import cache  # noqa: E402

pytestmark = pytest.mark.unit


def entry(kind: Path, name: str, age: float) -> Path:
    e = kind / name
    e.mkdir(parents=True)
    (e / "disk.img").write_bytes(b"x")
    t = time.time() - age
    os.utime(e, (t, t))
    return e


def test_prune_keeps_the_newest_and_those_in_use(tmp_path: Path) -> None:
    old = cache.IN_USE_SECONDS + 3600
    current = entry(tmp_path, "current", old * 3)
    in_use = entry(tmp_path, "in-use", 60)
    newest_old = entry(tmp_path, "newest-old", old)
    oldest = entry(tmp_path, "oldest", old * 2)
    hidden = entry(tmp_path, ".building", old * 5)
    cache.prune(tmp_path, "current", max_entries=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".building", "current", "in-use"]
    assert current.is_dir() and in_use.is_dir() and hidden.is_dir()
    assert not newest_old.exists() and not oldest.exists()


def test_a_cache_hit_protects_its_entry_from_a_concurrent_prune(tmp_path: Path) -> None:
    old = cache.IN_USE_SECONDS + 3600
    mine = entry(tmp_path, "mine", old)
    other = entry(tmp_path, "other", old * 2)
    cache.hit(mine)  # a run that boots from it looked it up now
    entry(tmp_path, "newer", 0)
    entry(tmp_path, "newest", 0)
    cache.prune(tmp_path, "newest", max_entries=1)
    assert mine.is_dir() and not other.exists()
