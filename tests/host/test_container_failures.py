"""Containers that fail, misbehave or lose their cmld, against a real cmld (hosted mode).

Every case checks the same four things: cmld says clearly what went wrong (the start error's
`error_message` or its log), the container ends STOPPED, cmld still answers `list`, and nothing
of the container is left on the host (`host_leaks`: mounts, loop devices, cgroups, the netns
binding, runtime records, run dirs; after a cmld crash also no process in the container's cgroups).

The crash cases SIGKILL cmld during a start, a stop and a run: the next cmld must stop what the
old one left and release everything it held.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ..conftest import BIN, CliResult, Daemon, DaemonFactory, cli, is_root
from .containers import (
    container_conf,
    host_leaks,
    install_guestos,
    run,
    start,
    state,
    uuid_of,
    wait_state,
)

pytestmark = [
    pytest.mark.host,
    pytest.mark.skipif(not is_root(), reason="needs root (namespaces, loop mounts, cgroups)"),
    pytest.mark.skipif(any(shutil.which(t) is None for t in ("gcc", "mkfs.ext4", "debugfs", "losetup"))
                       or not Path("/bin/busybox").exists(),
                       reason="building the demo GuestOS needs gcc, e2fsprogs and /bin/busybox"),
]

FAST = ("--stop-timeout", "3", "--boot-timeout", "30")


@dataclass
class Env:
    """One test's cmld setup: base dir with the demo GuestOS, run dir, and the uuids it created."""

    factory: DaemonFactory
    tmp: Path
    base: Path
    src: Path
    uuids: list[str] = field(default_factory=list)

    @property
    def run_dir(self) -> Path:
        return self.tmp / "cmld-run"  # DaemonFactory.start(name="cmld")

    def cmld(self, *extra: str) -> Daemon:
        return self.factory.start(*extra, base=self.base)

    def create(self, d: Daemon, name: str, guestos: str = "busybox", extra: str = "", **fields: object) -> str:
        conf = self.tmp / f"{name}.conf"
        conf.write_text(container_conf(name, guestos, **fields) + extra)
        r = cli(d.socket, "create", str(conf))
        assert r.rc == 0, r.out + r.err
        u = uuid_of(d, name)
        self.uuids.append(u)
        return u


@pytest.fixture
def env(cmld_factory: DaemonFactory, tmp_path: Path, guestos_src: Path) -> Iterator[Env]:
    base = tmp_path / "cmld-base"
    base.mkdir()
    install_guestos(guestos_src, base)
    e = Env(cmld_factory, tmp_path, base, guestos_src)
    try:
        yield e
    finally:
        # Whatever a failing case left must not outlive it: daemons first, then netns bindings.
        cmld_factory.stop_all()
        for u in e.uuids:
            unbind_netns(u)


# ---------------------------------------------------------------------- checks


def error_message(r: CliResult) -> str:
    m = re.search(r'^error_message: "(.*)"$', r.out, re.MULTILINE)
    assert m, f"no error_message in {r.out!r} {r.err!r}"
    return m.group(1)


def assert_refused(d: Daemon, name: str, r: CliResult, *needles: str) -> str:
    """The start was refused with every needle in the message, and the container is STOPPED."""
    assert r.rc != 0 and "CONTAINER_START_EINTERNAL" in r.out, r.out + r.err
    msg = error_message(r)
    for n in needles:
        assert n.lower() in msg.lower(), f"{n!r} not in error_message {msg!r}"
    assert state(d, name) == "STOPPED"
    return msg


def assert_healthy(env: Env, d: Daemon, uuid: str) -> None:
    """cmld alive and answering `list` (with the container STOPPED), nothing of it on the host."""
    assert d.alive(), d.log_text()[-2000:]
    t0 = time.monotonic()
    r = cli(d.socket, "list", timeout=10)
    assert r.rc == 0 and uuid in r.out, r.out + r.err
    assert time.monotonic() - t0 < 5
    assert host_leaks(env.run_dir, [uuid]) == []


def container_procs(uuid: str) -> list[str]:
    """Live processes (zombies excluded: the sandbox's PID 1 may never reap them) in a cgroup of uuid."""
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cg = (p / "cgroup").read_text()
            st = (p / "stat").read_text()
        except OSError:
            continue
        if uuid in cg and st.rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
            cmdline = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{p.name} {cmdline}")
    return found


def pids_group(uuid: str) -> Path:
    hits = [p for p in Path("/sys/fs/cgroup/pids").glob(f"**/{uuid}") if p.is_dir()]
    if not hits:
        hits = [p.parent for p in Path("/sys/fs/cgroup").glob(f"**/{uuid}/pids.current")]
    assert hits, f"no pids cgroup of {uuid}"
    return hits[0]


