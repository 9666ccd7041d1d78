"""bench/scd_verify.py still runs (quick mode), so it cannot rot unnoticed. No timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.host
TOP = Path(__file__).resolve().parents[2]


def test_scd_bench_quick(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    p = subprocess.run([sys.executable, str(TOP / "bench" / "scd_verify.py"), "--quick", "--key-type", "ec256",
                        "--json", str(out)], capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stderr
    res = json.loads(out.read_text())
    assert res["verify_scd_socket_ms"] > 0 and res["token_add_ms"] > 0
    assert "ratio scd/openssl" in p.stdout
