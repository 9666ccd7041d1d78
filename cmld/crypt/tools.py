"""Running the cryptsetup family of tools: argument lists only, secrets only on stdin (a key on a
command line is readable by every process through /proc), and a failure carries the tool's own
message."""

from __future__ import annotations

import shutil
import subprocess

from cmld.errors import CmldError

TOOL_TIMEOUT = 120.0


class ToolError(CmldError):
    """A dm tool failed; the message is the tool's."""


def which(tool: str) -> str | None:
    return shutil.which(tool) or next(
        (p for p in (f"/usr/sbin/{tool}", f"/sbin/{tool}") if shutil.which(p)), None)


def run(argv: list[str], *, stdin: bytes | None = None, timeout: float = TOOL_TIMEOUT) -> str:
    """Run a tool and return its stdout; ToolError with its stderr if it fails or is missing."""
    exe = which(argv[0])
    if exe is None:
        raise ToolError(f"{argv[0]} is not installed")
    try:
        p = subprocess.run([exe, *argv[1:]], input=stdin if stdin is not None else b"", capture_output=True,
                           timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise ToolError(f"{' '.join(argv[:2])}: no answer after {timeout:.0f} s") from None
    if p.returncode != 0:
        msg = (p.stderr or p.stdout).decode(errors="replace").strip() or f"exit status {p.returncode}"
        raise ToolError(f"{' '.join(argv[:2])}: {msg}")
    return p.stdout.decode(errors="replace")
