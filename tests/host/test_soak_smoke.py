"""The short soak (bench/soak.py: 30 start/stop cycles of one container, 5 cycles of 5 at once):
cmld's fds, RSS and threads, and the containers' mounts, cgroups, loop devices, netns bindings,
children and zombies stay flat. The long runs' figures are in bench/README.md."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.host
TOP = Path(__file__).resolve().parents[2]
RESOURCES = ("fds", "rss_kb", "threads", "mounts", "cgroups", "loops", "netns", "children", "zombies")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (cmld creates namespaces, cgroups, mounts)")
@pytest.mark.timeout(900)
def test_short_soak_is_flat() -> None:
    p = subprocess.run([sys.executable, str(TOP / "bench" / "soak.py"), "--cycles", "30", "--parallel", "5",
                        "--parallel-cycles", "5"], capture_output=True, text=True, timeout=880, check=False)
    out = p.stdout
    assert p.returncode == 0, out + p.stderr[-3000:]
    assert "30 start/stop cycles of one container" in out and "5 cycles of 5 containers at once" in out, out
    for name in RESOURCES:
        rows = re.findall(rf"^  {name} .* (flat|GROWS.*|not judged.*)$", out, re.M)
        # RSS is judged on the 30 cycles of one container; 5 parallel cycles are too few for a trend
        want = ["flat", "not judged: 5 cycles < 20"] if name == "rss_kb" else ["flat", "flat"]
        assert rows == want, (name, out)
    assert out.rstrip().endswith("verdict: flat"), out
    m = re.search(r"temp dir (\S+)", p.stderr)
    assert m, p.stderr[-3000:]
    tmp = m.group(1)
    assert not Path(tmp).exists(), f"{tmp} left behind"
    assert tmp not in Path("/proc/self/mountinfo").read_text()
    assert tmp not in subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=False).stdout
