"""cgroups on this host with real processes: the v1 driver (limits, devices, freezer, kill, cleanup)
and the v2 device BPF program, freezer and kill on the hybrid host's unified hierarchy.

Each test process starts blocked on its stdin, is written into the group's procs files, and only
then released, the way the launcher joins before it forks the container init.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cmld.cgroups.device_rules import DevicePolicy
from cmld.cgroups.driver import CgroupLimits, ContainerCgroup
from cmld.cgroups.fs import cgroup_mounts, rmdir_tree
from cmld.cgroups.v1 import V1Cgroup, V1Driver
from cmld.cgroups.v2 import V2Driver

pytestmark = pytest.mark.host
PY = "/usr/bin/python3"
UNIFIED = Path("/sys/fs/cgroup/unified")

if os.geteuid() != 0:
    pytest.skip("cgroup tests need root", allow_module_level=True)

# Reads lines of `path=mode`; answers each line with {spec: 0 or errno} of an open() attempt.
PROBE = r"""
import json, os, sys
for line in sys.stdin:
    res = {}
    for spec in line.split():
        path, mode = spec.rsplit("=", 1)
        flags = {"r": os.O_RDONLY, "w": os.O_WRONLY, "rw": os.O_RDWR}[mode]
        try:
            os.close(os.open(path, flags | os.O_NONBLOCK | os.O_NOCTTY))
            res[spec] = 0
        except OSError as e:
            res[spec] = e.errno
    print(json.dumps(res), flush=True)
