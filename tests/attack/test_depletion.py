"""Depletion: starving the host, the daemon or another container of a resource (CPU, memory,
processes, disk, per-user kernel limits, the log, the daemon's attention), or taking a host
process down.

Every attack here is bounded: a fork bomb stops at the first refused fork, a memory hog is
capped, the disk attacks fill the arena's own loop file system, CPU attacks ask for 1 % of a CPU,
the per-user limit attacks leave the host most of its allowance and measure the rest.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import resource
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ..conftest import BIN
from .arena import Arena
from .conftest import Judge, modes
from .daemon import DAEMON_OOM_ADJ, control_status, host_leftovers, log_size, stop_daemon
from .guestos import ATK

LOG_BUDGET = 64 * 1024  # bytes of cmld log a burst of refused requests may cost


def _number(pattern: str, text: str) -> int:
    m = re.search(pattern, text)
    assert m, (pattern, text)
    return int(m.group(1))


@modes()
@pytest.mark.req("CR 7.1")
def test_depletion_fork_bomb(arena: Arena, mode: str, judge: Judge, unaffected: Callable[[], None]) -> None:
    out = arena.attack(mode, "fork_bomb", "5000")
    assert out.verdict == "done", out.output
    forked = _number(r"forked (\d+)", out.text)
    if forked >= 5000 or "EAGAIN" not in out.text:
        judge.succeeded(out.text)
    assert forked < 256, f"{forked} processes in a container whose pids limit is 256"
    judge.blocked(f"{out.text} (pids limit 256)")
    unaffected()


@modes()
@pytest.mark.req("CR 7.1")
def test_depletion_memory_hog(arena: Arena, mode: str, judge: Judge, unaffected: Callable[[], None]) -> None:
    """512 MiB in a container with ram_limit 96: the OOM killer of its own memory cgroup."""
    out = arena.attack(mode, "mem_hog", "512")
    if out.verdict == "SUCCEEDED":
        judge(out)
    touched = re.findall(r"touched (\d+) MiB", out.output)
    assert out.rc == 137 and out.verdict == "none", out.output
    judge.blocked(f"killed (exit 137) after touching {touched[-1] if touched else 0} MiB of 512 (ram_limit 96)")
    unaffected()


@pytest.mark.parametrize("where", ["/run", "/tmp", "/dev", "/dev/shm"])
@modes()
def test_depletion_tmpfs_fill(arena: Arena, mode: str, where: str, judge: Judge,
                              unaffected: Callable[[], None]) -> None:
    """The container's tmpfs mounts take memory; they must be bounded by its limits."""
    out = arena.attack(mode, "fill", f"{where}/atk-fill", "512")
    assert out.verdict in ("done", "none"), out.output
    if out.verdict == "none":  # killed by its memory cgroup while filling
        judge.blocked(f"killed while filling {where} (exit {out.rc})")
    else:
        written = _number(r"wrote (\d+)", out.text)
        if written >= 512 << 20:
            judge.succeeded(out.text)
        judge.blocked(out.text)
    unaffected()


@modes()
def test_depletion_host_disk_through_volume(arena: Arena, mode: str, judge: Judge,
                                           unaffected: Callable[[], None]) -> None:
    """Fill /data: the host's file system (here the arena's) may lose at most the volume's size
    (32 MB)."""
    assert arena.fs is not None
    before = arena.fs.used_bytes()
    out = arena.attack(mode, "fill", "/data/atk-fill", "2048")
    assert out.verdict == "done", out.output
    grew = arena.fs.used_bytes() - before
    written = _number(r"wrote (\d+)", out.text)
    if grew > 40 << 20 or written > 40 << 20:
        judge.succeeded(f"{out.text}; the host file system lost {grew >> 20} MiB")
    judge.blocked(f"{out.text}; the host file system lost {grew >> 20} MiB (volume size 32 MB)")
    unaffected()


@modes()
def test_depletion_sched_deadline(arena: Arena, mode: str, judge: Judge, unaffected: Callable[[], None]) -> None:
    judge(arena.attack(mode, "sched", "deadline"))
    unaffected()


