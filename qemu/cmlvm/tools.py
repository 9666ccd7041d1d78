"""Running external tools: argument lists only, and a failure carries the tool's own message."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path


class ToolError(RuntimeError):
    """An external tool failed; the message holds its command, exit status and output tail."""


def run(argv: Sequence[str | Path], *, cwd: Path | None = None, env: Mapping[str, str] | None = None,
        timeout: float = 900, input_bytes: bytes | None = None) -> str:
    """Run a tool to completion and return its stdout; raise ToolError with its stderr on failure."""
    cmd = [str(a) for a in argv]
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    try:
        p = subprocess.run(cmd, cwd=cwd, env=full_env, input=input_bytes, capture_output=True,
                           timeout=timeout, check=False)
    except FileNotFoundError as e:
        raise ToolError(f"{cmd[0]}: not installed ({e}); run scripts/setup.sh") from e
    except subprocess.TimeoutExpired as e:
        raise ToolError(f"{' '.join(cmd)}: no result after {timeout:.0f} s") from e
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).decode(errors="replace")[-4000:]
        raise ToolError(f"{' '.join(cmd)} failed with exit status {p.returncode}:\n{tail}")
    return p.stdout.decode(errors="replace")
