"""The container start benchmark still runs (2 runs, 16 MiB hashed), so it cannot rot unnoticed.
No timing is asserted: only that it finishes, prints every row with a ratio, and leaves nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.host
TOP = Path(__file__).resolve().parents[2]
RATIO = r"\d+\.\d\dx"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (cmld and runc create namespaces, cgroups, mounts)")
@pytest.mark.timeout(300)
def test_container_start_bench_smoke() -> None:
    p = subprocess.run([sys.executable, str(TOP / "bench" / "container_start.py"), "--runs", "2",
                        "--hash-size-mb", "16"], capture_output=True, text=True, timeout=290, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    out = p.stdout
    # Without runc the reference (and so the ratio) of the container rows is skipped, with a note.
    ratio = "-" if "note: runc" in out else RATIO
    for variant in ("userns", "no userns"):
        assert re.search(rf"START -> reply \(init exec'd\), {variant} .* {ratio}$", out, re.M), out
        assert re.search(rf"START -> RUNNING, {variant} .* {ratio}$", out, re.M), out
        assert re.search(rf"STOP -> STOPPED, {variant} .* {ratio}$", out, re.M), out
    assert re.search(rf"SHA-256 16 MiB: cmld sha256_file .* sha256sum .* {RATIO}$", out, re.M), out
    m = re.search(r"temp dir (\S+)", p.stderr)
    assert m, p.stderr[-3000:]
    tmp = m.group(1)
    assert not Path(tmp).exists(), f"{tmp} left behind"
    assert tmp not in Path("/proc/self/mountinfo").read_text()
    assert tmp not in subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=False).stdout