@pytest.mark.parametrize("policy", ["fifo", "rr"])
@modes()
def test_depletion_sched_realtime(arena: Arena, mode: str, policy: str, judge: Judge,
                                  unaffected: Callable[[], None]) -> None:
    """SCHED_FIFO/SCHED_RR (priority 1, for a task that sleeps): refused by the seccomp policy
    (sched_setscheduler only to SCHED_OTHER/BATCH/IDLE), without CAP_SYS_NICE and with
    RLIMIT_RTPRIO 0; where the kernel limits real-time time per cpu cgroup
    (cpu.rt_runtime_us of the container's group is 0), by that too."""
    judge(arena.attack(mode, "sched", policy))
    unaffected()


@modes()
@pytest.mark.req("CR 7.1")
def test_depletion_cpuset_escape(arena: Arena, mode: str, judge: Judge, unaffected: Callable[[], None]) -> None:
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs two CPUs")
    with arena.throwaway(mode, assign_cpus="0") as name:
        judge(arena.attack(name, "affinity", "1"))
    unaffected()


def _root_inotify_estimate() -> int:
    """inotify instances host root holds at most: file descriptors of uid-0 processes that are
    inotify instances (an overestimate: several descriptors may share one)."""
    n = 0
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if p.stat().st_uid != 0:
                continue
            for fd in (p / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) == "anon_inode:inotify":
                        n += 1
    return n


def _root_inotify_watches() -> int:
    """inotify watches host root's processes hold at most (fdinfo lines of their instances; an
    overestimate when several descriptors share one)."""
    n = 0
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if p.stat().st_uid != 0:
                continue
            for fd in (p / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) == "anon_inode:inotify":
                        n += (p / "fdinfo" / fd.name).read_text().count("inotify wd:")
    return n


def _owner(mode: str) -> str:
    return "the container's UID (broker)" if mode == "no-userns" else "its user namespace"


