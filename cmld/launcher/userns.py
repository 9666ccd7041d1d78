"""A user namespace with the container's ID mapping, made before the container exists.

The idmapped mounts of the root need the namespace's fd while the launcher still has host
privileges, so a short-lived helper child creates the namespace, the launcher (root on the
host) writes its maps, keeps an fd to it, and lets the helper go.
"""

from __future__ import annotations

import os

from cmld import linux


def create(uid_start: int, size: int) -> int:
    r, w = os.pipe()
    r2, w2 = os.pipe()
    pid = os.fork()
    if pid == 0:  # helper: unshare, tell the parent, wait until it is done with us
        try:
            os.close(w)
            os.close(r2)
            linux.unshare(linux.CLONE_NEWUSER)
            os.write(w2, b"1")
            os.read(r, 1)
        finally:
            os._exit(0)
    os.close(r)
    os.close(w2)
    try:
        if os.read(r2, 1) != b"1":
            raise OSError("user namespace helper failed to unshare")
        mapping = f"0 {uid_start} {size}\n".encode()
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{pid}/{name}", "wb") as f:
                f.write(mapping)
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(w)
        os.close(r2)
        os.waitpid(pid, 0)


def become_root(userns_fd: int) -> None:
    """Enter the container's user namespace as its root (host uid `uid_start`)."""
    linux.setns(userns_fd, linux.CLONE_NEWUSER)
    os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
