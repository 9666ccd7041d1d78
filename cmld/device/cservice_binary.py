"""Where cmld finds the in-container service binary that every container gets at /sbin/cservice.

GyroidOS GuestOSes use `init_path: "/sbin/cservice"`, so without it their containers cannot
start. The search order: `--cservice PATH` (only that, if given), our install location, the
original's two locations of `cml-service-container-static`, then the Python environment's
`<sys.prefix>/libexec/cml/cservice` (where `scripts/setup.sh` puts the one it builds).
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

INSTALLED = (
    Path("/usr/libexec/cml/cservice"),
    Path("/usr/sbin/cml-service-container-static"),
    Path("/sbin/cml-service-container-static"),
)
MAX_SIZE = 32 << 20


def search_path() -> list[Path]:
    return [*INSTALLED, Path(sys.prefix) / "libexec" / "cml" / "cservice"]


def problem(path: Path) -> str:
    """Why `path` cannot serve as the in-container service ("" if it can)."""
    try:
        st = path.stat()
    except OSError as e:
        return f"{path}: {e.strerror}"
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file"
    if not st.st_mode & 0o111:
        return f"{path} is not executable"
    if st.st_size > MAX_SIZE:
        return f"{path} is larger than {MAX_SIZE >> 20} MiB"
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as e:
        return f"{path}: {e.strerror}"
    if magic != b"\x7fELF":
        return f"{path} is not an ELF executable (a container may have no shell or interpreter)"
    return ""


def find(explicit: Path | None) -> tuple[Path | None, str]:
    """The binary to use, or None and the reason (naming every place looked at)."""
    if explicit is not None:
        why = problem(explicit)
        return (None, f"no usable cservice binary: --cservice {why}") if why else (explicit.absolute(), "")
    tried = []
    for path in search_path():
        why = problem(path)
        if not why:
            return path, ""
        tried.append(str(path))
    return None, f"no cservice binary found (looked at {', '.join(tried)}; see --cservice)"


def describe(path: Path) -> str:
    st = os.stat(path)
    return f"{path} ({st.st_size} bytes)"
