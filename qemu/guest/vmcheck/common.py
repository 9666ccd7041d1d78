"""Guest side: running tools and reporting a failed check with the tool's own message."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SHARE = Path("/mnt/host")  # set by run.py: the host's share (results, state kept across reboots)


class CheckFailed(Exception):
    """A check could not collect its facts; `data` is what it had so far."""

    def __init__(self, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.data = data or {}


@dataclass
class Out:
    rc: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return (self.out + self.err).strip()


def sh(*argv: str, timeout: float = 120, stdin: str | None = None) -> Out:
    """Run a tool; never raises on a non-zero exit (the caller decides), only on a timeout."""
    try:
        p = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, input=stdin, check=False)
    except FileNotFoundError as e:
        return Out(127, "", str(e))
    except subprocess.TimeoutExpired as e:
        raise CheckFailed(f"{' '.join(argv)}: no result after {timeout} s") from e
    return Out(p.returncode, p.stdout, p.stderr)


def must(*argv: str, timeout: float = 120, stdin: str | None = None) -> str:
    """Run a tool that has to succeed; its stderr becomes the check's failure message."""
    r = sh(*argv, timeout=timeout, stdin=stdin)
    if r.rc != 0:
        raise CheckFailed(f"{' '.join(argv)} failed ({r.rc}): {r.text[-3000:]}")
    return r.out


def state_get(key: str) -> Any:
    """What an earlier check (maybe before a reboot) left for later ones."""
    path = SHARE / "state.json"
    return json.loads(path.read_text()).get(key) if path.exists() else None


def state_put(key: str, value: Any) -> None:
    path = SHARE / "state.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[key] = value
    path.write_text(json.dumps(data, indent=1))
