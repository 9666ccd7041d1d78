"""The inotify budget of a container without a user namespace against the real kernel: the broker
process with a small budget (instances and watches charged to its UID, EMFILE and ENOSPC past the
budget, host root unaffected), and the whole path: a process under the strict filter of such a
container, whose inotify_init/inotify_init1 calls cmld's supervisor answers with instances from
the broker, installed by SECCOMP_IOCTL_NOTIF_ADDFD with the caller's flags."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from cmld.containers import uid_offsets
from cmld.containers.uid_offsets import uid_start
from cmld.seccomp.inotify_broker import InotifyBroker
from cmld.seccomp.supervisor import SeccompSupervisor

from ..conftest import DaemonFactory, cli
from .containers import create, install_guestos, run, start, uuid_of, wait_state

pytestmark = [pytest.mark.host,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (seccomp filters, user namespaces)")]

SRC = Path(__file__).resolve().parents[2]
TEST_UID = 3_999_000 + os.getpid() % 1000  # far above every container range cmld hands out in tests
IN_MODIFY = 0x2
libc = ctypes.CDLL(None, use_errno=True)


def _run(coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(coro())


def _root_can_inotify() -> bool:
    fd = libc.inotify_init1(os.O_CLOEXEC)
    if fd < 0:
        return False
    os.close(fd)
    return True


def test_broker_budget_of_instances_and_watches(tmp_path: Path) -> None:
    async def body() -> None:
        broker = await InotifyBroker.start(TEST_UID, 3, 5)
        fds: list[int] = []
        try:
            status = Path(f"/proc/{broker.pid}/status").read_text()
            uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
            assert uids == [str(TEST_UID)] * 4  # not root: nothing is charged to host root
            caps = next(line for line in status.splitlines() if line.startswith("CapEff:")).split()[1]
            assert int(caps, 16) == 0
            for i in range(3):
                fds.append(broker.create(nonblock=i == 1))
            assert [os.get_blocking(fd) for fd in fds] == [True, False, True]
            with pytest.raises(OSError) as e:
                broker.create(nonblock=False)
            assert e.value.errno == errno.EMFILE
            assert _root_can_inotify()
            for i in range(5):
                (tmp_path / f"f{i}").touch()
                assert libc.inotify_add_watch(fds[0], str(tmp_path / f"f{i}").encode(), IN_MODIFY) >= 0
            (tmp_path / "f5").touch()
            assert libc.inotify_add_watch(fds[1], str(tmp_path / "f5").encode(), IN_MODIFY) < 0
            assert ctypes.get_errno() == errno.ENOSPC  # the watch budget spans the container's instances
            os.close(fds.pop())
            fds.append(broker.create(nonblock=False))  # a closed instance gives its place back
            (tmp_path / "f0").write_text("x")
            assert len(os.read(fds[0], 4096)) >= 16  # a working instance: the modify event
        finally:
            for fd in fds:
                os.close(fd)
            await broker.close()
        assert broker.returncode == 0  # it left when its socket closed
        with pytest.raises(OSError) as e:
            broker.create(nonblock=False)
        assert e.value.errno == errno.EIO
    _run(body)


def test_broker_refuses_bad_arguments_with_its_message() -> None:
    async def body() -> None:
        with pytest.raises(OSError, match="UID must be > 0"):
            await InotifyBroker.start(0, 3, 5)  # host root's own account: refused
        with pytest.raises(OSError, match="budgets >= 1"):
            await InotifyBroker.start(TEST_UID, 0, 5)
    _run(body)


def test_broker_answers_malformed_requests_and_keeps_serving() -> None:
    async def body() -> None:
        broker = await InotifyBroker.start(TEST_UID, 2, 5)
        try:
            sock = broker._sock
            for junk in (b"x", b"\xff" * 8 + b"more", (1).to_bytes(4, "little") + (0x80000).to_bytes(4, "little")):
                sock.send(junk)
                reply = sock.recv(64)
                assert int.from_bytes(reply[4:8], "little", signed=True) == errno.EINVAL, junk
            fd = broker.create(nonblock=False)
            os.close(fd)
        finally:
            await broker.close()
    _run(body)


HELPER = r'''
import ctypes, errno, fcntl, json, os, socket, sys

from cmld.modules.capabilities import kept_caps
from cmld.seccomp.filter import FilterKind, install_filter

libc = ctypes.CDLL(None, use_errno=True)
sock = socket.socket(fileno=int(sys.argv[1]))
work = sys.argv[2]
kept = kept_caps(userns=False, c0=False, setup=False, allow_modules=False, allow_time=False)
fd = install_filter(FilterKind(kept=frozenset(kept), inotify_broker=True))
socket.send_fds(sock, [b"fd"], [fd])
os.close(fd)
assert sock.recv(1) == b"g"
out = {}


def err():
    return errno.errorcode[ctypes.get_errno()]


a = libc.inotify_init1(os.O_CLOEXEC | os.O_NONBLOCK)
out["cloexec"] = bool(fcntl.fcntl(a, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)
out["nonblock"] = not os.get_blocking(a)
b = libc.syscall(253)  # inotify_init
out["plain_cloexec"] = bool(fcntl.fcntl(b, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)
out["plain_nonblock"] = not os.get_blocking(b)
out["link"] = os.readlink(f"/proc/self/fd/{a}")
out["einval"] = err() if libc.inotify_init1(0x10) < 0 else "made"
wd = libc.inotify_add_watch(a, work.encode(), 0x100)  # IN_CREATE
open(os.path.join(work, "new"), "w").close()
out["event"] = len(os.read(a, 4096)) >= 16 if wd >= 0 else err()
held = [a, b]
while True:
    f = libc.inotify_init1(os.O_CLOEXEC)
    if f < 0:
        out["then"] = err()
        break
    held.append(f)
out["held"] = len(held)
os.close(held.pop())
out["again"] = libc.inotify_init1(0) >= 0
print(json.dumps(out), flush=True)
'''


def test_container_inotify_through_the_supervisor(tmp_path: Path) -> None:
    """A process under a no-userns container's filter: its instances come from the broker, with
    its flags, a working fd, EINVAL for bad flags, and EMFILE once its budget of 4 is held."""
    helper = tmp_path / "helper.py"
    helper.write_text(HELPER)
    work = tmp_path / "work"
    work.mkdir()

    async def body() -> None:
        broker = await InotifyBroker.start(TEST_UID, 4, 50)
        ours, theirs = socket.socketpair()
        ours.settimeout(30)
        proc = subprocess.Popen([sys.executable, str(helper), str(theirs.fileno()), str(work)],
                                pass_fds=[theirs.fileno()], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=dict(os.environ, PYTHONPATH=str(SRC)))
        theirs.close()
        sup: SeccompSupervisor | None = None
        try:
            _, fds, _, _ = await asyncio.to_thread(socket.recv_fds, ours, 16, 1)
            assert len(fds) == 1, proc.stderr.read() if proc.stderr else ""
            sup = SeccompSupervisor(fds[0], container_name="test", init_pid=proc.pid,
                                    is_device_allowed=lambda *_: False, allow_system_time=False, uid_offset=None,
                                    inotify_broker=broker)
            sup.start(asyncio.get_running_loop())
            ours.send(b"g")
            out, err = await asyncio.to_thread(proc.communicate, timeout=60)
            assert proc.returncode == 0, err.decode()
            result = json.loads(out)
            assert result == {"cloexec": True, "nonblock": True, "plain_cloexec": False, "plain_nonblock": False,
                              "link": "anon_inode:inotify", "einval": "EINVAL", "event": True, "held": 4,
                              "then": "EMFILE", "again": True}, result
            assert sup.notifications == 7  # 2 + the refused flags + 3 (the fourth made, one refused) + again
            assert _root_can_inotify()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if sup is not None:
                sup.close()
            ours.close()
            await broker.close()
    _run(body)


def _brokers_of(pid: int) -> dict[int, int]:
    """{broker pid: its UID} among the children of `pid`."""
    found = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            status = (p / "status").read_text()
            cmdline = (p / "cmdline").read_bytes()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields["PPid"]) == pid and b"cmld.launcher.inotify_broker" in cmdline:
            found[int(p.name)] = int(fields["Uid"].split()[1])
    return found


def test_cmld_runs_a_broker_per_container_without_userns(cmld_factory: DaemonFactory, guestos_src: Path) -> None:
    """Real cmld: a container without a user namespace gets a broker running as its reserved UID
    (the base of the range in its `.uid` file), one with a user namespace none; the broker ends
    with the container and a restart gets a new one; sessions in the container keep working."""
    base = cmld_factory.tmp / "cmld-base"
    base.mkdir(exist_ok=True)
    install_guestos(guestos_src, base)
    d = cmld_factory.start("--stop-timeout", "10", base=base)
    create(d, cmld_factory.tmp, "plain", ram_limit=64, userns=False)
    create(d, cmld_factory.tmp, "mapped", ram_limit=64, userns=True)
    for name in ("plain", "mapped"):
        assert start(d, name).rc == 0
        wait_state(d, name, "RUNNING")
    brokers = _brokers_of(d.proc.pid)
    offsets = {p.stem: uid_offsets.read(p) for p in base.rglob("*.uid")}
    plain, mapped = uuid_of(d, "plain"), uuid_of(d, "mapped")
    assert set(offsets) == {plain, mapped}, offsets
    assert list(brokers.values()) == [uid_start(offsets[plain])], (brokers, offsets)
    assert run(d, "plain", "nopty", "true").rc == 0
    assert _root_can_inotify()
    assert cli(d.socket, "stop", "plain", timeout=60).rc == 0
    wait_state(d, "plain", "STOPPED")
    assert not _brokers_of(d.proc.pid)
    assert start(d, "plain").rc == 0
    wait_state(d, "plain", "RUNNING")
    again = _brokers_of(d.proc.pid)
    assert list(again.values()) == [uid_start(offsets[plain])] and set(again) != set(brokers)


def test_broker_killed_midway_fails_cleanly() -> None:
    """A broker that dies (OOM killer, say): the next instance is refused with EIO (the
    supervisor answers ENOMEM), close still reaps it, and nothing is left."""
    async def body() -> None:
        broker = await InotifyBroker.start(TEST_UID, 2, 5)
        try:
            os.close(broker.create(nonblock=False))
            os.kill(broker.pid, 9)
            with pytest.raises(OSError) as e:
                broker.create(nonblock=False)
            assert e.value.errno == errno.EIO
        finally:
            await broker.close()
        assert broker.returncode == -9
        assert not Path(f"/proc/{broker.pid}").exists() or "Z" not in Path(f"/proc/{broker.pid}/stat").read_text()
    _run(body)


def test_broker_start_cancelled_leaves_nothing_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A container start aborted while its broker starts: the broker is killed, not left behind.
    The "broker" here never reports ready (a shell loop in its place), so the cancel always comes
    while start() waits."""
    never_ready = tmp_path / "never-ready"
    never_ready.write_text("#!/bin/sh\nwhile :; do sleep 1; done\n")
    never_ready.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(never_ready))

    async def body() -> None:
        before = set(_brokers_of(os.getpid()))
        task = asyncio.ensure_future(InotifyBroker.start(TEST_UID, 2, 5))
        new: set[int] = set()
        for _ in range(500):
            await asyncio.sleep(0.01)
            new = set(_brokers_of(os.getpid())) - before
            if new:
                break
        assert len(new) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        pid = new.pop()
        for _ in range(500):  # killed: a zombie, or reaped already (by its Popen object when collected)
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                break
            if state == "Z":
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)  # cmld's reaper does this there
                break
            await asyncio.sleep(0.01)
        else:
            os.kill(pid, 9)  # the test's own child: leave nothing behind, then fail
            os.waitpid(pid, 0)
            raise AssertionError(f"the half-started broker {pid} still runs")
    _run(body)
