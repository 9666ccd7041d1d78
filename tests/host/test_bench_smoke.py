"""The benchmark still runs (quick mode), so `bench/` cannot rot unnoticed. No timing is asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.host
TOP = Path(__file__).resolve().parents[2]


def test_control_roundtrip_quick(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    p = subprocess.run([sys.executable, str(TOP / "bench" / "control_roundtrip.py"), "--quick", "--json", str(out)],
                       capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "LIST_CONTAINERS, one connection" in p.stdout and "echo floor" in p.stdout
    assert out.stat().st_size > 0


def test_create_container_quick(tmp_path: Path) -> None:
    out = tmp_path / "create.json"
    p = subprocess.run([sys.executable, str(TOP / "bench" / "create_container.py"), "--runs", "2", "--ref-runs", "1",
                        "--key-type", "ec256", "--json", str(out)],
                       capture_output=True, text=True, timeout=180, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "create container (cmld+scd)" in p.stdout and "RSA-4096 keygen" in p.stdout
    assert out.stat().st_size > 0