def read_keyed(path: Path) -> dict[str, int]:
    return {k: int(v) for k, v in (line.split() for line in path.read_text().splitlines() if line.strip())}


# ---------------------------------------------------------------------- refused starts


@pytest.mark.req("TSF Secure Container Init", "APS 02", "CR 3.4", "NDR 3.2")
def test_tampered_root_image_is_refused(env: Env) -> None:
    d = env.cmld(*FAST)
    u = env.create(d, "c1")
    img = env.base / "operatingsystems" / "busybox-1" / "root.img"
    size = img.stat().st_size
    with img.open("r+b") as f:
        f.seek(size // 2)
        b = f.read(1)
        f.seek(size // 2)
        f.write(bytes([b[0] ^ 0xFF]))
    assert img.stat().st_size == size
    msg = assert_refused(d, "c1", start(d, "c1"), "SHA-256", "tampered", "root.img")
    assert "BOOTING" not in d.log_text(), "the launcher ran on a tampered image"
    losetup = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=False).stdout
    assert str(img) not in losetup
    assert str(img) not in Path("/proc/self/mountinfo").read_text()
    assert msg in d.log_text()
    assert_healthy(env, d, u)


def test_missing_root_image_is_refused(env: Env) -> None:
    d = env.cmld(*FAST)
    u = env.create(d, "c1")
    (env.base / "operatingsystems" / "busybox-1" / "root.img").unlink()
    assert_refused(d, "c1", start(d, "c1"), "missing", "root.img")
    assert_healthy(env, d, u)


def test_root_image_of_wrong_size_is_refused(env: Env) -> None:
    d = env.cmld(*FAST)
    u = env.create(d, "c1")
    img = env.base / "operatingsystems" / "busybox-1" / "root.img"
    size = img.stat().st_size
    with img.open("ab") as f:
        f.write(b"\0")
    assert_refused(d, "c1", start(d, "c1"), "root.img", f"{size + 1} bytes", str(size))
    assert_healthy(env, d, u)


def test_empty_image_larger_than_free_space_is_refused(cmld_factory: DaemonFactory, tmp_path: Path,
                                                       guestos_src: Path) -> None:
    """The base dir on a 40 MiB tmpfs of the test: a 16 MiB data image fits at create (the
    create-time check, test_device_operations.py), but the disk fills up before the start: the
    start is refused, and no partial image may be left behind."""
    base = tmp_path / "small-base"
    base.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m,mode=0755", "tmpfs", str(base)], check=True)
    env = Env(cmld_factory, tmp_path, base, guestos_src)
    try:
        install_guestos(guestos_src, base)
        d = env.cmld(*FAST)
        u = env.create(d, "c1", extra='image_sizes { image_name: "data" image_size: 16 }\n')
        filler = base / "filler"
        with filler.open("wb") as f:
            f.write(b"\xff" * (24 << 20))
        assert_refused(d, "c1", start(d, "c1"), "not enough space", "data.img", "16 MiB")
        assert list(base.rglob("data.img*")) == []
        filler.unlink()
        assert_healthy(env, d, u)
        d.stop()
    finally:
        cmld_factory.stop_all()
        subprocess.run(["umount", "-l", str(base)], check=False)


def test_missing_init_without_cservice_to_fall_back_on_is_refused(env: Env) -> None:
    """A missing init_path falls back to /sbin/cservice (test_cservice_guests.py); without the
    binary the start is refused, naming both."""
    install_guestos(env.src, env.base, name="noinit", init_path="/sbin/nonexistent")
    d = env.cmld(*FAST, "--cservice", str(env.tmp / "no-cservice"))
    u = env.create(d, "c1", guestos="noinit")
    assert_refused(d, "c1", start(d, "c1"), "init /sbin/nonexistent is missing", "/sbin/cservice",
                   "no usable cservice binary")
    assert container_procs(u) == []
    assert_healthy(env, d, u)


# ---------------------------------------------------------------------- misbehaving containers


def test_container_ignoring_shutdown_is_killed_after_the_stop_timeout(env: Env) -> None:
    """No service, an init that ignores every signal: SHUTDOWN, `halt` (ignored), SIGKILL after 2 s."""
    install_guestos(env.src, env.base, name="stubborn", init_path="/bin/sh",
                    init_param=["-c", "trap '' TERM USR1 USR2 INT HUP; while true; do sleep 1; done"])
    d = env.cmld("--stop-timeout", "2", "--boot-timeout", "60")
    u = env.create(d, "c1", guestos="stubborn")
    r = start(d, "c1")
    assert r.rc == 0, r.out + r.err
    wait_state(d, "c1", "BOOTING", timeout=10)  # no service ever reports boot completed
    t0 = time.monotonic()
    r = cli(d.socket, "stop", "c1")
    assert r.rc == 0 and "CONTAINER_STOP_OK" in r.out, r.out + r.err
    assert state(d, "c1") == "SHUTDOWN"
    wait_state(d, "c1", "STOPPED", timeout=15)
    took = time.monotonic() - t0
    assert 1.5 <= took <= 8, f"stopped after {took:.2f} s"
    log = d.log_text()
    assert "stop timeout (2.0 s)" in log, log[-3000:]
    assert "signal SIGKILL" in log
    assert_healthy(env, d, u)


@pytest.mark.req("CR 7.1")
def test_fork_bomb_is_capped_by_pids_max(env: Env) -> None:
    d = env.cmld("--pids-max", "64", "--stop-timeout", "3", "--boot-timeout", "30")
    u = env.create(d, "c1")
    assert start(d, "c1").rc == 0
    wait_state(d, "c1", "RUNNING", timeout=15)
    group = pids_group(u)
    assert (group / "pids.max").read_text().strip() == "64"
    # 200 long sleepers: the shell runs out of pids long before.
    r = run(d, "c1", "nopty", "sh", "-c",
            "for i in $(seq 200); do sleep 30 </dev/null >/dev/null 2>&1 & done; echo started", timeout=30)
    assert "can't fork" in r.out + r.err, r.out + r.err
    assert int((group / "pids.current").read_text()) <= 64
    assert read_keyed(group / "pids.events").get("max", 0) > 0
    # The sleepers go (killall is an applet: no fork), then a real fork bomb in the background.
    r = run(d, "c1", "nopty", "killall", "sleep", timeout=30)
    assert r.rc == 0, r.out + r.err
    events = read_keyed(group / "pids.events").get("max", 0)
    r = run(d, "c1", "nopty", "sh", "-c", "exec </dev/null >/dev/null 2>&1; b() { b | b & }; b", timeout=30)
    assert r.rc in (0, 2), r.out + r.err  # 2: the shell itself could not fork any more
    peak = 0
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        current = int((group / "pids.current").read_text())
        assert current <= 64
        peak = max(peak, current)
        t0 = time.monotonic()
        lr = cli(d.socket, "list", timeout=10)
        assert lr.rc == 0 and u in lr.out
        assert time.monotonic() - t0 < 2, "cmld slow to answer during the fork bomb"
        assert subprocess.run(["true"], check=False, timeout=5).returncode == 0
    assert peak >= 48, f"the bomb never came near the cap (peak {peak} pids)"
    assert read_keyed(group / "pids.events").get("max", 0) > events
    assert cli(d.socket, "stop", "c1").rc == 0
    wait_state(d, "c1", "STOPPED", timeout=15)
    assert container_procs(u) == []
    assert_healthy(env, d, u)


def test_out_of_memory_init_stops_the_container(env: Env) -> None:
    """ram_limit 32 MB, an init whose shell reads 200 MB into a variable: the kernel kills it."""
    install_guestos(env.src, env.base, name="hog", init_path="/bin/sh",
                    init_param=["-c", "sleep 0.5; x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo done"])
    d = env.cmld(*FAST)
    u = env.create(d, "c1", guestos="hog", ram_limit=32)
    r = start(d, "c1")
    assert r.rc == 0, r.out + r.err
    wait_state(d, "c1", "STOPPED", timeout=30)
    log = d.log_text()
    m = re.search(r"container c1: init \d+ ended \((.*)\)$", log, re.MULTILINE)
    assert m, log[-3000:]
    assert "signal SIGKILL" in m.group(1) and "OOM kill(s)" in m.group(1), m.group(0)
    assert_healthy(env, d, u)


# ---------------------------------------------------------------------- cmld killed (SIGKILL)
#
# Each crash case collects everything wrong after the restart (state, host leaks, live processes
# in the container's cgroups, whether the container starts again) and asserts on the whole list,
# so a failure shows the full damage rather than the first symptom.


def kill_cmld(d: Daemon) -> None:
    d.proc.kill()
    d.proc.wait(10)


def unbind_netns(uuid: str) -> None:
    ns = Path("/run/netns") / uuid
    if ns.exists():
        subprocess.run(["umount", "-l", str(ns)], capture_output=True, check=False)
        ns.unlink(missing_ok=True)


def recovery_problems(env: Env, d: Daemon, name: str, uuid: str) -> list[str]:
    """After a restart of cmld: what is wrong with the container a killed cmld left."""
    if not d.alive():
        return ["cmld died: " + d.log_text()[-1000:]]
    problems = []
    if (s := state(d, name)) != "STOPPED":
        problems.append(f"state {s}")
    problems += host_leaks(env.run_dir, [uuid])
    problems += [f"process {p}" for p in container_procs(uuid)]
    cont_dir = env.base / "containers" / uuid
    problems += [f"half-made image {p.name}" for p in cont_dir.glob("*.tmp")] if cont_dir.is_dir() else []
    return problems


def restart_problems(d: Daemon, name: str, uuid: str) -> list[str]:
    """Start the container again (it must reach RUNNING), stop it; what went wrong."""
    r = start(d, name)
    if r.rc != 0:
        return [f"start again refused: {r.out.strip()}"]
    wait_state(d, name, "RUNNING", timeout=15)
    assert cli(d.socket, "stop", name).rc == 0
    wait_state(d, name, "STOPPED", timeout=15)
    return []


def test_cmld_killed_during_start(env: Env) -> None:
    """SIGKILL to cmld at several points of a start (each time a fresh cmld on the same base and
    run dir, which first recovers what the previous one left). The first round falls into the first
    start's mkfs of data.img, the last ones after RUNNING."""
    d = env.cmld(*FAST)
    u = env.create(d, "c1")
    problems: list[str] = []
    prev = 0.0
    for i, delay in enumerate((0.0, 0.01, 0.03, 0.06, 0.1, 0.2)):
        if i:
            d = env.cmld(*FAST)
            problems += [f"after a kill at +{prev:.2f} s: {p}" for p in recovery_problems(env, d, "c1", u)]
            unbind_netns(u)  # a leftover binding would make every later round fail the same way
        mark = len(d.log_text())
        with subprocess.Popen([str(BIN / "cml-control"), "-s", str(d.socket), "start", "c1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as client:
            deadline = time.monotonic() + 10
            while "STOPPED -> STARTING" not in d.log_text()[mark:]:
                assert time.monotonic() < deadline, d.log_text()[mark:]
                time.sleep(0.002)
            time.sleep(delay)
            kill_cmld(d)
            client.wait(10)
        prev = delay
    d = env.cmld(*FAST)
    problems += [f"after a kill at +{prev:.2f} s: {p}" for p in recovery_problems(env, d, "c1", u)]
    problems += restart_problems(d, "c1", u)
    assert problems == [], "\n".join(problems)
    assert_healthy(env, d, u)


def test_cmld_killed_during_stop(env: Env) -> None:
    d = env.cmld(*FAST)
    u = env.create(d, "c1")
    assert start(d, "c1").rc == 0
    wait_state(d, "c1", "RUNNING", timeout=15)
    r = cli(d.socket, "stop", "c1")
    kill_cmld(d)
    assert r.rc == 0 and "CONTAINER_STOP_OK" in r.out, r.out + r.err
    d = env.cmld(*FAST)
    assert f"container c1 ({u}) was left by a previous cmld" in d.log_text()
    problems = recovery_problems(env, d, "c1", u) + restart_problems(d, "c1", u)
    assert problems == [], "\n".join(problems)
    assert_healthy(env, d, u)


def test_cmld_killed_while_container_runs(env: Env) -> None:
    d = env.cmld(*FAST)
    u = env.create(d, "c1")
    assert start(d, "c1").rc == 0
    wait_state(d, "c1", "RUNNING", timeout=15)
    kill_cmld(d)
    assert container_procs(u) != [], "the container should outlive its cmld"
    d = env.cmld(*FAST)
    log = d.log_text()
    assert f"container c1 ({u}) was left by a previous cmld; stopping it and cleaning up" in log, log[-3000:]
    problems = recovery_problems(env, d, "c1", u) + restart_problems(d, "c1", u)
    assert problems == [], "\n".join(problems)
    assert_healthy(env, d, u)


def test_leak_checks_see_a_running_container(env: Env) -> None:
    """Guards the crash cases (expected to fail) against failing or passing for the wrong reason:
    the process scan and host_leaks do see a running container, and see nothing once it stopped."""
    d = env.cmld(*FAST)
    u = env.create(d, "c1")
    assert start(d, "c1").rc == 0
    wait_state(d, "c1", "RUNNING", timeout=15)
    assert container_procs(u) != []
    leaks = host_leaks(env.run_dir, [u])
    assert any(x.startswith("cgroup") for x in leaks) and f"record {u}" in leaks, leaks
    assert cli(d.socket, "stop", "c1").rc == 0
    wait_state(d, "c1", "STOPPED", timeout=15)
    assert recovery_problems(env, d, "c1", u) == []
    assert restart_problems(d, "c1", u) == []
    assert_healthy(env, d, u)
