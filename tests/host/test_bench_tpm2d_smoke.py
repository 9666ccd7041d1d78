"""bench/tpm2d_attest.py still runs (quick mode), so it cannot rot unnoticed. No timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.host
TOP = Path(__file__).resolve().parents[2]


def test_tpm2d_bench_quick(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    p = subprocess.run([sys.executable, str(TOP / "bench" / "tpm2d_attest.py"), "--quick", "--json", str(out)],
                       capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == 0, p.stderr
    res = json.loads(out.read_text())
    assert {"tpm2d_quote_ms", "tpm2_quote_ms", "attest_roundtrip_ms", "verifications_per_s",
            "rsa_verify_per_s"} <= set(res)
    assert "ratio tpm2d/tpm2_quote" in p.stdout and "ratio verifier/RSA" in p.stdout
