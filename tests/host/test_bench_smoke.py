"""The benchmark still runs (quick mode), so `bench/` cannot rot unnoticed. No timing is asserted."""

from __future__ import annotations

import json
import os
import re
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


def test_cli_startup_quick(tmp_path: Path) -> None:
    """bench/cli_startup.py: every CLI row against python -c pass, the import floor, and (as root)
    the start/stop cycle through cml-control --wait against one connection; nothing left behind."""
    out = tmp_path / "cli.json"
    p = subprocess.run([sys.executable, str(TOP / "bench" / "cli_startup.py"), "--quick", "--json", str(out)],
                       capture_output=True, text=True, timeout=240, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    for row in ("cml-control list", "cml-control state <c>", "control list", "control state <c>"):
        assert re.search(rf"^{re.escape(row)} .* python -c pass .* \d+\.\d\dx$", p.stdout, re.M), p.stdout
        assert f"target {row}: median" in p.stdout
    assert "import floor: protobuf + control_pb2" in p.stdout and "/bin/true (spawn floor)" in p.stdout
    if os.geteuid() == 0:
        assert re.search(r"^cycle, 2 cml-control --wait processes .* one connection .* \d+\.\d\dx$", p.stdout, re.M)
    m = re.search(r"temp dir (\S+)", p.stderr)
    assert m and not Path(m.group(1)).exists()
    assert out.stat().st_size > 0


def test_audit_bench_quick(tmp_path: Path) -> None:
    """bench/audit.py: records written, chained and signed, and the control round trip with and
    without auditing, each against its same-run reference; nothing left behind."""
    out = tmp_path / "audit.json"
    p = subprocess.run([sys.executable, str(TOP / "bench" / "audit.py"), "--quick", "--json", str(out)],
                       capture_output=True, text=True, timeout=240, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "checkpoints signed (scd round trip)" in p.stdout and "auditing off" in p.stdout
    assert set(json.loads(out.read_text())) == {"write_per_s", "chain_per_s", "sign_per_s", "roundtrip_on_off_s"}
