"""What every process of an ordinary container starts with, seen from inside and from the host, in
both user-namespace modes: the capability allow list in every set, the strict seccomp filter
without no_new_privs, a neutral OOM score, no controlling terminal, the container's resource
limits, user namespaces owned by the container's root with per-container limits, a PID
namespace no container process may mount a proc for, locked /proc masks, its own cgroup2 view,
and reboot(2) from inside ending or restarting only that container."""

from __future__ import annotations

import ctypes
import fcntl
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..conftest import Daemon, DaemonFactory, is_root
from .containers import create, run, start, state, uuid_of, wait_state
from .test_containers import init_pid, start_cmld

pytestmark = [pytest.mark.host, pytest.mark.skipif(not is_root(), reason="needs root")]

NS_GET_USERNS = 0xB701
NS_GET_OWNER_UID = 0xB704
SRC = Path(__file__).resolve().parents[2]


def out_of(d: Daemon, name: str, *argv: str) -> str:
    r = run(d, name, "nopty", *argv)
    assert r.rc == 0, (argv, r.rc, r.out, r.err)
    return r.out


def field(status: str, name: str) -> str:
    m = re.search(rf"^{name}:\s*(\S+)", status, re.M)
    assert m, (name, status)
    return m.group(1)


def stat_fields(stat: str) -> list[str]:
    """/proc/<pid>/stat after the command name: state, ppid, pgrp, session, tty_nr, ..."""
    return stat[stat.rindex(")") + 2:].split()


def owner_uid(ns_path: str) -> int:
    fd = os.open(ns_path, os.O_RDONLY)
    try:
        uid = ctypes.c_uint32()
        fcntl.ioctl(fd, NS_GET_OWNER_UID, uid)
        return uid.value
    finally:
        os.close(fd)


def owning_userns(ns_path: str) -> int:
    """The inode of the user namespace that owns the namespace at `ns_path`."""
    fd = os.open(ns_path, os.O_RDONLY)
    try:
        owner = fcntl.ioctl(fd, NS_GET_USERNS)
        try:
            return os.fstat(owner).st_ino
        finally:
            os.close(owner)
    finally:
        os.close(fd)


@pytest.mark.parametrize("userns", [True, False], ids=["userns", "no-userns"])
def test_container_processes_are_confined(cmld_factory: DaemonFactory, guestos_src: Path, userns: bool) -> None:
    from cmld.linux import CAP
    from cmld.modules.capabilities import kept_caps
    from cmld.modules.userns import NO_USERNS_MSGQUEUE, userns_limits

    d = start_cmld(cmld_factory, guestos_src)
    create(d, cmld_factory.tmp, "conf", userns=userns)
    assert start(d, "conf").rc == 0
    wait_state(d, "conf", "RUNNING")
    pid = init_pid(d, uuid_of(d, "conf"))

    kept = sum(1 << CAP[n] for n in kept_caps(userns=userns, c0=False, setup=False, allow_modules=False,
                                              allow_time=False))
    for who in ("1", "self"):
        status = out_of(d, "conf", "cat", f"/proc/{who}/status")
        for name in ("CapBnd", "CapEff", "CapPrm"):
            assert int(field(status, name), 16) == kept, (who, name)
        for name in ("CapInh", "CapAmb"):
            assert int(field(status, name), 16) == 0, (who, name)
        assert field(status, "Seccomp") == "2", who
        assert field(status, "NoNewPrivs") == "0", who  # setuid programs of the guest keep working
        assert out_of(d, "conf", "cat", f"/proc/{who}/oom_score_adj").strip() == "0", who
        stat = stat_fields(out_of(d, "conf", "cat", f"/proc/{who}/stat"))
        assert stat[4] == "0", (who, "tty_nr", stat)  # no controlling terminal
        limits = out_of(d, "conf", "cat", f"/proc/{who}/limits")
        assert re.search(r"Max realtime priority\s+0\s+0", limits), limits
        if not userns:
            assert re.search(rf"Max msgqueue size\s+{NO_USERNS_MSGQUEUE}\s+{NO_USERNS_MSGQUEUE}", limits), limits
    assert stat_fields(Path(f"/proc/{pid}/stat").read_text())[3] == str(pid)  # init leads its own session
    r = run(d, "conf", "nopty", "sh", "-c", "exec 3</dev/tty")
    assert r.rc != 0 and "No such device or address" in r.out + r.err, (r.out, r.err)

    # the PID namespace belongs to the host's user namespace: no process inside may mount a proc for it
    host_userns = os.stat("/proc/self/ns/user").st_ino
    assert owning_userns(f"/proc/{pid}/ns/pid") == host_userns
    r = run(d, "conf", "nopty", "sh", "-c", "mkdir -p /tmp/p && mount -t proc proc /tmp/p")
    assert r.rc != 0, r.out
    r = run(d, "conf", "nopty", "umount", "/proc/keys")
    assert r.rc != 0, r.out
    assert out_of(d, "conf", "cat", "/proc/keys") == ""
    if userns:
        uid_start = int(out_of(d, "conf", "cat", "/proc/self/uid_map").split()[1])
        # owned by the container's root: per-user resources are charged to it, not to host root
        assert owner_uid(f"/proc/{pid}/ns/user") == uid_start
        container_userns = os.stat(f"/proc/{pid}/ns/user").st_ino
        for ns in ("net", "uts", "ipc", "mnt", "cgroup"):
            assert owning_userns(f"/proc/{pid}/ns/{ns}") == container_userns, ns
        for name, value in userns_limits().items():
            assert out_of(d, "conf", "cat", f"/proc/sys/user/{name}").strip() == str(value), name
        # a cgroup2 mount shows the container's own processes only (on this host's unified hierarchy too)
        procs = out_of(d, "conf", "sh", "-c", "mkdir -p /tmp/cg && mount -t cgroup2 none /tmp/cg && "
                       "cat /tmp/cg/cgroup.procs; umount /tmp/cg").split()
        assert procs and "0" not in procs, procs
    else:
        assert owning_userns(f"/proc/{pid}/ns/net") == host_userns


