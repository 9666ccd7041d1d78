"""The one cgroup interface cmld uses, whatever the host mounts (v1 hierarchies or unified v2).

Container groups live under the daemon's *own* cgroup (read from /proc/self/cgroup), so
cmld stays inside whatever systemd or a sandbox delegated to it and never touches groups
it did not create. The per-version layouts are described in `v1` and `v2`.
"""

from __future__ import annotations

import errno
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from cmld.cgroups.device_rules import DevicePolicy
from cmld.cgroups.memory import MemoryUse

_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}")


@dataclass
class CgroupLimits:
    """Resource limits of one container; zero/None means "not limited"."""

    memory_mb: int = 0
    cpus: str | None = None
    pids_max: int | None = None


class ContainerCgroup(ABC):
    """The cgroup(s) of one container."""

    name: str

    @property
    @abstractmethod
    def paths(self) -> list[Path]:
        """Every directory of this group (v1: one per hierarchy), for logging and cleanup."""

    @property
    def path(self) -> Path:
        """The main directory (v2: the only one)."""
        return self.paths[0]

    @abstractmethod
    def procs_files(self) -> list[str]:
        """cgroup.procs files a new process must join; the launcher writes its own pid to each
        before forking the container init, so nothing of the container ever runs outside."""

    @abstractmethod
    def apply_devices(self, policy: DevicePolicy) -> None:
        """Make `policy` the device access of the whole group; callable again at runtime."""

    @abstractmethod
    def freeze(self) -> None: ...

    @abstractmethod
    def thaw(self) -> None: ...

    @abstractmethod
    def is_frozen(self) -> bool: ...

    @abstractmethod
    def pids(self) -> list[int]:
        """All processes in the subtree (sorted, deduplicated)."""

    @abstractmethod
    def kill_all(self) -> None:
        """SIGKILL everything in the subtree and wait until it is empty (RuntimeError if it stays busy)."""

    @abstractmethod
    def oom_killed(self) -> int:
        """How many processes the kernel OOM-killed because of this group's memory limit."""

    def sweep(self) -> str:
        """kill_all for a group that may be gone already (its cleanup ran): "" when done or gone,
        else what went wrong."""
        try:
            self.kill_all()
        except FileNotFoundError:
            return ""
        except (OSError, RuntimeError) as e:
            return "" if getattr(e, "errno", None) == errno.ENOENT else str(e)
        return ""

    def oom_kills(self) -> int:
        """oom_killed, 0 where the group cannot be read any more."""
        try:
            return self.oom_killed()
        except OSError:
            return 0

    @abstractmethod
    def remove(self) -> None:
        """rmdir the whole subtree bottom-up; idempotent, silent if already gone."""

    def pids_current(self) -> int | None:
        """Tasks counted by the pids controller, or None without one."""
        return None

    def memory_use(self) -> MemoryUse | None:
        """Limit and usage of the memory controller (None without one, or once the group is gone)."""
        return None


class CgroupDriver(ABC):
    """Creates and finds container groups on one cgroup version."""

    version: int

    @abstractmethod
    def create(self, name: str, limits: CgroupLimits) -> ContainerCgroup:
        """Make `<own>/<name>` with `limits`; on failure nothing of it is left behind."""

    @abstractmethod
    def open_existing(self, name: str) -> ContainerCgroup | None:
        """The group of that name if it exists (e.g. left over by a crashed daemon), else None."""


# ---- helpers shared by v1 and v2 -------------------------------------------------------


def check_name(name: str, reserved: tuple[str, ...] = ()) -> None:
    """Container group names become directory names next to cgroup control files."""
    if not _NAME_RE.fullmatch(name) or name.startswith("cgroup.") or name in reserved:
        raise ValueError(f"invalid cgroup name {name!r}")


def check_limits(limits: CgroupLimits) -> None:
    """Reject nonsense before anything is created, with the field named."""
    if limits.memory_mb < 0:
        raise ValueError(f"memory_mb {limits.memory_mb} is negative")
    if limits.pids_max is not None and limits.pids_max < 1:
        raise ValueError(f"pids_max {limits.pids_max} must be at least 1 (the launcher itself is a task)")
    if limits.cpus is not None and (not limits.cpus or set(limits.cpus) - set("0123456789,-")):
        raise ValueError(f"cpus {limits.cpus!r} is not a CPU list like '0-1,3'")
