"""cgroup v1 driver (legacy and hybrid hosts).

Layout: for every mounted v1 controller hierarchy H (cpu, cpuacct, cpuset, memory, devices,
freezer, blkio, pids, ...; named hierarchies such as name=systemd are left alone) the
container group is `<mount of H>/<daemon's own path in H>/<name>`, the own path coming from
/proc/self/cgroup. On a host that put the daemon in `memory:/process_api/<id>` this gives
`/sys/fs/cgroup/memory/process_api/<id>/<name>` next to `/sys/fs/cgroup/cpu/<name>`. The
container init sits directly in `<name>` of every hierarchy (v1 has no leaf-only rule).

On a hybrid host the unified (cgroup2) hierarchy carries no controller, but the container gets a
group there too (`<cgroup2 mount>/<daemon's own v2 path>/<name>`): its cgroup namespace is made
inside that group, so a cgroup2 mount inside the container (allowed with a user namespace) shows
the container's own processes, not the whole host's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from cmld.cgroups.device_rules import DevicePolicy, DeviceRule, mask_to_access, parse_rule
from cmld.cgroups.driver import CgroupDriver, CgroupLimits, ContainerCgroup, check_limits, check_name
from cmld.cgroups.fs import (
    cgroup_mounts,
    join_cgroup_path,
    own_cgroups,
    read_file,
    read_keyed,
    rmdir_tree,
    subtree_pids,
    wait_until,
    walk_bottom_up,
    write_file,
)
from cmld.cgroups.memory import MemoryUse, read_v1

REQUIRED = ("memory", "devices", "freezer")
UNIFIED = frozenset({"(unified)"})  # the key of the cgroup2 group among the v1 hierarchies
_DevKey = tuple[str, int | None, int | None]


def v1_exceptions(policy: DevicePolicy) -> dict[_DevKey, int]:
    """The policy as v1 `devices.list` exceptions {(type, major, minor): access mask}.

    v1 keeps a default-deny list of allowed patterns and removes only exact matches on deny,
    so a deny rule must cover an allow pattern entirely to be expressible; a hole inside a
    wildcard (deny `c 136:3` under allow `c 136:*`) is refused rather than silently ignored.
    Type `a` is split into `c` and `b`: written to devices.allow, `a` means "allow everything".
    """
    out: dict[_DevKey, int] = {}
    for allowed in policy.allow_rules:
        for dev_type in ("c", "b") if allowed.type == "a" else (allowed.type,):
            rule = DeviceRule(dev_type, allowed.major, allowed.minor, allowed.access)
            mask = rule.mask
            for denied in policy.deny_rules:
                if not denied.overlaps(rule):
                    continue
                if not denied.covers_devices_of(rule):
                    raise RuntimeError(f"cgroup v1 devices cannot deny '{denied}' inside the allow '{allowed}' "
                                       "(v1 only removes whole allow entries)")
                mask &= ~denied.mask
            if mask:
                key = (dev_type, rule.major, rule.minor)
                out[key] = out.get(key, 0) | mask
    return out


def _format(key: _DevKey, mask: int) -> str:
    return str(DeviceRule(key[0], key[1], key[2], mask_to_access(mask)))


def _read_exceptions(devices_list: Path) -> dict[_DevKey, int] | None:
    """Current exceptions, or None while the group is still default-allow (`a *:* rwm`)."""
    out: dict[_DevKey, int] = {}
    for line in read_file(devices_list).splitlines():
        rule = parse_rule(line)
        if rule.type == "a":
            return None
        key = (rule.type, rule.major, rule.minor)
        out[key] = out.get(key, 0) | rule.mask
    return out


class V1Cgroup(ContainerCgroup):
    """One container's directories, one per v1 hierarchy."""

    def __init__(self, name: str, dirs: dict[frozenset[str], Path]) -> None:
        self.name = name
        self._dirs = dirs

    @property
    def paths(self) -> list[Path]:
        return list(self._dirs.values())

    @property
    def path(self) -> Path:
        return self._dir("memory") or self.paths[0]

    def _dir(self, controller: str) -> Path | None:
        for ctrls, d in self._dirs.items():
            if controller in ctrls:
                return d
        return None

    def _need(self, controller: str) -> Path:
        d = self._dir(controller)
        if d is None:
            raise RuntimeError(f"cgroup {self.name}: no v1 {controller} hierarchy")
        return d

    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self._dirs.values()]

    def apply_devices(self, policy: DevicePolicy) -> None:
        """First call: deny all, then allow the policy. Later calls change only the difference
        (v1 refuses deny-all once the container made child groups), removing before adding so
        the group is never more permissive than the old or the new policy."""
        d = self._need("devices")
        target = v1_exceptions(policy)
        current = _read_exceptions(d / "devices.list")
        if current is None:
            write_file(d / "devices.deny", "a")
            current = {}
        for key, mask in current.items():
            gone = mask & ~target.get(key, 0)
            if gone:
                write_file(d / "devices.deny", _format(key, gone))
        for key, mask in target.items():
            new = mask & ~current.get(key, 0)
            if new:
                write_file(d / "devices.allow", _format(key, new))

    def _set_freezer(self, state: str, timeout: float) -> None:
        f = self._need("freezer") / "freezer.state"
        write_file(f, state)
        wait_until(lambda: read_file(f) == state, timeout, f"{f} to read {state}")

    def freeze(self) -> None:
        self._set_freezer("FROZEN", 5.0)

    def thaw(self) -> None:
        self._set_freezer("THAWED", 5.0)

    def is_frozen(self) -> bool:
        return read_file(self._need("freezer") / "freezer.state") == "FROZEN"

    def pids(self) -> list[int]:
        pids: set[int] = set()
        for d in self._dirs.values():
            pids |= subtree_pids(d)
        return sorted(pids)

    def pids_current(self) -> int | None:
        d = self._dir("pids")
        return None if d is None else int(read_file(d / "pids.current"))

    def memory_use(self) -> MemoryUse | None:
        d = self._dir("memory")
        try:
            return None if d is None else read_v1(d)
        except (OSError, ValueError):
            return None

    def kill_all(self) -> None:
        """Freeze so nothing forks between listing and killing, SIGKILL each pid, thaw so the
        frozen tasks can die; repeat until empty."""
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            pids = self.pids()
            if not pids:
                return
            freezer = self._dir("freezer") is not None  # absent only in a partial leftover
            if freezer:
                with contextlib.suppress(RuntimeError):
                    self._set_freezer("FROZEN", 1.0)  # a task in D state may delay it; kill anyway
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if freezer:
                self.thaw()
            with contextlib.suppress(RuntimeError):
                wait_until(lambda: not self.pids(), 0.5, "the group to empty")
        raise RuntimeError(f"cgroup {self.name}: still has tasks {self.pids()} after SIGKILL")

    def oom_killed(self) -> int:
        d = self._dir("memory")
        if d is None:
            return 0
        total = 0
        # v1 counts an OOM kill only in the group whose limit was hit, so sum the subtree.
        for sub in walk_bottom_up(d):
            with contextlib.suppress(OSError):
                total += read_keyed(sub / "memory.oom_control").get("oom_kill", 0)
        return total

    def remove(self) -> None:
        first: OSError | None = None
        for d in self._dirs.values():
            try:
                rmdir_tree(d)
            except OSError as e:
                first = first or e
        if first is not None:
            raise first


