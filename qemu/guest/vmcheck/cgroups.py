"""Facts about cgroup v2 as cmld sees it: the unified mount, and the controllers delegated to
cmld's own group (cmld.service has Delegate=yes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .common import CheckFailed, sh

ROOT = Path("/sys/fs/cgroup")


def check() -> dict[str, Any]:
    fstype = sh("stat", "-f", "-c", "%T", str(ROOT)).out.strip()
    pid = sh("systemctl", "show", "-p", "MainPID", "--value", "cmld.service").out.strip()
    if not pid or pid == "0":
        raise CheckFailed("cmld.service has no main PID", {"fstype": fstype})
    line = next((ln for ln in Path(f"/proc/{pid}/cgroup").read_text().splitlines() if ln.startswith("0::")), "")
    group = ROOT / line[3:].lstrip("/")
    # cmld may have moved itself into <own>/supervisor (no internal processes rule).
    own = group.parent if group.name == "supervisor" else group
    return {
        "fstype": fstype,
        "root_controllers": (ROOT / "cgroup.controllers").read_text().split(),
        "cmld_group": str(own),
        "cmld_controllers": (own / "cgroup.controllers").read_text().split(),
        "cmld_subtree_control": (own / "cgroup.subtree_control").read_text().split(),
    }