@modes()
@pytest.mark.req("CR 7.1")
def test_depletion_inotify_instances(arena: Arena, mode: str, judge: Judge, unaffected: Callable[[], None]) -> None:
    """fs.inotify.max_user_instances is counted per user of the initial user namespace: a
    container's instances used to be host root's (no user namespace) or charged to host root as
    the owner of its user namespace, and a container that took them all left root on the host
    unable to inotify_init (observed before this suite). Now a user-namespaced container's are
    charged to its own owner UID within its namespace's limit, and a container without one gets
    its instances from its inotify broker, charged to its reserved UID: either way at most an
    eighth of the limit. The container tries for half of it (never so many that host root would
    run out if it got them all); `unaffected` then checks that root on the host can still make one."""
    limit = int(Path("/proc/sys/fs/inotify/max_user_instances").read_text())
    share = limit // 8
    want = min(limit // 2, limit - _root_inotify_estimate() - 16)
    if want <= share:
        pytest.skip(f"host root already holds too many inotify instances to test safely (limit {limit})")
    out = arena.attack(mode, "inotify", str(want), "200")
    assert out.verdict == "done", out.output
    held = _number(r"held (\d+)", out.text)
    if held > share:
        judge.succeeded(f"{out.text} (limit {limit} per user, a container's share {share})")
    assert "EMFILE" in out.text, out.text  # refused as the kernel refuses at a per-user limit
    judge.blocked(f"{out.text}: charged to {_owner(mode)}, at most {share}")
    unaffected()


@modes()
@pytest.mark.req("CR 7.1")
def test_depletion_inotify_watches(arena: Arena, mode: str, judge: Judge, unaffected: Callable[[], None]) -> None:
    """fs.inotify.max_user_watches is per user too, and each watch is charged to the account of
    the instance it is added to: a container adds watches on more files than its eighth of the
    limit (on a tmpfs of its own). Without a budget the watches would be host root's, and a
    container with enough files could leave root on the host unable to watch anything."""
    limit = int(Path("/proc/sys/fs/inotify/max_user_watches").read_text())
    share = limit // 8
    want = share + 512
    if _root_inotify_watches() + want > limit - 1024:
        pytest.skip(f"host root already holds too many inotify watches to test safely (limit {limit})")
    out = arena.attack(mode, "inotify_watches", str(want), "200", "/tmp", timeout=120)
    assert out.verdict == "done", out.output
    held = _number(r"held (\d+)", out.text)
    if held > share:
        judge.succeeded(f"{out.text} (limit {limit} per user, a container's share {share})")
    assert "ENOSPC from inotify_add_watch" in out.text, out.text  # the kernel's answer at the watch limit
    judge.blocked(f"{out.text}: charged to {_owner(mode)}, at most {share}")
    unaffected()


_libc = ctypes.CDLL(None, use_errno=True)


class _MqAttr(ctypes.Structure):
    _fields_ = [("mq_flags", ctypes.c_long), ("mq_maxmsg", ctypes.c_long), ("mq_msgsize", ctypes.c_long),
                ("mq_curmsgs", ctypes.c_long), ("pad", ctypes.c_long * 4)]


def _root_mqueue_bytes() -> int:
    """Host root's current POSIX message queue bytes (the RLIMIT_MSGQUEUE count of uid 0 in the
    initial user namespace), measured without using any of it up: a tiny queue fits iff
    count + its size <= our own soft limit, so a binary search over our soft limit finds the
    count. Our soft limit is restored afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_MSGQUEUE)
    name = f"/atk-probe-{os.getpid()}".encode()
    attr = _MqAttr(0, 1, 1, 0)

    def fits(limit: int) -> bool:
        resource.setrlimit(resource.RLIMIT_MSGQUEUE, (limit, hard))
        q = _libc.mq_open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600, ctypes.byref(attr))
        if q < 0:
            return False
        _libc.mq_close(q)
        _libc.mq_unlink(name)
        return True

    try:
        lo, hi = 0, hard
        if not fits(hi):
            return hi
        while lo < hi:  # smallest limit that still fits
            mid = (lo + hi) // 2
            if fits(mid):
                hi = mid
            else:
                lo = mid + 1
        return lo
    finally:
        resource.setrlimit(resource.RLIMIT_MSGQUEUE, (soft, hard))


@modes()
def test_depletion_mqueue_bytes(arena: Arena, mode: str, judge: Judge, unaffected: Callable[[], None]) -> None:
    """RLIMIT_MSGQUEUE is counted per user as well: the container holds a message queue
    (10 x 8 KiB) and the host measures host root's count before and during."""
    before = _root_mqueue_bytes()
    name = arena.attackers[mode]
    proc = subprocess.Popen([str(BIN / "cml-control"), "-s", str(arena.d.socket), "run", name, "nopty", ATK,
                             "mqueue", "8192", "10", "3000"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        if first.startswith("RESULT done mq_open: EMFILE"):  # refused by the container's RLIMIT_MSGQUEUE
            proc.wait(30)
            judge.blocked(f"{first[12:].strip()}: the queue is over the container's RLIMIT_MSGQUEUE; host root's "
                          f"message queue bytes stay {_root_mqueue_bytes()} (were {before})")
            unaffected()
            return
        assert first.strip() == "held", first + proc.stdout.read()
        during = _root_mqueue_bytes()
        rest = proc.stdout.read()
    finally:
        proc.wait(30)
    after = _root_mqueue_bytes()
    grew = during - before
    if grew >= 10 * 8192:
        judge.succeeded(f"host root's message queue bytes went from {before} to {during} while the container "
                        f"held a queue of 10 x 8192 bytes ({after} after): the container spends host root's "
                        f"RLIMIT_MSGQUEUE ({resource.getrlimit(resource.RLIMIT_MSGQUEUE)[0]} bytes)")
    judge.blocked(f"host root's message queue bytes {before} -> {during} ({rest.strip()})")
    unaffected()


@modes()
def test_depletion_oom_score_adj_inherited(arena: Arena, mode: str, judge: Judge,
                                           unaffected: Callable[[], None]) -> None:
    """cmld runs with the unit's OOMScoreAdjust=-900 (500 on a machine whose root may not lower
    it); a container's processes must start from 0, not from cmld's value."""
    out = arena.attack(mode, "oom_inherited")
    assert out.verdict == "done", out.output
    own, init = _number(r"self (-?\d+)", out.text), _number(r"init (-?\d+)", out.text)
    if int(DAEMON_OOM_ADJ) in (own, init):
        judge.succeeded(f"{out.text}: cmld's value ({DAEMON_OOM_ADJ}); with the unit's -900 the global OOM "
                        f"killer spares every container process")
    judge.blocked(out.text)
    unaffected()


@modes()
def test_depletion_oom_score_adj_lowered(arena: Arena, mode: str, judge: Judge,
                                         unaffected: Callable[[], None]) -> None:
    """oom_score_adj -1000 makes a process immune to the OOM killer (needs CAP_SYS_RESOURCE of
    the host; where root itself lacks it, as on some build machines, the attack cannot work)."""
    judge(arena.attack(mode, "oom_lower"))
    unaffected()


@modes()
def test_depletion_log_flood_refused_mknod(arena: Arena, mode: str, judge: Judge,
                                           unaffected: Callable[[], None]) -> None:
    before = log_size(arena.d)
    out = arena.attack(mode, "mknod_flood", "2000")
    assert out.verdict == "done", out.output
    grew = log_size(arena.d) - before
    if grew > LOG_BUDGET:
        judge.succeeded(f"{out.text}: cmld's log grew by {grew} bytes")
    judge.blocked(f"{out.text}: cmld's log grew by {grew} bytes")
    unaffected()


@modes()
def test_depletion_log_flood_service_socket(arena: Arena, mode: str, judge: Judge,
                                            unaffected: Callable[[], None]) -> None:
    before = log_size(arena.d)
    out = arena.attack(mode, "service_flood", "5000")
    assert out.verdict == "done", out.output
    grew = log_size(arena.d) - before
    if grew > LOG_BUDGET:
        judge.succeeded(f"{out.text} on /run/socket/cml-service: cmld's log grew by {grew} bytes")
    judge.blocked(f"{out.text}: cmld's log grew by {grew} bytes")
    unaffected()


@modes()
def test_depletion_service_socket_connections(arena: Arena, mode: str, judge: Judge,
                                              unaffected: Callable[[], None]) -> None:
    """200 connections held on the service socket: cmld keeps a few, closes the rest, and keeps
    answering (its own and every other container's channel)."""
    states: dict[str, str] = {}

    def probe() -> None:
        time.sleep(0.5)
        states.update(control_status(arena.d.socket, timeout=10))

    t = threading.Thread(target=probe)
    t.start()
    out = arena.attack(mode, "service_conns", "200", "1500")
    t.join()
    assert out.verdict == "done", out.output
    held = _number(r"(\d+) still open", out.text)
    assert states.get(arena.victim) == "RUNNING", states
    if held > 16:
        judge.succeeded(out.text)
    judge.blocked(f"{out.text}; cmld answered during the flood")
    unaffected()


@modes()
def test_depletion_bpf_send_signal_kills_host_process(arena: Arena, mode: str, judge: Judge,
                                                      unaffected: Callable[[], None]) -> None:
    s = arena.sentinel
    assert s is not None
    out = arena.attack(mode, "bpf_kill", str(s.pid))
    time.sleep(0.2)
    if not s.alive():
        rc = s.proc.returncode
        arena.restore_sentinel()
        assert rc == -signal.SIGKILL, rc
        judge.succeeded(f"{out.text}: the host sentinel (pid {s.pid}) was killed by SIGKILL")
    judge(out)
    unaffected()


@modes()
@pytest.mark.req("OS 05")
def test_depletion_signal_host_process(arena: Arena, mode: str, judge: Judge, unaffected: Callable[[], None]) -> None:
    """kill(2) and pidfd_send_signal of the host sentinel by its host PID (SIGCONT: harmless, but
    the sentinel logs it), and kill(-1)."""
    s = arena.sentinel
    assert s is not None
    out = arena.attack(mode, "signal", str(s.pid))
    got = s.siglog.read_text()
    if got:
        arena.restore_sentinel()
        judge.succeeded(f"{out.text}: the host sentinel received {got.split()}")
    judge.blocked(out.text)
    unaffected()


@modes()
@pytest.mark.req("OS 05", "TSF Container Isolation")
def test_depletion_kill_every_process(arena: Arena, mode: str, judge: Judge, unaffected: Callable[[], None]) -> None:
    """kill(-1, SIGKILL) inside a container reaches its own processes only."""
    with arena.throwaway(mode) as name:
        out = arena.attack(name, "kill_all")
        unaffected()
        judge.blocked(f"{out.text or out.output.strip()} (exit {out.rc}); the host and the other containers are "
                      "unaffected")


@modes()
def test_depletion_reboot_syscall(arena: Arena, mode: str, judge: Judge, unaffected: Callable[[], None]) -> None:
    """reboot(RESTART) inside a container restarts that container, never the machine (the PID
    namespace is checked first: the attack only runs in one that is not the host's)."""
    with arena.throwaway(mode) as name:
        pid = arena.init_pid(arena.uuid(name))
        assert os.stat(f"/proc/{pid}/ns/pid").st_ino != os.stat("/proc/self/ns/pid").st_ino
        out = arena.attack(name, "reboot")
        deadline = time.monotonic() + 20
        state = ""
        while time.monotonic() < deadline:
            state = control_status(arena.d.socket).get(name, "")
            now = arena.init_pid_now(arena.uuid(name))
            if state == "RUNNING" and now is not None and now != pid:
                break
            time.sleep(0.1)
        unaffected()
        judge.blocked(f"reboot(RESTART): the container restarted itself (now {state}); "
                      f"{out.text or 'the session ended with its init'}")


def _kill_session_client(arena: Arena, d_socket: Path, name: str) -> str:
    proc = subprocess.Popen([str(BIN / "cml-control"), "-s", str(d_socket), "run", name, "nopty", "sleep", "60"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    proc.kill()
    proc.wait(10)
    return f"a `cml-control run {name} nopty sleep 60` client killed after 1 s"


@pytest.mark.parametrize("how", ["halt_helper_stopped", "run_client_killed"])
@modes()
def test_depletion_stuck_container(arena: Arena, mode: str, how: str, judge: Judge,
                                   unaffected: Callable[[], None]) -> None:
    """A container must always be stoppable and startable again, whatever its processes do:
    (1) it kills its service and SIGSTOPs the exec helper running `halt` (cmld's way to stop a
    container without a service) as soon as it appears; (2) a `cml-control run` client is
    killed mid-session. Then stop, start. On a cmld of its own: a container
    stuck for good would stay stuck in the arena's. Staging (1) races with the helper (the
    killer must stop `halt` before it signals init), so it is tried up to four times."""
    # The stop timeout must outlast cmld's 5 s wait for `halt`, or the container is killed
    # before the halt session is given up (and whether its helper is then reaped is a race).
    stop_timeout = 6 if how == "halt_helper_stopped" else 3
    with arena.dedicated(f"stuck-{how}-{mode}", "--stop-timeout", str(stop_timeout)) as d:
        name = arena.create("stuck", userns=(mode == "userns"), d=d)
        uuid = arena.uuid(name, d=d)
        attempt = 0
        while attempt < 4:
            attempt += 1
            assert arena.start_container(name, d=d) == "RUNNING"
            if how == "halt_helper_stopped":
                # 16 MB of unwritten data make the sync(2) that busybox halt does first take a while:
                # the window in which the killer catches it.
                setup = arena.exec(name, "sh", "-c", "kill -9 $(pidof cml-service cservice) 2>/dev/null; "
                                   f"(sleep 1; exec {ATK} killer STOP cmld.launcher.execute halt) "
                                   ">/dev/null 2>&1 </dev/null & "
                                   "dd if=/dev/zero of=/data/dirty bs=1M count=16 2>/dev/null", d=d)
                assert setup.rc == 0, setup.out + setup.err
                time.sleep(1.5)
                what = "service killed (where one runs), the exec helper of `halt` stopped (SIGSTOP) from inside"
            else:
                what = _kill_session_client(arena, d.socket, name)
            stopped = arena.stop_container(name, d=d, timeout=stop_timeout + 2)
            if stopped != "STOPPED" or how == "run_client_killed":
                break
        started = arena.start_container(name, d=d) if stopped == "STOPPED" else "not tried"
        if stopped != "STOPPED" or started != "RUNNING":
            state = control_status(d.socket).get(name)
            start = " ".join(arena.cli(d, "start", name).out.split())
            try:
                wipe = " ".join(arena.cli(d, "wipe", name, timeout=2).out.split())
            except subprocess.TimeoutExpired:
                wipe = "no answer in 2 s (cmld waits for the container to stop, then refuses)"
            stop_daemon(d, timeout=2)
            left = host_leftovers(arena.tmp / f"{d.socket.stem}-run", arena.tmp / f"{d.socket.stem}-netns", [uuid])
            judge.succeeded(f"{what} (attempt {attempt}); stop: {stopped}; state {state}; start: {start}; "
                            f"wipe: {wipe}; after cmld exited, left on the host: {len(left)} objects "
                            f"({', '.join(left[:2])}, ...)")
        judge.blocked(f"{what}; stop: {stopped} ({attempt} attempts); start again: {started}")
    unaffected()