class V1Driver(CgroupDriver):
    """Finds the v1 controller hierarchies and the daemon's own group in each."""

    version = 1

    def __init__(self) -> None:
        own = own_cgroups()
        self.hierarchies: dict[frozenset[str], Path] = {}
        for mount in cgroup_mounts():
            if mount.fstype != "cgroup":
                continue
            for key, path in own.items():
                ctrls = frozenset(c for c in key.split(",") if c and not c.startswith("name="))
                if ctrls and ctrls <= mount.options and ctrls not in self.hierarchies:
                    self.hierarchies[ctrls] = join_cgroup_path(mount, path)
        missing = [c for c in REQUIRED if not any(c in k for k in self.hierarchies)]
        if missing:
            raise RuntimeError(f"cgroup v1: controller(s) {', '.join(missing)} not mounted")
        unified = next((m for m in cgroup_mounts() if m.fstype == "cgroup2"), None)
        if unified is not None and "" in own:
            self.hierarchies[UNIFIED] = join_cgroup_path(unified, own[""])

    def _own(self, controller: str) -> Path | None:
        for ctrls, d in self.hierarchies.items():
            if controller in ctrls:
                return d
        return None

    def create(self, name: str, limits: CgroupLimits) -> V1Cgroup:
        check_name(name)
        check_limits(limits)
        for ctrl, wanted in (("cpuset", limits.cpus), ("pids", limits.pids_max)):
            if wanted is not None and self._own(ctrl) is None:
                raise RuntimeError(f"cgroup v1: {ctrl} limit requested but no {ctrl} hierarchy is mounted")
        dirs: dict[frozenset[str], Path] = {}
        try:
            for ctrls, own in self.hierarchies.items():
                d = own / name
                try:
                    os.mkdir(d, 0o755)
                except FileExistsError:
                    raise FileExistsError(f"cgroup {d} already exists (left over? use open_existing)") from None
                dirs[ctrls] = d
            cg = V1Cgroup(name, dirs)
            cpuset = cg._dir("cpuset")
            if cpuset is not None:
                # A v1 cpuset with empty cpus or mems refuses tasks; mems before cpus like the kernel docs.
                write_file(cpuset / "cpuset.mems", read_file(cpuset.parent / "cpuset.mems"))
                write_file(cpuset / "cpuset.cpus", limits.cpus or read_file(cpuset.parent / "cpuset.cpus"))
            if limits.memory_mb:
                limit_file = cg._need("memory") / "memory.limit_in_bytes"
                want = limits.memory_mb << 20
                write_file(limit_file, str(want))
                got = read_file(limit_file)
                if got != str(want):
                    raise RuntimeError(f"{limit_file}: wrote {want}, reads back {got}")
            if limits.pids_max is not None:
                write_file(cg._need("pids") / "pids.max", str(limits.pids_max))
            return cg
        except BaseException:
            for d in dirs.values():
                with contextlib.suppress(OSError):
                    rmdir_tree(d)
            raise

    def open_existing(self, name: str) -> V1Cgroup | None:
        check_name(name)
        dirs = {ctrls: own / name for ctrls, own in self.hierarchies.items() if (own / name).is_dir()}
        return V1Cgroup(name, dirs) if dirs else None
