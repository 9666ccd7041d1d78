"""The one cgroup interface cmld uses, whatever the host mounts (v1 hierarchies or unified v2).

Container groups live under the daemon's *own* cgroup (read from /proc/self/cgroup), so
cmld stays inside whatever systemd or a sandbox delegated to it and never touches groups
it did not create. The per-version layouts are described in `v1` and `v2`.
"""

from __future__ import annotations

import errno
import os
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cmld.cgroups.device_rules import DevicePolicy

CGROUP_ROOT = Path("/sys/fs/cgroup")
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

    @abstractmethod
    def remove(self) -> None:
        """rmdir the whole subtree bottom-up; idempotent, silent if already gone."""

    def pids_current(self) -> int | None:
        """Tasks counted by the pids controller, or None without one."""
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


def write_file(path: Path, value: str) -> None:
    """Write a control file; the error names the file and value (kernel errnos alone say little)."""
    try:
        # One write(2) per value (cgroup files treat each write as a command), no O_CREAT
        # (a missing control file should say ENOENT, not EACCES).
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise OSError(e.errno, f"writing {value!r} to {path}: {os.strerror(e.errno or 0)}") from None


def read_file(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as e:
        raise OSError(e.errno, f"reading {path}: {os.strerror(e.errno or 0)}") from None


def read_keyed(path: Path) -> dict[str, int]:
    """Parse `key value` lines (memory.events, cgroup.events, memory.oom_control)."""
    out: dict[str, int] = {}
    for line in read_file(path).splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out


def walk_bottom_up(top: Path) -> Iterator[Path]:
    """Subdirectories of `top` (children before parents), then `top`; vanished dirs are skipped."""
    try:
        entries = list(os.scandir(top))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from walk_bottom_up(Path(entry.path))
    yield top


def subtree_pids(top: Path) -> set[int]:
    pids: set[int] = set()
    for d in walk_bottom_up(top):
        try:
            text = (d / "cgroup.procs").read_text()
        except (FileNotFoundError, NotADirectoryError):
            continue
        pids.update(int(p) for p in text.split())
    return pids


def rmdir_tree(top: Path, timeout: float = 2.0) -> None:
    """Remove `top` and its children; EBUSY (tasks still exiting) is retried until `timeout`."""
    deadline = time.monotonic() + timeout
    for d in walk_bottom_up(top):
        while True:
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise OSError(e.errno, f"rmdir {d}: {os.strerror(e.errno or 0)}") from None
                time.sleep(0.01)


def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `pred()` every 5 ms; RuntimeError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.005)


def unescape_mount_field(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


@dataclass
class CgroupMount:
    mountpoint: Path
    root: str
    fstype: str
    options: set[str]


def cgroup_mounts(mountinfo: str | None = None) -> list[CgroupMount]:
    """cgroup and cgroup2 mounts of this mount namespace, from /proc/self/mountinfo."""
    if mountinfo is None:
        with open("/proc/self/mountinfo") as f:
            mountinfo = f.read()
    mounts = []
    for line in mountinfo.splitlines():
        pre, sep, post = line.partition(" - ")
        if not sep:
            continue
        fields = pre.split()
        tail = post.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        mounts.append(CgroupMount(Path(unescape_mount_field(fields[4])), unescape_mount_field(fields[3]),
                                  tail[0], set(tail[2].split(","))))
    return mounts


def own_cgroups(text: str | None = None) -> dict[str, str]:
    """/proc/self/cgroup as {controllers: path}; v2 is the key "" (e.g. {"cpu,cpuacct": "/x", "": "/"})."""
    if text is None:
        with open("/proc/self/cgroup") as f:
            text = f.read()
    out = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            out[parts[1]] = parts[2]
    return out


def join_cgroup_path(mount: CgroupMount, path: str) -> Path:
    """The directory of cgroup `path` (as in /proc/self/cgroup) under `mount`."""
    root = mount.root.rstrip("/")
    if root and (path == root or path.startswith(root + "/")):
        path = path[len(root):]
    return mount.mountpoint / path.lstrip("/")


def detect(daemon_leaf: str = "supervisor") -> CgroupDriver:
    """Pick the driver for this host.

    v2 if /sys/fs/cgroup itself is cgroup2, or if a hybrid host's /sys/fs/cgroup/unified has
    the memory and pids controllers; otherwise v1 (needs at least memory, devices, freezer).
    `daemon_leaf` is the v2 leaf the daemon moves itself into before enabling controllers.
    """
    from cmld.cgroups.v1 import V1Driver
    from cmld.cgroups.v2 import V2Driver

    mounts = cgroup_mounts()
    by_point = {m.mountpoint: m for m in mounts}
    top = by_point.get(CGROUP_ROOT)
    if top is not None and top.fstype == "cgroup2":
        return V2Driver(CGROUP_ROOT, daemon_leaf=daemon_leaf)
    unified = by_point.get(CGROUP_ROOT / "unified")
    if unified is not None and unified.fstype == "cgroup2":
        try:
            ctrls = set(read_file(unified.mountpoint / "cgroup.controllers").split())
        except OSError:
            ctrls = set()
        if {"memory", "pids"} <= ctrls:
            return V2Driver(unified.mountpoint, daemon_leaf=daemon_leaf)
    if any(m.fstype == "cgroup" for m in mounts):
        return V1Driver()
    raise RuntimeError("no usable cgroup hierarchy: /proc/self/mountinfo has neither cgroup2 at "
                       f"{CGROUP_ROOT} nor cgroup v1 controller mounts")
