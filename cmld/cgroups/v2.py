"""cgroup v2 driver (unified hierarchy: /sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid hosts).

Layout, with <own> the daemon's cgroup from /proc/self/cgroup (under systemd `Delegate=yes`
e.g. /sys/fs/cgroup/system.slice/cmld.service):

    <own>/                    cgroup.subtree_control = +cpuset +cpu +memory +pids (those available)
    <own>/supervisor/         the daemon (and anything else that was in <own>), moved there once
    <own>/<name>/             one container: limits, device BPF program, freezer; its init runs here

v2 forbids processes in a group that hands controllers to children ("no internal processes"),
so before the first `+controller` write the daemon moves every process of <own> into the
leaf `supervisor`. The root cgroup is exempt, and nothing moves if no controller needs enabling
(e.g. a hybrid host's unified tree without controllers, where only freezer, kill and device
programs are used). If the daemon restarts already inside <own>/supervisor, <own> is its parent.
Devices are controlled by an eBPF program (`bpf_devices`), not a controller.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import time
from pathlib import Path

from cmld.cgroups.bpf_devices import DeviceProgram
from cmld.cgroups.device_rules import DevicePolicy
from cmld.cgroups.driver import CgroupDriver, CgroupLimits, ContainerCgroup, check_limits, check_name
from cmld.cgroups.fs import (
    CGROUP_ROOT,
    own_cgroups,
    read_file,
    read_keyed,
    rmdir_tree,
    subtree_pids,
    wait_until,
    write_file,
)
from cmld.cgroups.memory import MemoryUse, read_v2

log = logging.getLogger(__name__)

CONTROLLERS = ("cpuset", "cpu", "memory", "pids")


class V2Cgroup(ContainerCgroup):
    """One container's directory in the unified hierarchy; owns its device program fd."""

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self._path = path
        self._devices = DeviceProgram(path)

    @property
    def paths(self) -> list[Path]:
        return [self._path]

    def procs_files(self) -> list[str]:
        return [str(self._path / "cgroup.procs")]

    def apply_devices(self, policy: DevicePolicy) -> None:
        self._devices.apply(policy)

    def _events(self) -> dict[str, int]:
        return read_keyed(self._path / "cgroup.events")

    def _set_frozen(self, frozen: int) -> None:
        write_file(self._path / "cgroup.freeze", str(frozen))
        wait_until(lambda: self._events().get("frozen") == frozen, 5.0,
                   f"{self._path}/cgroup.events to show frozen {frozen}")

    def freeze(self) -> None:
        self._set_frozen(1)

    def thaw(self) -> None:
        self._set_frozen(0)

    def is_frozen(self) -> bool:
        return self._events().get("frozen") == 1

    def pids(self) -> list[int]:
        return sorted(subtree_pids(self._path))

    def pids_current(self) -> int | None:
        f = self._path / "pids.current"
        return int(read_file(f)) if f.exists() else None

    def memory_use(self) -> MemoryUse | None:
        try:
            return read_v2(self._path)
        except (OSError, ValueError):
            return None

    def kill_all(self) -> None:
        """cgroup.kill (5.14+) kills the subtree atomically, also tasks forked meanwhile;
        older kernels get the freeze/kill/thaw loop."""
        if not self._path.exists():
            return
        deadline = time.monotonic() + 10.0
        kill_file = self._path / "cgroup.kill"
        while time.monotonic() < deadline:
            if not self._events().get("populated"):
                return
            if kill_file.exists():
                write_file(kill_file, "1")
            else:
                with contextlib.suppress(RuntimeError):
                    self.freeze()
                for pid in self.pids():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                self.thaw()
            with contextlib.suppress(RuntimeError):
                wait_until(lambda: not self._events().get("populated"), 0.5, "the group to empty")
        raise RuntimeError(f"cgroup {self._path}: still populated by {self.pids()} after SIGKILL")

    def oom_killed(self) -> int:
        f = self._path / "memory.events"  # hierarchical in v2
        return read_keyed(f).get("oom_kill", 0) if f.exists() else 0

    def remove(self) -> None:
        self._devices.close()
        rmdir_tree(self._path)


