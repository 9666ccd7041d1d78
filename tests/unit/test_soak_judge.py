"""bench/soak.py's verdict on RSS: a slope with a real rise is growth; the step of one worker
thread started late (its malloc arena, about 1 MiB) is not, while threads stay under their cap."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import soak

pytestmark = pytest.mark.unit


def samples(rss_step_at: int, step_kb: int, thread_step: int) -> list[soak.Sample]:
    out = []
    for c in range(30):
        late = c >= rss_step_at
        out.append(soak.Sample(cycle=c, fds=16, rss_kb=58000 + (step_kb if late else 0),
                               threads=4 + (thread_step if late else 0), children=0, zombies=0, mounts=0,
                               cgroups=0, loops=0, netns=0))
    return out


def verdict(s: list[soak.Sample]) -> str:
    rss = next(f for f in soak.judge(s) if f.name == "rss_kb")
    return "GROWS" if rss.grows else "flat"


def test_a_late_rss_step_alone_is_growth() -> None:
    assert verdict(samples(20, 1200, 0)) == "GROWS"


def test_the_step_of_one_new_worker_thread_is_not() -> None:
    assert verdict(samples(20, 1200, 1)) == "flat"
    assert verdict(samples(20, 2600, 1)) == "GROWS"  # more than one arena's worth


def test_a_flat_run_is_flat() -> None:
    assert verdict(samples(30, 0, 0)) == "flat"
