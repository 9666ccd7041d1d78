"""What the benchmark scripts share (they run as standalone scripts, so this sits beside them
rather than in tests/)."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The import packages at the repository root (a change to them marks a figure "modified").
PACKAGES = ("cml_common", "cmld", "scd", "tpm2d", "cml_control", "cml_sign", "cml_tpm2_control", "cml_rattestation")


def wait_for_socket(path: Path, proc: subprocess.Popen[bytes], name: str, timeout: float = 15.0,
                    kind: int = socket.SOCK_STREAM) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode} before its socket came up")
        s = socket.socket(socket.AF_UNIX, kind)
        try:
            s.connect(str(path))
            return
        except OSError:
            time.sleep(0.02)
        finally:
            s.close()
    raise TimeoutError(f"{name}: {path} did not come up within {timeout:g} s")


def git(*args: str) -> str:
    """Output of a git command in the repository, "" when git or the repository is missing."""
    try:
        p = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False,
                           timeout=10)
    except OSError:
        return ""
    return p.stdout.strip() if p.returncode == 0 else ""