class V2Driver(CgroupDriver):
    """Container groups below the daemon's own group of the unified hierarchy mounted at `root`."""

    version = 2

    def __init__(self, root: Path = CGROUP_ROOT, daemon_leaf: str = "supervisor", own: Path | None = None) -> None:
        """`own` overrides the group read from /proc/self/cgroup (tests, or a pre-made subtree)."""
        check_name(daemon_leaf)
        self.root = root
        self.daemon_leaf = daemon_leaf
        if own is None:
            own_path = own_cgroups().get("")
            if own_path is None:
                raise RuntimeError("/proc/self/cgroup has no cgroup v2 ('0::') line")
            own = root / own_path.lstrip("/")
        own_dir = own
        if own_dir.name == daemon_leaf and own_dir != root:
            own_dir = own_dir.parent  # restarted inside the leaf of an earlier run
        if not (own_dir / "cgroup.procs").exists():
            raise RuntimeError(f"cgroup v2: own group {own_dir} (from /proc/self/cgroup) does not exist; "
                               "cgroup namespace without a matching mount?")
        self.own = own_dir

    def _is_root(self) -> bool:
        return not (self.own / "cgroup.events").exists()  # only the root group lacks it

    def _move_into_leaf(self) -> None:
        """Move every process of <own> into <own>/<daemon_leaf>; repeat for ones forked meanwhile."""
        leaf = self.own / self.daemon_leaf
        with contextlib.suppress(FileExistsError):
            os.mkdir(leaf, 0o755)
        for _ in range(100):
            pids = read_file(self.own / "cgroup.procs").split()
            if not pids:
                return
            for pid in pids:
                try:
                    write_file(leaf / "cgroup.procs", pid)
                except OSError as e:
                    if e.errno != errno.ESRCH:
                        raise
        raise RuntimeError(f"cgroup v2: could not empty {self.own} into {leaf}")

    def _enable_controllers(self, needed: set[str]) -> None:
        available = set(read_file(self.own / "cgroup.controllers").split())
        missing = needed - available
        if missing:
            raise RuntimeError(f"cgroup v2: controller(s) {', '.join(sorted(missing))} needed for the limits are not "
                               f"in {self.own}/cgroup.controllers (has: {' '.join(sorted(available)) or 'none'})")
        enabled = set(read_file(self.own / "cgroup.subtree_control").split())
        todo = [c for c in CONTROLLERS if c in available and c not in enabled]
        if not todo:
            return
        if not self._is_root() and read_file(self.own / "cgroup.procs"):
            self._move_into_leaf()
        for ctrl in todo:
            try:
                write_file(self.own / "cgroup.subtree_control", f"+{ctrl}")
            except OSError as e:
                if ctrl in needed:
                    raise
                log.warning("cgroup v2: not enabling optional controller %s: %s", ctrl, e)

    def create(self, name: str, limits: CgroupLimits) -> V2Cgroup:
        check_name(name, reserved=(self.daemon_leaf,))
        check_limits(limits)
        needed = {c for c, on in (("memory", limits.memory_mb), ("cpuset", limits.cpus),
                                  ("pids", limits.pids_max is not None)) if on}
        self._enable_controllers(needed)
        d = self.own / name
        try:
            os.mkdir(d, 0o755)
        except FileExistsError:
            raise FileExistsError(f"cgroup {d} already exists (left over? use open_existing)") from None
        try:
            if limits.memory_mb:
                want = limits.memory_mb << 20
                write_file(d / "memory.max", str(want))
                got = read_file(d / "memory.max")
                if got != str(want):
                    raise RuntimeError(f"{d}/memory.max: wrote {want}, reads back {got}")
                if (d / "memory.swap.max").exists():
                    write_file(d / "memory.swap.max", "0")
            if limits.cpus:
                write_file(d / "cpuset.cpus", limits.cpus)
            if limits.pids_max is not None:
                write_file(d / "pids.max", str(limits.pids_max))
        except BaseException:
            with contextlib.suppress(OSError):
                rmdir_tree(d)
            raise
        return V2Cgroup(name, d)

    def open_existing(self, name: str) -> V2Cgroup | None:
        check_name(name, reserved=(self.daemon_leaf,))
        d = self.own / name
        return V2Cgroup(name, d) if d.is_dir() else None