@pytest.mark.parametrize("userns", [True, False], ids=["userns", "no-userns"])
def test_reboot_from_inside_ends_only_the_container(cmld_factory: DaemonFactory, guestos_src: Path,
                                                   userns: bool) -> None:
    """busybox reboot -f / poweroff -f call reboot(2) directly: the container holds no
    CAP_SYS_BOOT, cmld does the PID-namespace reboot for its root. Restart: a new init, RUNNING;
    power off: STOPPED. A non-root process of the container may not."""
    d = start_cmld(cmld_factory, guestos_src)
    create(d, cmld_factory.tmp, "rb", userns=userns)
    assert start(d, "rb").rc == 0
    wait_state(d, "rb", "RUNNING")
    uuid = uuid_of(d, "rb")
    first = init_pid(d, uuid)
    r = run(d, "rb", "nopty", "nsenter", "-S", "1000", "-G", "1000", "--", "sh", "-c", "id -u; reboot -f; echo rc=$?")
    assert r.out.split()[0] != "0" and "rc=0" not in r.out and "rc=" in r.out, r.out
    assert state(d, "rb") == "RUNNING" and init_pid(d, uuid) == first, r.out
    run(d, "rb", "nopty", "reboot", "-f")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (state(d, "rb") == "RUNNING" and init_pid(d, uuid) != first):
        time.sleep(0.1)
    assert state(d, "rb") == "RUNNING" and init_pid(d, uuid) != first, d.log_text()[-2000:]
    assert "reboot(2) from inside: restart" in d.log_text()
    run(d, "rb", "nopty", "poweroff", "-f")
    wait_state(d, "rb", "STOPPED")
    assert "reboot(2) from inside: power off" in d.log_text()


SESSION_PROBE = r"""
import ctypes, errno, os, sys
from cmld.launcher import confine
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
SESSION = ctypes.c_long(-3)
before = libc.syscall(250, 0, SESSION, 0)          # KEYCTL_GET_KEYRING_ID
key = libc.syscall(248, b"user", b"cml-probe-key", b"x", 1, SESSION)  # add_key
assert key > 0, os.strerror(ctypes.get_errno())
os.open("/dev/tty", os.O_RDWR)  # the terminal is ours before
r, w = os.pipe()
if os.fork() == 0:  # as the launcher's child and the exec helper: not a group leader
    confine.own_session()
    after = libc.syscall(250, 0, SESSION, 0)
    found = libc.syscall(250, 10, SESSION, b"user", b"cml-probe-key", 0)  # KEYCTL_SEARCH
    try:
        os.open("/dev/tty", os.O_RDWR)
        tty = "opened"
    except OSError as e:
        tty = errno.errorcode[e.errno]
    os.write(w, f"{before != after} {found < 0} {os.getsid(0) == os.getpid()} {tty}".encode())
    os._exit(0)
os.close(w)
print(os.read(r, 100).decode())
os.wait()
"""


def test_own_session_and_keyring() -> None:
    """The mechanism behind init and every exec session (`confine.own_session`), on a process that
    holds a key and a controlling terminal: afterwards its session keyring is a new one (the key
    is out of reach), it leads a session of its own and has no terminal."""
    master, slave = os.openpty()
    try:
        r = subprocess.run([sys.executable, "-c", SESSION_PROBE], stdin=slave, capture_output=True,
                           text=True, timeout=30, env=dict(os.environ, PYTHONPATH=str(SRC)),
                           start_new_session=False, preexec_fn=_take_terminal)
    finally:
        os.close(master)
        os.close(slave)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "True", "True", "ENXIO"], r.stdout


def _take_terminal() -> None:
    """In the probe before exec: a session with the pty (its stdin) as controlling terminal."""
    os.setsid()
    fcntl.ioctl(0, __import__("termios").TIOCSCTTY, 0)