"""


class Procs:
    """Processes started by one test; any still running at teardown are killed by PID."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def held(self, args: list[str]) -> subprocess.Popen[bytes]:
        """Start `args` behind a `read` on stdin, so it can join a cgroup before it runs."""
        proc = subprocess.Popen(["/bin/sh", "-c", 'read _ && exec "$@"', "sh", *args],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.started.append(proc)
        return proc

    def probe(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([PY, "-c", PROBE], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.started.append(proc)
        return proc

    def cleanup(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
            for f in (proc.stdin, proc.stdout, proc.stderr):
                if f is not None:
                    with contextlib.suppress(OSError):
                        f.close()


@pytest.fixture
def procs() -> Iterator[Procs]:
    p = Procs()
    yield p
    p.cleanup()


def _cleanup_groups(groups: list[ContainerCgroup]) -> None:
    """Only the groups this test created, so only processes this test put there."""
    for cg in groups:
        with contextlib.suppress(Exception):
            cg.kill_all()
        with contextlib.suppress(Exception):
            cg.remove()


@pytest.fixture
def v1() -> V1Driver:
    try:
        return V1Driver()
    except RuntimeError as e:
        pytest.skip(f"no cgroup v1 here: {e}")


@pytest.fixture
def v1_group(v1: V1Driver, procs: Procs) -> Iterator[Callable[..., ContainerCgroup]]:
    groups: list[ContainerCgroup] = []

    def make(limits: CgroupLimits | None = None) -> ContainerCgroup:
        cg = v1.create(f"cmltest-{os.getpid()}-{len(groups)}", limits or CgroupLimits())
        groups.append(cg)
        return cg

    yield make
    _cleanup_groups(groups)  # first: kill_all also ends frozen tasks, which a plain SIGKILL leaves waiting
    procs.cleanup()


@pytest.fixture
def v2() -> V2Driver:
    if not any(m.mountpoint == UNIFIED and m.fstype == "cgroup2" for m in cgroup_mounts()):
        pytest.skip(f"no cgroup2 mounted at {UNIFIED}")
    return V2Driver(UNIFIED)


def join(cg: ContainerCgroup, proc: subprocess.Popen[bytes]) -> None:
    for f in cg.procs_files():
        with open(f, "w") as fh:
            fh.write(str(proc.pid))
    assert proc.pid in cg.pids()


def release(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdin is not None
    proc.stdin.write(b"go\n")
    proc.stdin.flush()


def ask(proc: subprocess.Popen[bytes], specs: list[str]) -> dict[str, int]:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write((" ".join(specs) + "\n").encode())
    proc.stdin.flush()
    line = proc.stdout.readline()
    assert line, f"probe exited with {proc.wait(5)}"
    result: dict[str, int] = json.loads(line)
    return result


def make_nodes(tmp_path: Path, devs: dict[str, tuple[int, int]]) -> dict[str, Path]:
    """Char device nodes in tmp_path, so tests need not rely on what /dev has (no /dev/mem here)."""
    out = {}
    for name, (major, minor) in devs.items():
        p = tmp_path / name
        os.mknod(p, stat.S_IFCHR | 0o666, os.makedev(major, minor))
        out[name] = p
    return out


def check_against_policy(proc: subprocess.Popen[bytes], policy: DevicePolicy,
                         nodes: dict[str, Path], modes: tuple[str, ...] = ("r", "w")) -> dict[str, int]:
    """The kernel's answer must be EPERM exactly where the policy says no (other errnos come
    from drivers of absent devices, after the cgroup check passed)."""
    specs = [f"{p}={m}" for p in nodes.values() for m in modes]
    got = ask(proc, specs)
    for p in nodes.values():
        st = os.stat(p)
        for m in modes:
            allowed = policy.allows("c", os.major(st.st_rdev), os.minor(st.st_rdev), m)
            assert (got[f"{p}={m}"] != errno.EPERM) == allowed, (p, m, got[f"{p}={m}"], policy)
    return got


def wait_for(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def read_counter(path: Path) -> int:
    for _ in range(100):
        text = path.read_text().strip()
        if text:
            return int(text)
        time.sleep(0.005)  # caught between truncate and write
    raise AssertionError(f"{path} stays empty")


# ---- v1 -----------------------------------------------------------------------------------


def test_v1_layout_limits_open_existing_and_remove(v1: V1Driver, v1_group: Callable[..., ContainerCgroup]) -> None:
    cg = v1_group(CgroupLimits(memory_mb=64, cpus="0", pids_max=20))
    own = {c: line.split(":", 2)[2] for line in Path("/proc/self/cgroup").read_text().splitlines()
           for c in line.split(":", 2)[1].split(",") if c}
    assert len(cg.paths) == len(v1.hierarchies) >= 3
    for path in cg.paths:
        assert path.is_dir() and path.name == cg.name
    mem = next(p for p in cg.paths if (p / "memory.limit_in_bytes").exists())
    assert str(mem).endswith(own["memory"].rstrip("/") + "/" + cg.name)  # under our own group
    assert (mem / "memory.limit_in_bytes").read_text().strip() == str(64 << 20)
    pids_dir = next(p for p in cg.paths if (p / "pids.max").exists())
    assert (pids_dir / "pids.max").read_text().strip() == "20"
    cpuset = next(p for p in cg.paths if (p / "cpuset.cpus").exists())
    assert (cpuset / "cpuset.cpus").read_text().strip() == "0"
    assert (cpuset / "cpuset.mems").read_text().strip() == (cpuset.parent / "cpuset.mems").read_text().strip()

    again = v1.open_existing(cg.name)
    assert again is not None and sorted(again.paths) == sorted(cg.paths)
    again.remove()
    assert not any(p.exists() for p in cg.paths)
    cg.remove()  # idempotent
    assert v1.open_existing(cg.name) is None


def test_v1_failed_create_leaves_nothing(v1: V1Driver, v1_group: Callable[..., ContainerCgroup]) -> None:
    ncpu = os.cpu_count() or 1
    name = f"cmltest-{os.getpid()}-bad"
    with pytest.raises(OSError, match=rf"'{ncpu + 5}' to .*cpuset\.cpus"):
        v1.create(name, CgroupLimits(cpus=str(ncpu + 5)))
    assert v1.open_existing(name) is None
    assert not any((own / name).exists() for own in v1.hierarchies.values())

    cg = v1_group()
    with pytest.raises(FileExistsError, match="already exists"):
        v1.create(cg.name, CgroupLimits())
    assert all(p.is_dir() for p in cg.paths)  # the existing group is untouched
    with pytest.raises(ValueError):
        v1.create("../escape", CgroupLimits())


@pytest.mark.req("APS 04", "CR 7.2")
def test_v1_memory_limit_oom_kills(v1_group: Callable[..., ContainerCgroup], procs: Procs) -> None:
    cg = v1_group(CgroupLimits(memory_mb=64))
    proc = procs.held([PY, "-c", "b = bytearray(200 << 20)"])
    join(cg, proc)
    assert cg.oom_killed() == 0
    release(proc)
    assert proc.wait(30) == -signal.SIGKILL
    assert cg.oom_killed() >= 1


@pytest.mark.req("CR 7.1")
def test_v1_pids_max_stops_fork_loop(v1_group: Callable[..., ContainerCgroup], procs: Procs) -> None:
    cg = v1_group(CgroupLimits(pids_max=5))
    forker = ("import os, time\nn = 0\nfor _ in range(20):\n    try:\n        pid = os.fork()\n"
              "    except OSError:\n        break\n    if pid == 0:\n        time.sleep(60)\n        os._exit(0)\n"
              "    n += 1\nprint(n, flush=True)\ntime.sleep(60)\n")
    proc = procs.held([PY, "-c", forker])
    join(cg, proc)
    release(proc)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"4"  # itself + 4 children = pids.max
    assert cg.pids_current() == 5
    assert len(cg.pids()) == 5
    cg.kill_all()
    assert cg.pids() == []
    assert proc.wait(5) == -signal.SIGKILL


@pytest.mark.req("APS 04", "CR 7.2")
def test_v1_cpuset_restricts(v1_group: Callable[..., ContainerCgroup], procs: Procs) -> None:
    cpu = str((os.cpu_count() or 1) - 1)
    cg = v1_group(CgroupLimits(cpus=cpu))
    proc = procs.held(["/bin/sleep", "60"])
    join(cg, proc)
    release(proc)
    status = Path(f"/proc/{proc.pid}/status").read_text()
    assert f"Cpus_allowed_list:\t{cpu}\n" in status


# ---- v2 on the unified hierarchy of this hybrid host -------------------------------------


@pytest.mark.req("CR 7.2")
def test_v2_limits_need_controllers(v2: V2Driver) -> None:
    available = (v2.own / "cgroup.controllers").read_text().split()
    if "memory" in available:
        pytest.skip("memory controller is available on this v2 tree; tested in the guest instead")
    name = f"cmltest2-{os.getpid()}-nolimit"
    with pytest.raises(RuntimeError, match="memory"):
        v2.create(name, CgroupLimits(memory_mb=64))
    assert not (v2.own / name).exists()
    assert not (v2.own / v2.daemon_leaf).exists()  # nothing to enable, so the daemon did not move


def test_v2_daemon_moves_into_leaf(procs: Procs) -> None:
    """The delegation step (empty <own> into <own>/supervisor before enabling controllers), on a
    stand-in <own> group: this host's unified tree has no controllers, so create() never needs it."""
    if not any(m.mountpoint == UNIFIED and m.fstype == "cgroup2" for m in cgroup_mounts()):
        pytest.skip(f"no cgroup2 mounted at {UNIFIED}")
    own = UNIFIED / f"cmltest2-{os.getpid()}-own"
    own.mkdir()
    try:
        daemon = procs.held(["/bin/sleep", "60"])
        (own / "cgroup.procs").write_text(str(daemon.pid))
        drv = V2Driver(UNIFIED, own=own)
        drv._move_into_leaf()
        assert (own / "cgroup.procs").read_text() == ""
        assert (own / "supervisor" / "cgroup.procs").read_text().split() == [str(daemon.pid)]
        assert V2Driver(UNIFIED, own=own / "supervisor").own == own  # a restart inside the leaf
        with pytest.raises(ValueError):
            drv.create("supervisor", CgroupLimits())
        cg = drv.create("c1", CgroupLimits())
        assert cg.path == own / "c1"
        cg.remove()
    finally:
        procs.cleanup()
        rmdir_tree(own)  # bottom-up, retrying while the killed task leaves


# ---- behaviour both drivers must share: one test, run on each --------------------------------


@pytest.fixture(params=["v1", "v2"])
def group(request: pytest.FixtureRequest, procs: Procs) -> Iterator[Callable[..., ContainerCgroup]]:
    """A group factory on the v1 or the v2 driver (skipped where this host lacks the hierarchy)."""
    if request.param == "v1":
        drv: V1Driver | V2Driver = request.getfixturevalue("v1")
    else:
        drv = request.getfixturevalue("v2")
    groups: list[ContainerCgroup] = []

    def make(limits: CgroupLimits | None = None) -> ContainerCgroup:
        cg = drv.create(f"cmltest{drv.version}-{os.getpid()}-{len(groups)}", limits or CgroupLimits())
        groups.append(cg)
        return cg

    yield make
    _cleanup_groups(groups)  # first: kill_all also ends frozen tasks, which a plain SIGKILL leaves waiting
    procs.cleanup()


@pytest.mark.req("TSF Device Access Control", "CR 7.7")
def test_devices_follow_the_policy(group: Callable[..., ContainerCgroup], procs: Procs, tmp_path: Path) -> None:
    cg = group()
    policy = DevicePolicy.generic()
    cg.apply_devices(policy)
    nodes = make_nodes(tmp_path, {"mem": (1, 1), "kmsg": (1, 11), "zero": (1, 5), "pts3": (136, 3),
                                  "pts4": (136, 4)})
    nodes["null"] = Path("/dev/null")
    proc = procs.probe()
    join(cg, proc)
    got = check_against_policy(proc, policy, nodes)
    assert got[f"{nodes['mem']}=r"] == errno.EPERM
    assert got["/dev/null=w"] == 0 and got[f"{nodes['zero']}=r"] == 0

    sh = procs.held(["/bin/sh", "-c", 'head -c1 /dev/zero | od -An -tx1; head -c1 "$1"', "sh", str(nodes["mem"])])
    join(cg, sh)
    release(sh)
    out, err = sh.communicate(timeout=10)
    assert out.strip() == b"00"
    assert b"Operation not permitted" in err

    # A change at runtime: allow read of kmsg, withdraw zero.
    policy.allow("c 1:11 r")
    policy.deny("c 1:5")
    cg.apply_devices(policy)
    got = check_against_policy(proc, policy, nodes)
    assert got[f"{nodes['kmsg']}=r"] == 0 and got[f"{nodes['kmsg']}=w"] == errno.EPERM
    assert got[f"{nodes['zero']}=r"] == errno.EPERM

    # A hole inside the pts wildcard: v2's program can express it, v1's lists cannot, and say so.
    policy.deny("c 136:3")
    if isinstance(cg, V1Cgroup):
        with pytest.raises(RuntimeError, match="cannot deny"):
            cg.apply_devices(policy)
        return
    cg.apply_devices(policy)
    got = check_against_policy(proc, policy, nodes)
    assert got[f"{nodes['pts3']}=r"] == errno.EPERM and got[f"{nodes['pts4']}=r"] != errno.EPERM
    # Going back to a wider policy widens access: the old program is detached after a swap.
    wide = DevicePolicy.generic()
    wide.allow("c 1:*")
    cg.apply_devices(wide)
    got = check_against_policy(proc, wide, nodes)
    assert got[f"{nodes['zero']}=r"] == 0 and got[f"{nodes['mem']}=r"] != errno.EPERM


def test_freeze_and_thaw(group: Callable[..., ContainerCgroup], procs: Procs, tmp_path: Path) -> None:
    cg = group()
    counter = tmp_path / "counter"
    counter.write_text("0")
    proc = procs.held(["/bin/sh", "-c", 'i=0; while :; do i=$((i+1)); echo $i > "$1"; sleep 0.01; done',
                       "sh", str(counter)])
    join(cg, proc)
    release(proc)
    wait_for(lambda: read_counter(counter) > 3)
    cg.freeze()
    assert cg.is_frozen()
    frozen_at = read_counter(counter)
    time.sleep(0.3)
    assert read_counter(counter) == frozen_at
    cg.thaw()
    assert not cg.is_frozen()
    wait_for(lambda: read_counter(counter) > frozen_at + 3)


def test_kill_all_even_frozen_and_remove(group: Callable[..., ContainerCgroup], procs: Procs) -> None:
    cg = group()
    proc = procs.held(["/bin/sh", "-c", "sleep 60 & sleep 60 & (sleep 60 &) ; wait"])
    join(cg, proc)
    release(proc)
    wait_for(lambda: len(cg.pids()) >= 4)
    if not isinstance(cg, V1Cgroup):  # kill and remove cover a nested subtree too (v2)
        sub = cg.path / "nested"
        sub.mkdir()
        child = procs.held(["/bin/sleep", "60"])
        (sub / "cgroup.procs").write_text(str(child.pid))
        release(child)
        assert child.pid in cg.pids()
    cg.freeze()  # kill_all also works on a frozen group
    cg.kill_all()
    assert cg.pids() == []
    assert proc.wait(5) == -signal.SIGKILL
    cg.remove()
    assert not any(p.exists() for p in cg.paths)
    cg.remove()  # removing twice is harmless
