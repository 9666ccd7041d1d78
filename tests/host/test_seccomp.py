"""Seccomp user-notify emulation against the real kernel: a child process installs the container
filter, hands the listener fd to this process, which serves it with SeccompSupervisor in an asyncio
loop while the child makes the syscalls a container would.

The host clock is never changed: the time path is exercised only by refusals and by
clock_settime(CLOCK_MONOTONIC), which the supervisor rejects before anything is set.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cmld.seccomp.supervisor import SeccompSupervisor

pytestmark = [pytest.mark.host,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (filters, chroot, user namespaces)")]

SRC = Path(__file__).resolve().parents[2]
UID_OFFSET = 100000

HELPER = r'''
import ctypes, errno, json, os, socket, stat, sys

from cmld import linux
from cmld.seccomp.filter import FilterKind, install_filter

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
sock = socket.socket(fileno=int(sys.argv[1]))
scenario, root, work = sys.argv[2], sys.argv[3], sys.argv[4]
results = {}


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def attempt(name, fn):
    try:
        ret = fn()
        results[name] = "ok" if ret is None or ret >= 0 else errno.errorcode[ctypes.get_errno()]
    except OSError as e:
        results[name] = errno.errorcode[e.errno]


def libc_call(fn, *args):
    ret = fn(*args)
    return ret if ret >= 0 else -1


chr_ = stat.S_IFCHR
linux.unshare(linux.CLONE_NEWNS)
linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
dfd = os.open(work, os.O_RDONLY | os.O_DIRECTORY)
fd = install_filter(FilterKind(light=True))  # c0's: chroot and unshare below stay allowed
socket.send_fds(sock, [b"fd"], [fd])
os.close(fd)
assert sock.recv(1) == b"g"

if scenario == "main":
    os.chroot(root)
    os.chdir("/")
    os.umask(0)
    attempt("null2", lambda: os.mknod("/null2", chr_ | 0o666, os.makedev(1, 3)))
    os.umask(0o027)
    attempt("zero2", lambda: os.mknod("/zero2", chr_ | 0o666, os.makedev(1, 5)))
    os.umask(0)
    attempt("mem", lambda: os.mknod("/mem", chr_ | 0o600, os.makedev(1, 1)))
    attempt("loop9", lambda: os.mknod("/loop9", stat.S_IFBLK | 0o660, os.makedev(7, 9)))
    attempt("regular", lambda: os.mknod("/regular", stat.S_IFREG | 0o644))
    attempt("fifo", lambda: os.mknod("/fifo", stat.S_IFIFO | 0o644))
    attempt("evil_abs", lambda: os.mknod("/evil/null", chr_ | 0o666, os.makedev(1, 3)))
    attempt("evil_rel", lambda: os.mknod("/evil2/null", chr_ | 0o666, os.makedev(1, 3)))
    sub = os.open("/sub", os.O_RDONLY | os.O_DIRECTORY)
    attempt("dirfd", lambda: os.mknod("null3", chr_ | 0o666, os.makedev(1, 3), dir_fd=sub))
    attempt("dirfd_evil", lambda: os.mknod("evil/null", chr_ | 0o666, os.makedev(1, 3), dir_fd=sub))
    attempt("dirfd_outside_root", lambda: os.mknod("null6", chr_ | 0o666, os.makedev(1, 3), dir_fd=dfd))
    attempt("dirfd_outside_dotdot", lambda: os.mknod("../null7", chr_ | 0o666, os.makedev(1, 3), dir_fd=dfd))
    os.chdir("/sub")
    attempt("cwd_dotdot", lambda: os.mknod("../null4", chr_ | 0o666, os.makedev(1, 3)))
    attempt("exists", lambda: os.mknod("/null2", chr_ | 0o666, os.makedev(1, 3)))
    attempt("raw_mknod", lambda: libc_call(libc.syscall, 133, b"/rawnull", chr_ | 0o666, 0x103))
    attempt("bad_ptr", lambda: libc_call(libc.syscall, 133, ctypes.c_void_p(8), chr_ | 0o666, 0x103))
    ts = Timespec(1, 0)
    attempt("clock_monotonic", lambda: libc_call(libc.clock_settime, 1, ctypes.byref(ts)))
    timex = ctypes.create_string_buffer(208)  # modes = 0: a read, changes nothing even if run
    attempt("adjtimex", lambda: libc_call(libc.syscall, 159, timex))
    attempt("settimeofday", lambda: libc_call(libc.syscall, 164, None, None))
    linux.drop_from_all_sets([linux.CAP["MKNOD"]])
    attempt("no_cap_mknod", lambda: os.mknod("/null5", chr_ | 0o666, os.makedev(1, 3)))
elif scenario == "time":
    ts = Timespec(1, 0)
    attempt("clock_monotonic", lambda: libc_call(libc.clock_settime, 1, ctypes.byref(ts)))
    timex = ctypes.create_string_buffer(208)  # modes = 0: a read, changes nothing even if run
    attempt("adjtime_monotonic", lambda: libc_call(libc.syscall, 305, 1, timex))
elif scenario == "userns":
    linux.unshare(linux.CLONE_NEWUSER)
    sock.send(b"u")
    assert sock.recv(1) == b"m"
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    os.umask(0o022)
    attempt("userns_dirfd", lambda: os.mknod("null", chr_ | 0o666, os.makedev(1, 3), dir_fd=dfd))
    os.fchdir(dfd)
    attempt("userns_cwd", lambda: os.mknod("zero", chr_ | 0o620, os.makedev(1, 5)))
    attempt("userns_unmapped_dir", lambda: os.mknod("ro/null", chr_ | 0o666, os.makedev(1, 3)))
elif scenario == "interrupt":
    import signal
    signal.signal(signal.SIGUSR1, lambda *_: results.__setitem__("signalled", "yes"))
    os.umask(0o022)
    attempt("mknod", lambda: os.mknod("null", chr_ | 0o666, os.makedev(1, 3), dir_fd=dfd))
elif scenario == "x32":
    libc.syscall(0x40000000 | 39)  # x32 getpid
    results["survived"] = "yes"

print(json.dumps(results), flush=True)
'''


@dataclass
class Run:
    returncode: int
    results: dict[str, str]
    notifications: int
    asked: list[tuple[str, int, int]]


ALLOWED = {("c", 1, 3), ("c", 1, 5)}


def _policy(asked: list[tuple[str, int, int]]) -> Callable[[str, int, int], bool]:
    def allowed(kind: str, major: int, minor: int) -> bool:
        asked.append((kind, major, minor))
        return (kind, major, minor) in ALLOWED or (kind == "b" and major == 7)
    return allowed


async def _serve(tmp_path: Path, scenario: str, root: Path, work: Path, *, allow_system_time: bool = False,
                 uid_offset: int | None = None) -> Run:
    helper = tmp_path / "helper.py"
    helper.write_text(HELPER)
    ours, theirs = socket.socketpair()
    ours.settimeout(30)
    env = dict(os.environ, PYTHONPATH=str(SRC))
    proc = subprocess.Popen([sys.executable, str(helper), str(theirs.fileno()), scenario, str(root), str(work)],
                            pass_fds=[theirs.fileno()], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    theirs.close()
    asked: list[tuple[str, int, int]] = []
    sup: SeccompSupervisor | None = None
    try:
        _, fds, _, _ = await asyncio.to_thread(socket.recv_fds, ours, 16, 1)
        assert len(fds) == 1, proc.stderr.read() if proc.stderr else ""
        sup = SeccompSupervisor(fds[0], container_name="test", init_pid=proc.pid, is_device_allowed=_policy(asked),
                                allow_system_time=allow_system_time, uid_offset=uid_offset)
        sup.start(asyncio.get_running_loop())
        ours.send(b"g")
        if scenario == "userns":
            assert await asyncio.to_thread(ours.recv, 1) == b"u"
            for kind in ("uid_map", "gid_map"):
                Path(f"/proc/{proc.pid}/{kind}").write_text(f"0 {UID_OFFSET} 65536\n")
            ours.send(b"m")
        out, err = await asyncio.to_thread(proc.communicate, timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if sup is not None:
            sup.close()
        ours.close()
        helper.unlink()
    results = json.loads(out) if out.strip() else {}
    assert proc.returncode == 0 or not results, err.decode()
    return Run(proc.returncode, results, sup.notifications if sup else 0, asked)


@pytest.fixture
def dirs(tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    work = tmp_path / "work"
    for d in (root, root / "sub", outside, work):
        d.mkdir()
    try:
        yield root, outside, work
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(outside, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def _is_dev(path: Path, fmt: int, major: int, minor: int, mode: int, owner: tuple[int, int] = (0, 0)) -> None:
    st = path.lstat()
    assert stat.S_IFMT(st.st_mode) == fmt, path
    assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (major, minor), path
    assert stat.S_IMODE(st.st_mode) == mode, (path, oct(st.st_mode))
    assert (st.st_uid, st.st_gid) == owner, path


@pytest.mark.req("IAM 02")
def test_mknod_and_time_refusal(tmp_path: Path, dirs: tuple[Path, Path, Path]) -> None:
    root, outside, work = dirs
    (root / "evil").symlink_to(outside)  # absolute host path: must resolve inside root, not here
    (root / "evil2").symlink_to("../" * 20 + str(outside).lstrip("/"))
    (root / "sub" / "evil").symlink_to(outside)

    run = asyncio.run(_serve(tmp_path, "main", root, work))

    assert run.returncode == 0
    assert run.results == {
        "null2": "ok", "zero2": "ok", "mem": "EPERM", "loop9": "ok", "regular": "ok", "fifo": "ok",
        "evil_abs": "ENOENT", "evil_rel": "ENOENT", "dirfd": "ok", "dirfd_evil": "ENOENT", "cwd_dotdot": "ok",
        "dirfd_outside_root": "ok", "dirfd_outside_dotdot": "ok",
        "exists": "EEXIST", "raw_mknod": "ok", "bad_ptr": "EFAULT", "clock_monotonic": "EPERM", "adjtimex": "EPERM",
        "settimeofday": "EPERM", "no_cap_mknod": "EPERM",
    }
    _is_dev(root / "null2", stat.S_IFCHR, 1, 3, 0o666)
    _is_dev(root / "zero2", stat.S_IFCHR, 1, 5, 0o640)  # the caller's umask 027
    _is_dev(root / "loop9", stat.S_IFBLK, 7, 9, 0o660)
    _is_dev(root / "sub" / "null3", stat.S_IFCHR, 1, 3, 0o666)
    _is_dev(root / "null4", stat.S_IFCHR, 1, 3, 0o666)  # ../ from cwd /sub, resolved as the caller would
    _is_dev(root / "rawnull", stat.S_IFCHR, 1, 3, 0o666)  # mknod(2) itself, not glibc's mknodat
    # A dirfd the caller holds from outside its root: resolved beneath that directory only, so
    # `..` stays in it (the kernel would have gone up to tmp_path).
    _is_dev(work / "null6", stat.S_IFCHR, 1, 3, 0o666)
    _is_dev(work / "null7", stat.S_IFCHR, 1, 3, 0o666)
    assert not (tmp_path / "null7").exists()
    assert stat.S_ISREG((root / "regular").lstat().st_mode)
    assert stat.S_ISFIFO((root / "fifo").lstat().st_mode)
    assert not (root / "mem").exists()
    assert not (root / "null5").exists()
    assert list(outside.iterdir()) == []
    assert not list(root.glob("**/outside"))
    # regular file and FIFO never reached cmld; every device mknod and time call did
    assert run.notifications == 18
    assert ("c", 1, 1) in run.asked
    # the device policy is asked only once the path is read and the caller holds CAP_MKNOD
    assert len(run.asked) == 13


@pytest.mark.req("IAM 02")
def test_time_allowed_still_never_touches_other_clocks(tmp_path: Path, dirs: tuple[Path, Path, Path]) -> None:
    root, _, work = dirs
    run = asyncio.run(_serve(tmp_path, "time", root, work, allow_system_time=True))
    assert run.returncode == 0
    assert run.results == {"clock_monotonic": "EINVAL", "adjtime_monotonic": "EPERM"}
    assert run.notifications == 2


def test_user_namespace_ids(tmp_path: Path, dirs: tuple[Path, Path, Path]) -> None:
    root, _, work = dirs
    work.chmod(0o777)  # owned by host root, unmapped in the namespace: writable only through "other"
    (work / "ro").mkdir(mode=0o755)
    run = asyncio.run(_serve(tmp_path, "userns", root, work, uid_offset=UID_OFFSET))
    assert run.returncode == 0
    assert run.results == {"userns_dirfd": "ok", "userns_cwd": "ok", "userns_unmapped_dir": "EACCES"}
    # container root (uid 0 in the namespace) = host UID_OFFSET; the caller's umask 022 applies
    _is_dev(work / "null", stat.S_IFCHR, 1, 3, 0o644, (UID_OFFSET, UID_OFFSET))
    _is_dev(work / "zero", stat.S_IFCHR, 1, 5, 0o600, (UID_OFFSET, UID_OFFSET))
    assert list((work / "ro").iterdir()) == []


def test_x32_syscall_kills(tmp_path: Path, dirs: tuple[Path, Path, Path]) -> None:
    root, _, work = dirs
    run = asyncio.run(_serve(tmp_path, "x32", root, work))
    assert run.returncode == -signal.SIGSYS
    assert run.results == {}
    assert run.notifications == 0


def _wait_pending(fd: int) -> None:
    import select

    poller = select.poll()
    poller.register(fd, select.POLLIN)
    assert poller.poll(10_000), "no notification within 10 s"


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGKILL])
def test_caller_gone_between_receive_and_response(tmp_path: Path, dirs: tuple[Path, Path, Path],
                                                  sig: int) -> None:
    """A notification whose caller was interrupted (the syscall restarts: a new notification) or
    killed gets no answer and causes no action; the supervisor keeps serving."""
    from cmld.seccomp import notify
    from cmld.seccomp.notify import CallerGone

    root, _, work = dirs
    helper = tmp_path / "helper.py"
    helper.write_text(HELPER)
    ours, theirs = socket.socketpair()
    ours.settimeout(30)
    proc = subprocess.Popen([sys.executable, str(helper), str(theirs.fileno()), "interrupt", str(root), str(work)],
                            pass_fds=[theirs.fileno()], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=str(SRC)))
    theirs.close()
    asked: list[tuple[str, int, int]] = []
    sup: SeccompSupervisor | None = None

    async def main() -> tuple[bytes, bytes]:
        nonlocal sup
        _, fds, _, _ = socket.recv_fds(ours, 16, 1)
        sup = SeccompSupervisor(fds[0], container_name="test", init_pid=proc.pid, is_device_allowed=_policy(asked),
                                allow_system_time=False, uid_offset=None)
        ours.send(b"g")
        _wait_pending(fds[0])
        first = notify.recv(fds[0])
        assert first.pid == proc.pid
        os.kill(proc.pid, sig)
        if sig == signal.SIGKILL:
            await asyncio.to_thread(proc.wait, 30)
        for _ in range(500):
            if not notify.id_valid(fds[0], first.id):
                break
            await asyncio.sleep(0.01)
        with pytest.raises(CallerGone):
            sup.handle(first)
        with pytest.raises(OSError) as e:
            notify.send(fds[0], first.id, notify.success(0))
        assert e.value.errno == errno.ENOENT
        sup.start(asyncio.get_running_loop())
        return await asyncio.to_thread(proc.communicate, timeout=60)

    try:
        out, err = asyncio.run(main())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if sup is not None:
            sup.close()
        ours.close()
        helper.unlink()
    assert asked == ([("c", 1, 3)] if sig == signal.SIGUSR1 else [])
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
        assert not (work / "null").exists()
        return
    assert proc.returncode == 0, err.decode()
    assert json.loads(out) == {"signalled": "yes", "mknod": "ok"}
    assert sup is not None and sup.notifications == 1  # the restarted syscall, through the loop
    _is_dev(work / "null", stat.S_IFCHR, 1, 3, 0o644)
