"""`python -m cmld.launcher.execute FD`: run one command inside a running container.

The request (JSON) is read from FD, a memfd cmld filled: nothing of it (host PIDs, cgroup
paths) is on the command line, which every process of the container could read in /proc. The
helper is not dumpable, so its environment, memory map and binary stay out of the container's
reach too.

Joins every namespace of the container's init (through a pidfd, all at once) and, in the
process it forks into the container's PID namespace, the container's cgroups;
becomes the container's root, starts a session and session keyring of its own with a neutral
OOM score and the container's limits, drops the capabilities cmld computed, loads the filter cmld
compiled, and runs the command, on a PTY of the container's own devpts or with plain pipes to
cmld. The exit status goes to the status fd named in the request as "exit N" or "signal N".
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import socket
import sys
import termios
from typing import Any

from cmld import linux
from cmld.launcher import confine

NAMESPACES = (("user", linux.CLONE_NEWUSER), ("mnt", linux.CLONE_NEWNS), ("pid", linux.CLONE_NEWPID),
              ("uts", linux.CLONE_NEWUTS), ("ipc", linux.CLONE_NEWIPC), ("net", linux.CLONE_NEWNET),
              ("cgroup", linux.CLONE_NEWCGROUP), ("time", linux.CLONE_NEWTIME))


def _differs(pid: int, ns: str) -> bool:
    try:
        return os.stat(f"/proc/{pid}/ns/{ns}").st_ino != os.stat(f"/proc/self/ns/{ns}").st_ino
    except FileNotFoundError:
        return False


def _install_seccomp(req: dict[str, object]) -> None:
    """The container's filter for the session too; its listener goes to cmld's supervisor."""
    fd = confine.load_seccomp(str(req["seccomp_bpf"]))
    with socket.socket(fileno=int(req["seccomp_sock"])) as s:  # type: ignore[call-overload]
        socket.send_fds(s, [b"s"], [fd])
    os.close(fd)


def read_request(fd: int) -> dict[str, Any]:
    with os.fdopen(fd, "rb") as f:
        req = json.loads(f.read())
    if not isinstance(req, dict):
        raise ValueError("the exec request is not an object")
    return req


def open_cgroups(cgroup_procs: list[str]) -> list[int]:
    """The container's cgroup.procs files, opened now (on the host's file system, as root of the
    host: the kernel checks a migration against the opener's credentials and cgroup namespace)
    and written later by the process that enters the container's PID namespace, so that no
    process outside it (this helper) is ever in the container's groups: its cgroup2 view would
    show it (as pid 0)."""
    return [os.open(procs, os.O_WRONLY | os.O_CLOEXEC) for procs in cgroup_procs]


def enter_cgroups(fds: list[int]) -> None:
    for fd in fds:
        os.write(fd, b"0")  # "0": the writing process
        os.close(fd)


def join(pid: int, userns: bool, cap_drop: list[int]) -> None:
    pidfd = os.pidfd_open(pid)
    flags = 0
    for ns, flag in NAMESPACES:
        if _differs(pid, ns):
            flags |= flag
    linux.setns(pidfd, flags)
    os.close(pidfd)
    if userns:
        os.setgroups([])
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    linux.prctl(linux.PR_SET_DUMPABLE, 0)  # the uid change reset it: set it again, for both modes alike
    confine.own_session()
    confine.drop_bounding(cap_drop)
    os.chdir("/")


def _status(st: int) -> str:
    if os.WIFSIGNALED(st):
        return f"signal {os.WTERMSIG(st)}"
    return f"exit {os.waitstatus_to_exitcode(st)}"


def _exec(argv: list[str], env: dict[str, str]) -> None:
    for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    try:
        os.execvpe(argv[0], argv, env)  # noqa: S606 - exec without a shell is the point
    except OSError as e:
        os.write(2, f"{argv[0]}: {e.strerror}\n".encode())
        os._exit(127)


def run_pty(argv: list[str], env: dict[str, str]) -> str:
    master, slave = os.openpty()  # opens the container's /dev/ptmx: a pty of its own devpts
    pid = os.fork()
    if pid == 0:
        os.close(master)
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        for fd in (0, 1, 2):
            os.dup2(slave, fd)
        if slave > 2:
            os.close(slave)
        linux.close_range(3)
        _exec(argv, env)
    os.close(slave)
    stdin_open = True
    while True:
        fds = [master] + ([0] if stdin_open else [])
        ready, _, _ = select.select(fds, [], [])
        if 0 in ready:
            data = os.read(0, 4096)
            if data:
                os.write(master, data)
            else:
                stdin_open = False
                os.write(master, b"\x04")  # EOF for a canonical-mode reader
        if master in ready:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the last holder of the slave side is gone
                data = b""
            if not data:
                break
            os.write(1, data)
    _, st = os.waitpid(pid, 0)
    return _status(st)


def run_pipes(argv: list[str], env: dict[str, str]) -> str:
    pid = os.fork()
    if pid == 0:
        linux.close_range(3)
        _exec(argv, env)
    os.close(0)
    _, st = os.waitpid(pid, 0)
    return _status(st)


def main() -> None:
    linux.prctl(linux.PR_SET_DUMPABLE, 0)
    linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    req = read_request(int(sys.argv[1]))
    status_fd = int(req["status_fd"])
    os.set_inheritable(status_fd, False)
    try:
        # Through the host's /proc, before joining: the container's /proc has no entry for a
        # process outside its PID namespace.
        confine.neutral_oom_score()
        confine.apply_rlimits(dict(req.get("rlimits") or {}))
        cgroups = open_cgroups(list(req["cgroup_procs"]))
        join(int(req["pid"]), bool(req["userns"]), list(req["cap_drop"]))
        if req.get("seccomp_sock") is not None:
            _install_seccomp(req)
        confine.drop_held(list(req["cap_drop"]))
    except OSError as e:
        os.write(status_fd, f"error joining the container: {e}".encode())
        os._exit(1)
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
           "TERM": req.get("term") or "xterm"}
    # Fork once more so the command is inside the container's PID namespace.
    pid = os.fork()
    if pid == 0:
        try:
            enter_cgroups(cgroups)
        except OSError as e:
            os.write(status_fd, f"error joining the container's cgroups: {e}".encode())
            os._exit(1)
        status = run_pty(req["argv"], env) if req["pty"] else run_pipes(req["argv"], env)
        os.write(status_fd, status.encode())
        os._exit(0)
    for fd in cgroups:
        os.close(fd)
    os.close(0)
    os.close(1)
    os.close(2)
    os.close(status_fd)
    _, st = os.waitpid(pid, 0)
    os._exit(os.waitstatus_to_exitcode(st) & 0xFF)


if __name__ == "__main__":
    main()
