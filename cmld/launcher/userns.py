"""The container's user namespace and the namespaces it owns, made before the container exists.

A short-lived helper child creates them: it takes the container root's host UID as its
effective UID (keeping its capabilities: SECBIT_NO_SETUID_FIXUP), so the user namespace is
*owned* by that UID and not by host root. The kernel charges everything the container's users
hold of the per-user resources (inotify instances and watches, message-queue bytes, user
namespaces...) to the namespace's owner in the parent namespace: with a per-container owner it
is that container's own account, never host root's. Inside the new namespace the helper sets the
container's per-user limits (`/proc/sys/user/*` of that namespace), then creates the network,
UTS and IPC namespaces, which the new user namespace owns. The launcher (root on the
host) writes the ID maps and keeps an fd to each namespace; the idmapped mounts and the
container's first process use them.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

from cmld import linux

USER_LIMITS_DIR = "/proc/sys/user"
_NS_FILES = {linux.CLONE_NEWNET: "net", linux.CLONE_NEWUTS: "uts", linux.CLONE_NEWIPC: "ipc"}


@dataclass
class Namespaces:
    """fds of the namespaces the helper made (close-on-exec), by CLONE_NEW* flag."""

    user: int
    owned: dict[int, int] = field(default_factory=dict)

    def join_owned(self) -> None:
        """Enter the owned namespaces."""
        for flag, fd in self.owned.items():
            linux.setns(fd, flag)

    def close_owned(self) -> None:
        for fd in self.owned.values():
            os.close(fd)
        self.owned.clear()


def _helper(uid_start: int, flags: int, limits: dict[str, int], ready: int, release: int) -> None:
    """In the forked helper: become the namespace owner, unshare, set limits, report, wait."""
    linux.prctl(linux.PR_SET_SECUREBITS, linux.SECBIT_NO_SETUID_FIXUP)
    os.setresgid(0, uid_start, 0)
    os.setresuid(0, uid_start, 0)
    linux.unshare(linux.CLONE_NEWUSER)
    for name, value in limits.items():  # the sysctl set /proc shows is the one of our (new) namespace
        with open(os.path.join(USER_LIMITS_DIR, name), "w") as f:
            f.write(str(value))
    if flags:
        linux.unshare(flags)
    os.write(ready, b"1")
    os.read(release, 1)


def create(uid_start: int, size: int, *, flags: int = 0, limits: dict[str, int] | None = None) -> Namespaces:
    """A user namespace mapping container IDs 0..size-1 to host uid_start..; `flags` are further
    CLONE_NEW* namespaces (NET, UTS, IPC) to make inside it. Raises OSError with what failed."""
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    ready_r, ready_w = os.pipe()
    release_r, release_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(ready_r)
            os.close(release_w)
            os.close(err_r)
            _helper(uid_start, flags, limits or {}, ready_w, release_r)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.write(err_w, str(e).encode()[:1000])
            code = 1
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(release_r)
    os.close(err_w)
    fds: list[int] = []
    try:
        if os.read(ready_r, 1) != b"1":
            why = os.read(err_r, 1000).decode(errors="replace")
            raise OSError(f"user namespace helper: {why or 'failed'}")
        mapping = f"0 {uid_start} {size}\n".encode()
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{pid}/{name}", "wb") as f:
                f.write(mapping)
        user = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        fds.append(user)
        ns = Namespaces(user)
        for flag, name in _NS_FILES.items():
            if flags & flag:
                ns.owned[flag] = os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
                fds.append(ns.owned[flag])
        fds.clear()
        return ns
    finally:
        for fd in fds:
            os.close(fd)
        os.close(release_w)
        os.close(ready_r)
        os.close(err_r)
        os.waitpid(pid, 0)
